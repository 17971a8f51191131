//! The samples under `deploy/samples/` are SessionCaches the operator accepts: they parse
//! and pass its own validation (scripts/check-manifests also checks them against the CRD
//! schema and validates what they render against Kubernetes' schemas).

use std::path::PathBuf;

use redsess_operator::crd::SessionCache;

fn samples() -> Vec<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/samples");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .map(|entry| entry.expect("a directory entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
}

#[test]
fn every_sample_parses_and_validates() {
    let files = samples();
    assert!(
        files.len() >= 3,
        "expected the samples under deploy/samples, found {files:?}"
    );
    for file in files {
        let text = std::fs::read_to_string(&file).expect("a readable sample");
        let sc: SessionCache =
            serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{}: not a SessionCache: {e}", file.display()));
        assert!(
            sc.metadata.namespace.is_some(),
            "{}: give metadata.namespace",
            file.display()
        );
        if let Err(e) = redsess_operator::validate::validate(&sc) {
            panic!("{}: the operator rejects it: {e}", file.display());
        }
    }
}
