//! The stream-sea codec's vectors still come from the real client: `host-tests/peers/
//! streamsea_vectors.py` captures what stream-sea-client 0.7.0 sends (on the peers venv, see
//! `rivulet_host_tests::peers`), and its output must be `core/tests/data/streamsea_vectors.txt`
//! as committed, which core/tests/streamsea.rs reads with our codec.

#[test]
fn committed_vectors_are_what_the_real_client_sends() {
    rivulet_host_tests::peers::assert_prints_committed("streamsea_vectors.py", "core/tests/data/streamsea_vectors.txt");
}
