#![no_main]
//! See `rivulet_fuzz::files` for what this target feeds and asserts.

libfuzzer_sys::fuzz_target!(|data: &[u8]| rivulet_fuzz::files::run(data));
