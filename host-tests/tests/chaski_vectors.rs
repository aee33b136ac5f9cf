//! The Chaski codec's golden vectors still come from the real library: `host-tests/peers/
//! chaski_vectors.py` frames every command with chaski-confluent 0.1a5's own `serialize_message`
//! and the JSON codec of `chaski_json.py` (on the peers venv, see `rivulet_host_tests::peers`), and
//! its output must be `core/tests/data/chaski_vectors.txt` as committed, which core/tests/chaski.rs
//! checks our codec against.

#[test]
fn committed_vectors_are_what_the_real_library_writes() {
    rivulet_host_tests::peers::assert_prints_committed("chaski_vectors.py", "core/tests/data/chaski_vectors.txt");
}
