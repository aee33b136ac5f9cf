#![no_main]
//! See `rivulet_fuzz::chaski` for what this target feeds and asserts.

libfuzzer_sys::fuzz_target!(|data: &[u8]| rivulet_fuzz::chaski::run(data));
