//! The seed corpora as the stable tests use them: every file of `corpus/<target>/`, and seeds
//! with a few bytes changed, inserted, removed or cut, so that proptest starts from the same
//! inputs as the fuzzer and reaches past the first checks of each decoder.

use std::path::Path;

/// Every file of `corpus_dir/target`, by name. A missing or empty corpus is an error: the seeds
/// are committed with the fuzz targets.
pub fn load(corpus_dir: &Path, target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = corpus_dir.join(target);
    let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    let mut files: Vec<(String, Vec<u8>)> = entries
        .map(|entry| {
            let path = entry.expect("a directory entry").path();
            let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            (name, std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
        })
        .collect();
    files.sort();
    assert!(!files.is_empty(), "{} holds no seeds", dir.display());
    files
}

/// The committed seeds of `target`, for a crate beside `fuzz/` that includes this file by path
/// (`env!` names the including crate's directory: core's or the gateway's tests).
pub fn seeds(target: &str) -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus");
    load(&dir, target).into_iter().map(|(_, bytes)| bytes).collect()
}

/// `seed` with `edits` applied in order: `(at, op, value)` sets (op 0), inserts (op 1) or
/// removes (op 2) the byte at `at` (modulo the length), or cuts the input there (op 3).
pub fn mutate(seed: &[u8], edits: &[(usize, u8, u8)]) -> Vec<u8> {
    let mut bytes = seed.to_vec();
    for &(at, op, value) in edits {
        let at = at % (bytes.len() + 1);
        match op % 4 {
            0 if at < bytes.len() => bytes[at] = value,
            1 => bytes.insert(at, value),
            2 if at < bytes.len() => {
                bytes.remove(at);
            }
            3 => bytes.truncate(at),
            _ => {}
        }
    }
    bytes
}
