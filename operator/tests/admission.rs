//! The admission webhook's decisions, from AdmissionReview fixtures shaped like the pods IBM's
//! verify-access-operator and IAG operator create (`tests/fixtures/pods/`): the response is
//! decoded as the API server decodes it and its JSON Patch applied to the pod.

use std::path::PathBuf;

use base64::Engine;
use k8s_openapi::api::core::v1::Pod;
use kube::core::admission::{AdmissionRequest, AdmissionReview};
use redsess_operator::admission::respond;
use redsess_operator::build::sidecar::{Placement, CONTAINER, HASH_ANNOTATION, SIDECAR_LABEL};
use redsess_operator::crd::SessionCache;
use redsess_operator::validate::Platform;
use serde_json::{json, Value};

fn fixture(name: &str) -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/pods")
        .join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_yaml::from_str(&text).unwrap()
}

fn caches() -> Vec<SessionCache> {
    vec![serde_json::from_value(fixture("sessioncache.yaml")).unwrap()]
}

/// An AdmissionReview of the creation of `pod`, as the API server sends it.
fn review_of(pod: &Value) -> AdmissionRequest<Pod> {
    let review: AdmissionReview<Pod> = serde_json::from_value(json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "requestKind": {"group": "", "version": "v1", "kind": "Pod"},
            "requestResource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": "isam",
            "operation": "CREATE",
            "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller"},
            "object": pod,
            "dryRun": false,
            "options": {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions"}
        }
    }))
    .unwrap();
    review.try_into().unwrap()
}

/// The response as the API server reads it: allowed, the patch applied (if any), warnings.
fn admit(pod: &Value, placement: Placement) -> (Value, bool, Vec<String>) {
    let request = review_of(pod);
    let review =
        serde_json::to_value(respond(&request, &caches(), placement, Platform::OpenShift).into_review()).unwrap();
    let response = &review["response"];
    assert_eq!(
        response["uid"], "705ab4f5-6393-11e8-b7cc-42010a800002",
        "the request's uid"
    );
    assert_eq!(response["allowed"], true, "{response:#}");
    let warnings = response["warnings"]
        .as_array()
        .map(|w| w.iter().map(|s| s.as_str().unwrap().to_string()).collect())
        .unwrap_or_default();
    // A Go []byte: the API server takes a base64 string or an array of bytes (kube's form).
    let patch: Vec<u8> = match &response["patch"] {
        Value::Null => return (pod.clone(), false, warnings),
        Value::String(b64) => base64::engine::general_purpose::STANDARD.decode(b64).unwrap(),
        bytes => serde_json::from_value(bytes.clone()).expect("the patch is bytes"),
    };
    assert_eq!(response["patchType"], "JSONPatch");
    let patch: json_patch::Patch = serde_json::from_slice(&patch).unwrap();
    let mut patched = pod.clone();
    json_patch::patch(&mut patched, &patch).expect("the patch applies to the pod");
    (patched, true, warnings)
}

fn names(list: &Value) -> Vec<&str> {
    list.as_array()
        .map(|l| l.iter().map(|c| c["name"].as_str().unwrap()).collect())
        .unwrap_or_default()
}

#[test]
fn a_verify_access_webseal_pod_selected_by_its_labels_gets_a_native_sidecar() {
    let pod = fixture("verify-access-webseal.yaml");
    let (patched, changed, warnings) = admit(&pod, Placement::Native);
    assert!(changed && warnings.is_empty());
    assert_eq!(names(&patched["spec"]["initContainers"]), [CONTAINER]);
    assert_eq!(
        names(&patched["spec"]["containers"]),
        ["webseal-default"],
        "WebSEAL's own container kept"
    );
    let shim = &patched["spec"]["initContainers"][0];
    assert_eq!(shim["restartPolicy"], "Always");
    assert_eq!(shim["image"], "ghcr.io/redsess/redsess-shim:0.1.0");
    assert_eq!(
        names(&patched["spec"]["volumes"]),
        ["webseal-config", "redsess-redis-password", "redsess-basic-auth"]
    );
    let labels = &patched["metadata"]["labels"];
    assert_eq!(labels[SIDECAR_LABEL], "sessions");
    assert_eq!(labels["VerifyAccess_cr"], "webseal-default", "IBM's labels kept");
    assert_eq!(
        patched["metadata"]["annotations"][HASH_ANNOTATION]
            .as_str()
            .unwrap()
            .len(),
        64
    );
    assert_eq!(patched["metadata"]["annotations"]["productId"], "verify-access-wrp");
    // The environment names the sessions' Redis through Sentinel, and holds no password.
    let env: Vec<(&str, &str)> = shim["env"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| Some((e["name"].as_str()?, e["value"].as_str()?)))
        .collect();
    assert!(env.contains(&("REDSESS_LISTEN", "127.0.0.1:18443")), "{env:?}");
    assert!(env.contains(&("REDSESS_REDIS_SENTINELS", "sessions-sentinel.isam.svc:26379")));
    assert!(env.iter().all(|(name, _)| !name.ends_with("_PASSWORD")));

    // A second call (reinvocation) changes nothing.
    let (again, changed, _) = admit(&patched, Placement::Native);
    assert!(!changed);
    assert_eq!(again, patched);
}

#[test]
fn an_iag_pod_asking_by_annotation_gets_a_plain_container_before_1_29() {
    let pod = fixture("iag-annotated.yaml");
    let (patched, changed, _) = admit(&pod, Placement::Plain);
    assert!(changed);
    assert!(patched["spec"].get("initContainers").is_none());
    assert_eq!(names(&patched["spec"]["containers"]), ["iag-edge", CONTAINER]);
    assert!(patched["spec"]["containers"][1].get("restartPolicy").is_none());
    assert_eq!(patched["metadata"]["annotations"]["redsess.io/inject"], "sessions");
    let (_, changed, _) = admit(&patched, Placement::Plain);
    assert!(!changed, "idempotent");
}

#[test]
fn a_pod_no_cache_selects_is_admitted_unchanged() {
    let pod = fixture("unselected.yaml");
    let (same, changed, warnings) = admit(&pod, Placement::Native);
    assert!(!changed && warnings.is_empty());
    assert_eq!(same, pod);
}

#[test]
fn a_pod_naming_a_cache_that_cannot_serve_it_is_admitted_with_a_warning() {
    let mut pod = fixture("unselected.yaml");
    pod["metadata"]["annotations"] = json!({"redsess.io/inject": "elsewhere"});
    let (_, changed, warnings) = admit(&pod, Placement::Native);
    assert!(!changed);
    assert_eq!(
        warnings,
        ["redsess: the shim was not injected: no SessionCache elsewhere in this namespace"]
    );
}

#[test]
fn a_pod_without_labels_or_annotations_gets_the_maps_created() {
    let pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "bare", "namespace": "isam", "annotations": {"redsess.io/inject": "sessions"}},
        "spec": {"containers": [{"name": "webseal", "image": "icr.io/ivia/ivia-wrp:11.0.0.0"}]}
    });
    let (patched, changed, _) = admit(&pod, Placement::Native);
    assert!(changed);
    assert_eq!(patched["metadata"]["labels"][SIDECAR_LABEL], "sessions");
    assert_eq!(
        names(&patched["spec"]["volumes"]),
        ["redsess-redis-password", "redsess-basic-auth"]
    );
}
