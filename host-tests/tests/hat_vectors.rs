//! The hat codec's golden vectors still come from the real library: `host-tests/peers/
//! hat_vectors.py` encodes them with hat-event 0.9.44's own SBS repository and chatter framing
//! (on the peers venv, see `rivulet_host_tests::peers`), and its output must be
//! `core/tests/data/hat_vectors.txt` as committed, which core/tests/hat.rs decodes and re-encodes.

#[test]
fn committed_vectors_are_what_the_real_library_encodes() {
    rivulet_host_tests::peers::assert_prints_committed("hat_vectors.py", "core/tests/data/hat_vectors.txt");
}
