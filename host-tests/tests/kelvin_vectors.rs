//! The Kelvin codec's golden vectors still come from the real SDK: `host-tests/peers/
//! kelvin_vectors.py` reads and writes each input line with kelvin-python-sdk 0.5.0 (on the peers
//! venv, see `rivulet_host_tests::peers`), and its output must be `core/tests/data/
//! kelvin_vectors.txt` as committed, which core/tests/kelvin.rs checks our codec against.

#[test]
fn committed_vectors_are_what_the_real_sdk_reads_and_writes() {
    rivulet_host_tests::peers::assert_prints_committed("kelvin_vectors.py", "core/tests/data/kelvin_vectors.txt");
}
