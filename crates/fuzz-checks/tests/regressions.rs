//! Replays every saved input of every fuzz target (`fuzz/regressions/
//! TARGET/*`: crashes once found, and seeds that reach deep paths)
//! through the same checks the fuzzers run, in the normal test suite.

use std::path::PathBuf;

#[test]
fn every_saved_input_passes_its_check() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/regressions");
    let mut replayed = 0;
    for (target, check) in banger_fuzz_checks::TARGETS {
        let dir = root.join(target);
        let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        for entry in entries {
            let path = entry.unwrap().path();
            let data = std::fs::read(&path).unwrap();
            eprintln!("{target}: {}", path.display());
            check(&data);
            replayed += 1;
        }
    }
    assert!(
        replayed >= banger_fuzz_checks::TARGETS.len(),
        "each target has inputs"
    );
}
