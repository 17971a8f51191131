//! Defaults a new SessionCache is given when it is created, which the CRD's own defaults cannot
//! give: those apply to every stored cache whenever it is read, so they would switch a running
//! cache on an upgrade. Pure; the webhook server (`webhook`) hands it the AdmissionReview.
//!
//! Record sealing: a SessionCache created without `spec.shim.encryption.mode` is given
//! `SealMigrating`. It writes sealed records from the first session on and still opens plain
//! ones, so a cache re-created from a backup of a plain one (Redis volumes and all) loses no
//! session; `Sealed` is the step after, once no plain record is left. A mode the request
//! names, `Plain` included, is kept. Caches that exist are never touched (CREATE only), and
//! read as `Plain` when they have no mode (`EncryptionSpec::mode`).

use kube::api::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, Operation};
use serde_json::{json, Value};

use crate::crd::EncryptionMode;

/// Where the API server sends new SessionCaches.
pub const PATH: &str = "/default-sessioncaches";
/// The mode a new cache without one is given.
pub const NEW_CACHE_MODE: EncryptionMode = EncryptionMode::SealMigrating;

/// The JSON Patch that fills in what `object` (a SessionCache being created) leaves out, or
/// `None` when it leaves nothing out.
pub fn patch(object: &Value) -> Option<Value> {
    let mode = serde_json::to_value(NEW_CACHE_MODE).expect("a mode serializes");
    let spec = object.get("spec");
    let shim = spec.and_then(|s| s.get("shim"));
    let encryption = shim.and_then(|s| s.get("encryption"));
    let op = match (spec, shim, encryption) {
        (_, _, Some(e)) if e.get("mode").is_some_and(|m| !m.is_null()) => return None,
        (_, _, Some(_)) => json!({"op": "add", "path": "/spec/shim/encryption/mode", "value": mode}),
        (_, Some(_), None) => json!({"op": "add", "path": "/spec/shim/encryption", "value": {"mode": mode}}),
        (Some(_), None, _) => json!({"op": "add", "path": "/spec/shim", "value": {"encryption": {"mode": mode}}}),
        (None, _, _) => json!({"op": "add", "path": "/spec", "value": {"shim": {"encryption": {"mode": mode}}}}),
    };
    Some(Value::Array(vec![op]))
}

/// The AdmissionResponse for a request about a SessionCache.
pub fn respond(request: &AdmissionRequest<DynamicObject>) -> AdmissionResponse {
    let response = AdmissionResponse::from(request);
    let Some(object) = request
        .object
        .as_ref()
        .filter(|_| request.operation == Operation::Create)
    else {
        return response;
    };
    let Some(patch) = patch(&object.data) else {
        return response;
    };
    let patch: json_patch::Patch = serde_json::from_value(patch).expect("our patch is a JSON Patch");
    match response.clone().with_patch(patch) {
        Ok(mut patched) => {
            patched.warnings = Some(vec![format!(
                "redsess: spec.shim.encryption.mode set to {NEW_CACHE_MODE:?}: session records are sealed in Redis (set Plain to keep them plain)"
            )]);
            patched
        }
        Err(e) => response.deny(format!("redsess: cannot encode the defaults of this SessionCache: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::core::admission::AdmissionReview;

    fn applied(object: Value) -> Value {
        let mut object = object;
        if let Some(ops) = patch(&object) {
            let ops: json_patch::Patch = serde_json::from_value(ops).unwrap();
            json_patch::patch(&mut object, &ops).unwrap();
        }
        object
    }

    #[test]
    fn a_new_cache_without_a_mode_is_sealing_and_a_given_mode_is_kept() {
        for (object, expected) in [
            (json!({"spec": {"shim": {"encryption": {}}}}), "SealMigrating"),
            (
                json!({"spec": {"shim": {"encryption": {"mode": null}}}}),
                "SealMigrating",
            ),
            (json!({"spec": {"shim": {"replicas": 2}}}), "SealMigrating"),
            (json!({"spec": {"redis": {"replicas": 3}}}), "SealMigrating"),
            (json!({"metadata": {"name": "c"}}), "SealMigrating"),
            (json!({"spec": {"shim": {"encryption": {"mode": "Plain"}}}}), "Plain"),
            (json!({"spec": {"shim": {"encryption": {"mode": "Sealed"}}}}), "Sealed"),
        ] {
            let done = applied(object.clone());
            assert_eq!(done["spec"]["shim"]["encryption"]["mode"], expected, "{object}");
        }
        // What it adds, the rest of the spec unchanged.
        let done = applied(json!({"spec": {"shim": {"replicas": 2, "encryption": {"keysSecret": "k"}}}}));
        assert_eq!(
            done,
            json!({"spec": {"shim": {"replicas": 2, "encryption": {"keysSecret": "k", "mode": "SealMigrating"}}}})
        );
    }

    fn review(operation: &str, spec: Value) -> AdmissionRequest<DynamicObject> {
        let review: AdmissionReview<DynamicObject> = serde_json::from_value(json!({
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": "u1",
                "kind": {"group": "redsess.io", "version": "v1alpha1", "kind": "SessionCache"},
                "resource": {"group": "redsess.io", "version": "v1alpha1", "resource": "sessioncaches"},
                "operation": operation,
                "userInfo": {},
                "object": {"apiVersion": "redsess.io/v1alpha1", "kind": "SessionCache",
                           "metadata": {"name": "c", "namespace": "isam"}, "spec": spec},
            }
        }))
        .unwrap();
        review.try_into().unwrap()
    }

    #[test]
    fn only_creation_is_defaulted_and_says_so() {
        let created = respond(&review("CREATE", json!({})));
        assert!(created.allowed);
        assert!(created.patch.is_some());
        assert!(created.warnings.unwrap()[0].contains("SealMigrating"));
        let updated = respond(&review("UPDATE", json!({})));
        assert!(updated.allowed && updated.patch.is_none() && updated.warnings.is_none());
        let named = respond(&review("CREATE", json!({"shim": {"encryption": {"mode": "Plain"}}})));
        assert!(named.allowed && named.patch.is_none());
    }
}
