//! The hat codec's golden vectors still come from the real library: `host-tests/peers/
//! hat_vectors.py` encodes them with hat-event 0.9.44's own SBS repository and chatter framing
//! (on the peers venv, see `rivulet_host_tests::peers`), and its output must be
//! `core/tests/data/hat_vectors.txt` as committed, which core/tests/hat.rs decodes and re-encodes.

use std::path::Path;
use std::time::Duration;

use rivulet_host_tests::peers::PeerProcess;

#[test]
fn committed_vectors_are_what_the_real_library_encodes() {
    let out = PeerProcess::spawn("hat_vectors.py", &[]).wait_success(Duration::from_secs(60));
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../core/tests/data/hat_vectors.txt");
    let committed = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let differing: Vec<(&str, &str)> =
        committed.lines().zip(out.stdout.lines()).filter(|(ours, theirs)| ours != theirs).collect();
    assert!(
        committed == out.stdout,
        "{} is not what hat_vectors.py prints now ({} lines committed, {} printed); first differences: \
         {differing:#?}\nregenerate it as its header says",
        path.display(),
        committed.lines().count(),
        out.stdout.lines().count(),
    );
}
