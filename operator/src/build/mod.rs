//! Build: pure functions from a validated plan to the Kubernetes objects it needs, one module
//! per emitted kind. No I/O; unit-tested from YAML fixtures.

pub mod acl;
pub mod certificate;
pub mod client_config;
pub mod network_policy;
pub mod pod_security;
pub mod redis;
pub mod secrets;
pub mod sentinel;
pub mod shim;
pub mod sidecar;
pub mod webseal_conf;

use std::collections::BTreeSet;

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use k8s_openapi::Resource as _;

use crate::names;
use crate::validate::Plan;

/// What the builders need to know of the cluster, as observed before building.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    /// Secrets that already exist in the namespace: generated ones are never regenerated.
    pub existing_secrets: BTreeSet<String>,
    /// Redis TLS certificate and CA (`spec.redis.tls`), when on and available.
    pub redis_tls: Option<crate::redis_tls::Material>,
    /// The record key file to write, when a rotation step changed it.
    pub record_keys: Option<crate::record_keys::KeyFile>,
}

/// One object a SessionCache emits.
#[derive(Debug, Clone, PartialEq)]
pub enum Emitted {
    StatefulSet(StatefulSet),
    Deployment(Deployment),
    Service(Service),
    ConfigMap(ConfigMap),
    Secret(Secret),
    PodDisruptionBudget(PodDisruptionBudget),
    NetworkPolicy(NetworkPolicy),
    /// cert-manager's, when an issuer makes the Redis TLS certificate.
    Certificate(certificate::Certificate),
}

impl Emitted {
    pub fn kind(&self) -> &'static str {
        match self {
            Emitted::StatefulSet(_) => StatefulSet::KIND,
            Emitted::Deployment(_) => Deployment::KIND,
            Emitted::Service(_) => Service::KIND,
            Emitted::ConfigMap(_) => ConfigMap::KIND,
            Emitted::Secret(_) => Secret::KIND,
            Emitted::PodDisruptionBudget(_) => PodDisruptionBudget::KIND,
            Emitted::NetworkPolicy(_) => NetworkPolicy::KIND,
            Emitted::Certificate(_) => "Certificate",
        }
    }

    pub fn api_version(&self) -> &'static str {
        match self {
            Emitted::StatefulSet(_) => StatefulSet::API_VERSION,
            Emitted::Deployment(_) => Deployment::API_VERSION,
            Emitted::Service(_) => Service::API_VERSION,
            Emitted::ConfigMap(_) => ConfigMap::API_VERSION,
            Emitted::Secret(_) => Secret::API_VERSION,
            Emitted::PodDisruptionBudget(_) => PodDisruptionBudget::API_VERSION,
            Emitted::NetworkPolicy(_) => NetworkPolicy::API_VERSION,
            Emitted::Certificate(_) => "cert-manager.io/v1",
        }
    }

    pub fn metadata(&self) -> &ObjectMeta {
        match self {
            Emitted::StatefulSet(o) => &o.metadata,
            Emitted::Deployment(o) => &o.metadata,
            Emitted::Service(o) => &o.metadata,
            Emitted::ConfigMap(o) => &o.metadata,
            Emitted::Secret(o) => &o.metadata,
            Emitted::PodDisruptionBudget(o) => &o.metadata,
            Emitted::NetworkPolicy(o) => &o.metadata,
            Emitted::Certificate(o) => &o.metadata,
        }
    }

    pub fn name(&self) -> &str {
        self.metadata().name.as_deref().unwrap_or_default()
    }

    /// The object as JSON with `apiVersion` and `kind`, as server-side apply sends it.
    pub fn to_json(&self) -> serde_json::Value {
        let mut value = match self {
            Emitted::StatefulSet(o) => serde_json::to_value(o),
            Emitted::Deployment(o) => serde_json::to_value(o),
            Emitted::Service(o) => serde_json::to_value(o),
            Emitted::ConfigMap(o) => serde_json::to_value(o),
            Emitted::Secret(o) => serde_json::to_value(o),
            Emitted::PodDisruptionBudget(o) => serde_json::to_value(o),
            Emitted::NetworkPolicy(o) => serde_json::to_value(o),
            Emitted::Certificate(o) => serde_json::to_value(o),
        }
        .expect("Kubernetes objects serialize");
        if let Emitted::StatefulSet(_) = self {
            // As the API server stores a claim template (see build::redis); k8s-openapi leaves
            // an unset creation time out instead.
            let templates = value
                .pointer_mut("/spec/volumeClaimTemplates")
                .and_then(serde_json::Value::as_array_mut);
            for template in templates.into_iter().flatten() {
                template["metadata"]["creationTimestamp"] = serde_json::Value::Null;
            }
        }
        value["apiVersion"] = self.api_version().into();
        value["kind"] = self.kind().into();
        value
    }
}

/// Metadata of an emitted object: name, namespace, standard labels, owned by the
/// SessionCache (so Kubernetes deletes it with the SessionCache).
pub fn metadata(plan: &Plan, name: String, component: &str, owner: &OwnerReference) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: Some(plan.namespace.clone()),
        labels: Some(names::labels(&plan.name, component)),
        owner_references: Some(vec![owner.clone()]),
        ..ObjectMeta::default()
    }
}

/// Every object the plan needs, in apply order (Secrets and configuration before the
/// workloads that mount them). `new_secret` makes a fresh random secret value.
pub fn all(
    plan: &Plan,
    owner: &OwnerReference,
    observed: &Observed,
    new_secret: &mut dyn FnMut() -> String,
) -> Vec<Emitted> {
    let mut out = Vec::new();
    out.extend(secrets::build(plan, owner, observed, new_secret));
    out.extend(certificate::build(plan, owner));
    out.extend(redis::build(plan, owner, observed));
    out.extend(sentinel::build(plan, owner, observed));
    out.extend(shim::build(plan, owner, observed));
    out.extend(network_policy::build(plan, owner));
    out.extend(client_config::build(plan, owner));
    out
}
