//! The `files` fuzz target's harness (the file requests and the receiver's rule against a model)
//! on its seeds, random bytes and edited seeds (fuzz/, docs/RELIABILITY.md "Fuzzing"). The rule's
//! cases are the unit tests of `core/src/files.rs`.

#[allow(dead_code)]
#[path = "../../fuzz/src"]
mod fuzz {
    pub mod corpus;
    pub mod files;
    pub mod input;
}

use proptest::prelude::*;

#[test]
fn fuzz_files_seed_corpus() {
    let seeds = fuzz::corpus::seeds("files");
    assert!(seeds.len() >= 3, "the seed corpus is there");
    for seed in seeds {
        fuzz::files::run(&seed);
    }
}

fn fuzz_edits() -> impl Strategy<Value = Vec<(usize, u8, u8)>> {
    proptest::collection::vec((any::<usize>(), any::<u8>(), any::<u8>()), 1..8)
}

proptest! {
    #[test]
    fn fuzz_files_random_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        fuzz::files::run(&bytes);
    }

    #[test]
    fn fuzz_files_edited_seeds(pick in any::<prop::sample::Index>(), edits in fuzz_edits()) {
        let seeds = fuzz::corpus::seeds("files");
        fuzz::files::run(&fuzz::corpus::mutate(&seeds[pick.index(seeds.len())], &edits));
    }
}
