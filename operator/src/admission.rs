//! Admission: which SessionCache a pod being created asks for, and the JSON Patch that adds
//! its shim (build::sidecar). Pure: the webhook server (`webhook`) hands it the
//! AdmissionReview and the SessionCaches of the pod's namespace.
//!
//! - A pod asks for a cache by the annotation `redsess.io/inject: <cache>`, or by carrying the
//!   labels of a cache's `spec.shim.sidecar.podSelector` (IBM's operators fix their pods'
//!   labels; they can set annotations).
//! - Only caches in Sidecar mode whose spec validates count; a pod that matches none, or
//!   already has the shim (a second call, `reinvocationPolicy: IfNeeded`), is admitted as it
//!   is. An annotation naming a cache that cannot serve is admitted with a warning saying why.
//! - The patch adds the container (first of `initContainers` as a native sidecar, else last of
//!   `containers`), its volumes, the label `redsess.io/sidecar: <cache>` and the annotation
//!   with the hash of what was injected.

use k8s_openapi::api::core::v1::Pod;
use kube::core::admission::{AdmissionRequest, AdmissionResponse};
use kube::core::{Selector, SelectorExt};
use kube::ResourceExt;
use serde_json::{json, Value};

use crate::build::sidecar::{self, Placement, Sidecar, HASH_ANNOTATION, INJECT_ANNOTATION, SIDECAR_LABEL};
use crate::crd::SessionCache;
use crate::validate::{validate, Plan, Platform};

/// What the webhook decided for one pod.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Admitted as it is; warnings for the user, if any.
    Unchanged { warnings: Vec<String> },
    /// The shim of this cache, as this JSON Patch.
    Inject { cache: String, patch: Value },
}

/// The cache a pod asks for, among `caches` (those of its namespace).
fn chosen(pod: &Pod, caches: &[SessionCache], platform: Platform) -> Result<Option<Plan>, String> {
    let sidecar_plan = |sc: &SessionCache| -> Result<Plan, String> {
        let plan = validate(sc)
            .map_err(|e| format!("SessionCache {} is invalid ({e})", sc.name_any()))?
            .on(platform);
        match plan.shim.sidecar {
            Some(_) => Ok(plan),
            None => Err(format!(
                "SessionCache {} runs the shim as a Deployment, not as a sidecar",
                sc.name_any()
            )),
        }
    };
    if let Some(name) = pod.annotations().get(INJECT_ANNOTATION) {
        let sc = caches
            .iter()
            .find(|c| &c.name_any() == name)
            .ok_or_else(|| format!("no SessionCache {name} in this namespace"))?;
        return sidecar_plan(sc).map(Some);
    }
    let labels = pod.labels();
    let mut selecting =
        caches.iter().filter(|sc| {
            sc.spec.shim.sidecar.pod_selector.clone().is_some_and(|selector| {
                Selector::try_from(selector).is_ok_and(|s| !s.selects_all() && s.matches(labels))
            })
        });
    match selecting.next() {
        None => Ok(None),
        Some(sc) => sidecar_plan(sc).map(Some),
    }
}

fn has_shim(pod: &Pod) -> bool {
    let Some(spec) = &pod.spec else { return false };
    spec.containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .any(|c| c.name == sidecar::CONTAINER)
}

/// `~` and `/` escaped for a JSON Pointer segment.
fn pointer_segment(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

/// The JSON Patch that adds `shim` (of cache `cache`) to `pod`.
pub fn patch(pod: &Pod, cache: &str, shim: &Sidecar) -> Value {
    let spec = pod.spec.clone().unwrap_or_default();
    let container = serde_json::to_value(&shim.container).expect("a container serializes");
    let mut ops = Vec::new();
    match shim.placement {
        Placement::Native => match &spec.init_containers {
            Some(list) if !list.is_empty() => {
                ops.push(json!({"op": "add", "path": "/spec/initContainers/0", "value": container}))
            }
            _ => ops.push(json!({"op": "add", "path": "/spec/initContainers", "value": [container]})),
        },
        Placement::Plain => ops.push(json!({"op": "add", "path": "/spec/containers/-", "value": container})),
    }
    let volumes: Vec<Value> = shim
        .volumes
        .iter()
        .map(|v| serde_json::to_value(v).expect("a volume serializes"))
        .collect();
    match &spec.volumes {
        Some(list) if !list.is_empty() => {
            for volume in volumes {
                ops.push(json!({"op": "add", "path": "/spec/volumes/-", "value": volume}));
            }
        }
        _ => ops.push(json!({"op": "add", "path": "/spec/volumes", "value": volumes})),
    }
    let mut map_entry = |field: &str, present: bool, key: &str, value: &str| {
        if present {
            ops.push(
                json!({"op": "add", "path": format!("/metadata/{field}/{}", pointer_segment(key)), "value": value}),
            );
        } else {
            ops.push(json!({"op": "add", "path": format!("/metadata/{field}"), "value": {key: value}}));
        }
    };
    map_entry("labels", pod.metadata.labels.is_some(), SIDECAR_LABEL, cache);
    map_entry(
        "annotations",
        pod.metadata.annotations.is_some(),
        HASH_ANNOTATION,
        &shim.hash,
    );
    Value::Array(ops)
}

/// Decides for one pod of the namespace whose SessionCaches are `caches`.
pub fn decide(pod: &Pod, caches: &[SessionCache], placement: Placement, platform: Platform) -> Decision {
    if has_shim(pod) {
        return Decision::Unchanged { warnings: Vec::new() };
    }
    match chosen(pod, caches, platform) {
        Ok(None) => Decision::Unchanged { warnings: Vec::new() },
        Err(why) => Decision::Unchanged {
            warnings: vec![format!("redsess: the shim was not injected: {why}")],
        },
        Ok(Some(plan)) => {
            let shim = sidecar::sidecar(&plan, placement);
            Decision::Inject {
                patch: patch(pod, &plan.name, &shim),
                cache: plan.name,
            }
        }
    }
}

/// The AdmissionResponse for a request about a pod.
pub fn respond(
    request: &AdmissionRequest<Pod>,
    caches: &[SessionCache],
    placement: Placement,
    platform: Platform,
) -> AdmissionResponse {
    let response = AdmissionResponse::from(request);
    let Some(pod) = &request.object else {
        return response;
    };
    match decide(pod, caches, placement, platform) {
        Decision::Unchanged { warnings } => {
            let mut response = response;
            if !warnings.is_empty() {
                response.warnings = Some(warnings);
            }
            response
        }
        Decision::Inject { patch, cache } => {
            let patch: json_patch::Patch = serde_json::from_value(patch).expect("our patch is a JSON Patch");
            match response.clone().with_patch(patch) {
                Ok(patched) => patched,
                Err(e) => response.deny(format!(
                    "redsess: cannot encode the patch adding the shim of {cache}: {e}"
                )),
            }
        }
    }
}
