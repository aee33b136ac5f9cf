#![no_main]
//! See `rivulet_fuzz::session_messages` for what this target feeds and asserts.

libfuzzer_sys::fuzz_target!(|data: &[u8]| rivulet_fuzz::session_messages::run(data));
