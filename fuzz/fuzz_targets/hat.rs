#![no_main]
//! See `rivulet_fuzz::hat` for what this target feeds and asserts.

libfuzzer_sys::fuzz_target!(|data: &[u8]| rivulet_fuzz::hat::run(data));
