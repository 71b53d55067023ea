//! Every input in `tests/sim/fuzz/regressions/` (crashes the fuzz target found, each
//! fixed) runs through the fuzz target's driver again.

#![allow(clippy::print_stdout)] // the tests print their figures

use std::path::Path;

#[test]
fn fuzz_regressions_stay_fixed() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/regressions");
    let mut files: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    assert!(!files.is_empty(), "no regressions in {}", dir.display());
    for f in &files {
        let data = std::fs::read(f).unwrap();
        if let Err(e) = ikemesh_sim::drive::drive(&data) {
            panic!("{}: {e}", f.display());
        }
        println!("{}: settled", f.display());
    }
}
