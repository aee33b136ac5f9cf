//! The harnesses of the fuzz targets in `fuzz_targets/`, one module each, with a `run(data)`
//! that feeds `data` to the core's decoders or machines and asserts what must hold. They are
//! plain Rust over `rivulet-core`, so `core/tests/{wire,session,model,hat_roundtrip,kelvin,streamsea,chaski,files}.rs` include
//! the same files by path and run them on stable with proptest and the seed corpora
//! (docs/RELIABILITY.md, "Fuzzing"). `seeds.rs` (a test of this crate) writes the seed corpora in `corpus/`.
//!
//! `forward`, `federation` and `metrics_http` fuzz three decoders of the gateway, which
//! `gateway/tests/fuzz.rs` runs on stable the same way.

pub mod chaski;
pub mod corpus;
pub mod event_types;
pub mod federation;
pub mod files;
pub mod forward;
pub mod hat;
pub mod input;
pub mod kelvin;
pub mod metrics_http;
pub mod packet;
pub mod packetstream;
pub mod serial_frames;
pub mod session_messages;
pub mod stream_frames;
pub mod streamsea;

/// The gateway's decoders of network input that the targets `forward`, `federation` and
/// `metrics_http` fuzz:
/// the gateway's own source files, compiled here by `#[path]`, so that this crate does not depend
/// on the whole gateway (redb, tokio, rustls: a slow sanitizer build). Those files use only std,
/// serde, postcard and rivulet-core; the gateway's tests reach the same modules through `rivulet_gateway`.
#[path = "../../gateway/src"]
pub mod gateway {
    #[path = "federation/wire.rs"]
    pub mod federation;
    #[path = "frontend/native/forward.rs"]
    pub mod forward;
    #[path = "metrics/http.rs"]
    pub mod http;
}
