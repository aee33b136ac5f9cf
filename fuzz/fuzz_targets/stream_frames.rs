#![no_main]
//! See `rivulet_fuzz::stream_frames` for what this target feeds and asserts.

libfuzzer_sys::fuzz_target!(|data: &[u8]| rivulet_fuzz::stream_frames::run(data));
