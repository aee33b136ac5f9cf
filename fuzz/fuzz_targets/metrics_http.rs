#![no_main]
//! See `rivulet_fuzz::metrics_http` for what this target feeds and asserts.

libfuzzer_sys::fuzz_target!(|data: &[u8]| rivulet_fuzz::metrics_http::run(data));
