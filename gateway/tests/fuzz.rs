//! The gateway's fuzz targets on stable (fuzz/, docs/RELIABILITY.md "Fuzzing"): the harnesses of
//! `forward` (the `RQ_FORWARD` payload), `federation` (a peer gateway's messages) and
//! `metrics_http` (the `--metrics` request head), the
//! same files `cargo +nightly fuzz` builds, run here on the committed seed corpora, on random
//! input and on seeds with random edits. The fuzz crate compiles the gateway's decoder files by
//! path; here the harnesses reach the same modules through this crate.

use proptest::prelude::*;

#[allow(dead_code)]
#[path = "../../fuzz/src"]
mod fuzz {
    pub mod corpus;
    pub mod federation;
    pub mod forward;
    pub mod metrics_http;

    /// What the harnesses call `super::gateway`.
    pub mod gateway {
        pub use rivulet_gateway::federation::wire as federation;
        pub use rivulet_gateway::frontend::native::forward;
        pub use rivulet_gateway::metrics::http;
    }
}

/// Edits for [`fuzz::corpus::mutate`]: (position, operation, byte).
fn fuzz_edits() -> impl Strategy<Value = Vec<(usize, u8, u8)>> {
    proptest::collection::vec((any::<usize>(), any::<u8>(), any::<u8>()), 0..6)
}

#[test]
fn fuzz_forward_seed_corpus() {
    for seed in fuzz::corpus::seeds("forward") {
        fuzz::forward::run(&seed);
    }
}

#[test]
fn fuzz_federation_seed_corpus() {
    for seed in fuzz::corpus::seeds("federation") {
        fuzz::federation::run(&seed);
    }
}

#[test]
fn fuzz_metrics_http_seed_corpus() {
    for seed in fuzz::corpus::seeds("metrics_http") {
        fuzz::metrics_http::run(&seed);
    }
}

/// A request head made of request-line-like words, header-like lines and line ends, with a byte
/// that is not UTF-8 now and then: closer to a head than random bytes are.
fn head_like() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        Just(b"GET".to_vec()),
        Just(b" /metrics".to_vec()),
        Just(b" HTTP/1.1".to_vec()),
        Just(b"\r\n".to_vec()),
        Just(b"\n".to_vec()),
        Just(b" ".to_vec()),
        Just(b"\t".to_vec()),
        Just(vec![0xff]),
        "[ -~]{0,12}".prop_map(String::into_bytes),
    ];
    proptest::collection::vec(piece, 0..24).prop_map(|pieces| pieces.concat())
}

proptest! {
    #[test]
    fn fuzz_forward_random_fields(
        client in ".{0,20}",
        rq_type in any::<u64>(),
        flags in any::<u64>(),
        payload in proptest::collection::vec(any::<u8>(), 0..64),
        tail in proptest::collection::vec(any::<u8>(), 0..4),
    ) {
        // A real encoding (with a tail the decoder ignores), then random bytes of that shape.
        let forward = rivulet_gateway::frontend::native::Forward { client, rq_type, flags, payload };
        let encoded = rivulet_gateway::frontend::native::forward::encode(&forward).unwrap();
        fuzz::forward::run(&[encoded, tail].concat());
    }

    #[test]
    fn fuzz_forward_random_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..80)) {
        fuzz::forward::run(&bytes);
    }

    #[test]
    fn fuzz_forward_edited_seeds(pick in any::<prop::sample::Index>(), edits in fuzz_edits()) {
        let seeds = fuzz::corpus::seeds("forward");
        fuzz::forward::run(&fuzz::corpus::mutate(&seeds[pick.index(seeds.len())], &edits));
    }

    #[test]
    fn fuzz_federation_random_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..120)) {
        fuzz::federation::run(&bytes);
    }

    #[test]
    fn fuzz_federation_edited_seeds(pick in any::<prop::sample::Index>(), edits in fuzz_edits()) {
        let seeds = fuzz::corpus::seeds("federation");
        fuzz::federation::run(&fuzz::corpus::mutate(&seeds[pick.index(seeds.len())], &edits));
    }

    #[test]
    fn fuzz_metrics_http_random_heads(head in head_like(), end in any::<bool>()) {
        let end: &[u8] = if end { b"\r\n\r\n" } else { b"" };
        fuzz::metrics_http::run(&[&head[..], end].concat());
    }

    #[test]
    fn fuzz_metrics_http_edited_seeds(pick in any::<prop::sample::Index>(), edits in fuzz_edits()) {
        let seeds = fuzz::corpus::seeds("metrics_http");
        fuzz::metrics_http::run(&fuzz::corpus::mutate(&seeds[pick.index(seeds.len())], &edits));
    }
}
