//! The harnesses of the fuzz targets in `fuzz_targets/`, one module each, with a `run(data)`
//! that feeds `data` to the core's decoders or machines and asserts what must hold. They are
//! plain Rust over `rivulet-core`, so `core/tests/{wire,session,model}.rs` include the same files
//! by path and run them on stable with proptest and the seed corpora (docs/RELIABILITY.md,
//! "Fuzzing"). `seeds.rs` (a test of this crate) writes the seed corpora in `corpus/`.

pub mod corpus;
pub mod event_types;
pub mod input;
pub mod packet;
pub mod packetstream;
pub mod serial_frames;
pub mod session_messages;
pub mod stream_frames;
