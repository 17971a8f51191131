//! `redsess-operator render FILE`: every object a SessionCache would produce, offline, for
//! review and GitOps. Generated Secrets are left out: their values exist only in the cluster.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::Resource;

use crate::build::{self, Emitted, Observed};
use crate::crd::SessionCache;
use crate::validate::{validate, Platform, ValidationError};

#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("not a SessionCache: {0}")]
    Parse(#[from] serde_yaml::Error),
    #[error("invalid SessionCache: {0}")]
    Invalid(#[from] ValidationError),
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
