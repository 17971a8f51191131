//! The CRD committed under `crds/` is the one the Rust types generate: `kubectl apply -f crds/`
//! and GitOps installs get exactly what the operator expects.

use std::path::PathBuf;

const REGENERATE: &str = "run `scripts/generate-crds` to regenerate it";

fn committed_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../crds/sessioncaches.redsess.io.yaml")
}

#[test]
fn the_committed_crd_is_the_generated_one() {
    let path = committed_path();
    let committed =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}; {REGENERATE}", path.display()));
    let generated = redsess_operator::crd::crd_yaml();
    if committed == generated {
        return;
    }
    // Name the first differing line rather than dumping two thousand-line files.
    let (mut c, mut g) = (committed.lines(), generated.lines());
    let mut line = 1;
    let (old, new) = loop {
        match (c.next(), g.next()) {
            (Some(a), Some(b)) if a == b => line += 1,
            (None, None) => break ("<same lines>", "<same lines; line endings or the final newline differ>"),
            (a, b) => break (a.unwrap_or("<end of file>"), b.unwrap_or("<end of file>")),
        }
    };
    panic!(
        "{} is out of date with operator/src/crd.rs; {REGENERATE}.\n\
         First difference at line {line}:\n  committed: {old}\n  generated: {new}",
        path.display()
    );
}

#[test]
fn the_committed_crd_parses_as_a_custom_resource_definition() {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    let text = std::fs::read_to_string(committed_path()).expect("the CRD file is readable");
    let crd: CustomResourceDefinition = serde_yaml::from_str(&text).expect("the CRD file parses");
    assert_eq!(crd.metadata.name.as_deref(), Some("sessioncaches.redsess.io"));
    assert_eq!(crd.spec.versions.iter().filter(|v| v.storage).count(), 1);
}
