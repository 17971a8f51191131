//! `redsess-operator render FILE`: every object a SessionCache would produce, offline, for
//! review and GitOps. Generated Secrets are left out: their values exist only in the cluster.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::Resource;

use k8s_openapi::api::core::v1::Pod;

use crate::admission::{self, Decision};
use crate::build::sidecar::Placement;
use crate::build::{self, Emitted, Observed};
use crate::crd::SessionCache;
use crate::validate::{validate, Platform, ValidationError};

#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("not a SessionCache: {0}")]
    Parse(#[from] serde_yaml::Error),
    #[error("invalid SessionCache: {0}")]
    Invalid(#[from] ValidationError),
    #[error("not a Pod: {0}")]
    Pod(serde_yaml::Error),
    #[error("cannot apply the patch to the pod: {0}")]
    Patch(String),
}

/// The owner reference the cluster would give; offline there is no UID yet.
fn offline_owner(sc: &SessionCache) -> OwnerReference {
    let mut owner = sc.controller_owner_ref(&()).unwrap_or_else(|| OwnerReference {
        api_version: SessionCache::api_version(&()).into(),
        kind: SessionCache::kind(&()).into(),
        name: sc.meta().name.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
        ..OwnerReference::default()
    });
    if owner.uid.is_empty() {
        owner.uid = "00000000-0000-0000-0000-000000000000".into();
    }
    owner
}

/// The objects of one SessionCache document, as typed values.
pub fn objects(yaml: &str, platform: Platform) -> Result<Vec<Emitted>, RenderError> {
    let sc: SessionCache = serde_yaml::from_str(yaml)?;
    let plan = validate(&sc)?.on(platform);
    let owner = offline_owner(&sc);
    let mut no_values = || String::new();
    Ok(build::all(&plan, &owner, &Observed::default(), &mut no_values)
        .into_iter()
        .filter(|o| !matches!(o, Emitted::Secret(_)))
        .collect())
}

/// The objects as a multi-document YAML stream.
pub fn render(yaml: &str, platform: Platform) -> Result<String, RenderError> {
    let mut out = String::new();
    for object in objects(yaml, platform)? {
        out.push_str("---\n");
        out.push_str(&serde_yaml::to_string(&object.to_json()).expect("JSON values serialize"));
    }
    Ok(out)
}

/// `redsess-operator inject POD CACHE`: the pod as the admission webhook would store it, for a
/// server of `placement`'s kind, offline; and whether the shim was added.
pub fn inject(
    pod_yaml: &str,
    cache_yaml: &str,
    placement: Placement,
    platform: Platform,
) -> Result<(String, bool), RenderError> {
    let pod: Pod = serde_yaml::from_str(pod_yaml).map_err(RenderError::Pod)?;
    let sc: SessionCache = serde_yaml::from_str(cache_yaml)?;
    validate(&sc)?;
    let mut value = serde_json::to_value(&pod).expect("a pod serializes");
    let injected = match admission::decide(&pod, &[sc], placement, platform) {
        Decision::Inject { patch, .. } => {
            let patch: json_patch::Patch = serde_json::from_value(patch).expect("our patch is a JSON Patch");
            json_patch::patch(&mut value, &patch).map_err(|e| RenderError::Patch(e.to_string()))?;
            true
        }
        Decision::Unchanged { warnings } => {
            for warning in warnings {
                eprintln!("{warning}");
            }
            false
        }
    };
    value["apiVersion"] = "v1".into();
    value["kind"] = "Pod".into();
    Ok((serde_yaml::to_string(&value).expect("JSON values serialize"), injected))
}
