//! Apply: server-side apply of every emitted object with one field manager
//! ([`names::FIELD_MANAGER`], forced, so the operator's intent wins over drift), and deletion of
//! what this SessionCache emitted earlier but its current plan no longer needs (the Sentinel
//! StatefulSet after `redis.replicas` went down to 1, the ConfigMap of a removed client, …).
//!
//! One object the server refuses does not stop the others: every object is applied and each
//! failure is returned, for the status to report. A kind whose API version the server does not
//! serve (PodDisruptionBudget `policy/v1` before Kubernetes 1.21) is not sent at all and is
//! reported once, as such.
//!
//! Deletion only touches objects that carry this SessionCache's labels
//! ([`names::owned_selector`]) *and* an owner reference to it, and never Secrets: a generated
//! Secret holds credentials clients may already use; it goes away with the SessionCache through
//! its owner reference.

use std::collections::BTreeSet;
use std::fmt;

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{
    ApiResource, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, Preconditions, PropagationPolicy,
};
use kube::{Api, Client, Resource};

use crate::api_error::one_line;
use crate::build::Emitted;
use crate::discovery::ServedKinds;
use crate::names;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{}", join(.0))]
    Refused(Vec<Failure>),
    #[error("cannot list {kind}s in {namespace}: {}", one_line(.source))]
    List {
        kind: &'static str,
        namespace: String,
        #[source]
        source: kube::Error,
    },
    #[error("cannot delete {kind} {namespace}/{name}: {}", one_line(.source))]
    Delete {
        kind: &'static str,
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
}

/// The kinds a SessionCache emits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    StatefulSet,
    Deployment,
    Service,
    ConfigMap,
    Secret,
    PodDisruptionBudget,
    NetworkPolicy,
    /// cert-manager's: served where cert-manager is installed.
    Certificate,
}

/// What the API needs to know of a kind, read off its k8s-openapi type.
struct KindInfo {
    kind: &'static str,
    group: &'static str,
    version: &'static str,
    plural: &'static str,
    /// What serves this API version: `Kubernetes 1.21`.
    needs: &'static str,
}

impl KindInfo {
    const fn of<K: k8s_openapi::Resource>(needs: &'static str) -> Self {
        Self {
            kind: K::KIND,
            group: K::GROUP,
            version: K::VERSION,
            plural: K::URL_PATH_SEGMENT,
            needs,
        }
    }
}

impl Kind {
    pub const ALL: [Kind; 8] = [
        Kind::StatefulSet,
        Kind::Deployment,
        Kind::Service,
        Kind::ConfigMap,
        Kind::Secret,
        Kind::PodDisruptionBudget,
        Kind::NetworkPolicy,
        Kind::Certificate,
    ];

    /// Kinds cleaned up when no longer planned, in deletion order (workloads first, so no pod
    /// is left without its configuration). Secrets are never among them.
    pub const PRUNED: [Kind; 7] = [
        Kind::StatefulSet,
        Kind::Deployment,
        Kind::PodDisruptionBudget,
        Kind::Service,
        Kind::ConfigMap,
        Kind::NetworkPolicy,
        Kind::Certificate,
    ];

    pub fn of(object: &Emitted) -> Kind {
        match object {
            Emitted::StatefulSet(_) => Kind::StatefulSet,
            Emitted::Deployment(_) => Kind::Deployment,
            Emitted::Service(_) => Kind::Service,
            Emitted::ConfigMap(_) => Kind::ConfigMap,
            Emitted::Secret(_) => Kind::Secret,
            Emitted::PodDisruptionBudget(_) => Kind::PodDisruptionBudget,
            Emitted::NetworkPolicy(_) => Kind::NetworkPolicy,
            Emitted::Certificate(_) => Kind::Certificate,
        }
    }

    const fn info(self) -> KindInfo {
        match self {
            Kind::StatefulSet => KindInfo::of::<StatefulSet>("Kubernetes 1.9"),
            Kind::Deployment => KindInfo::of::<Deployment>("Kubernetes 1.9"),
            Kind::Service => KindInfo::of::<Service>("Kubernetes 1.0"),
            Kind::ConfigMap => KindInfo::of::<ConfigMap>("Kubernetes 1.2"),
            Kind::Secret => KindInfo::of::<Secret>("Kubernetes 1.0"),
            Kind::PodDisruptionBudget => KindInfo::of::<PodDisruptionBudget>("Kubernetes 1.21"),
            Kind::NetworkPolicy => KindInfo::of::<NetworkPolicy>("Kubernetes 1.7"),
            Kind::Certificate => KindInfo {
                kind: "Certificate",
                group: "cert-manager.io",
                version: "v1",
                plural: "certificates",
                needs: "cert-manager 1.0",
            },
        }
    }

    pub fn name(self) -> &'static str {
        self.info().kind
    }

    /// `policy/v1`, `v1`.
    pub fn api_version(self) -> String {
        let info = self.info();
        if info.group.is_empty() {
            info.version.to_string()
        } else {
            format!("{}/{}", info.group, info.version)
        }
    }

    pub fn group(self) -> &'static str {
        self.info().group
    }

    /// The resource name in URLs: `statefulsets`.
    pub fn plural(self) -> &'static str {
        self.info().plural
    }

    /// What serves this kind's API version: `Kubernetes 1.21`, `cert-manager 1.0`.
    pub fn needs(self) -> &'static str {
        self.info().needs
    }

    /// For the dynamic API: one code path for every kind.
    pub fn api_resource(self) -> ApiResource {
        let info = self.info();
        ApiResource {
            group: info.group.into(),
            version: info.version.into(),
            api_version: self.api_version(),
            kind: info.kind.into(),
            plural: info.plural.into(),
        }
    }

    /// The REST path of this kind's collection in a namespace, e.g.
    /// `/apis/apps/v1/namespaces/isam/statefulsets`.
    pub fn collection_path(self, namespace: &str) -> String {
        DynamicObject::url_path(&self.api_resource(), Some(namespace))
    }
}

/// The REST path of an emitted object, e.g. `/api/v1/namespaces/isam/configmaps/cache-client-web`.
pub fn object_path(object: &Emitted) -> String {
    let namespace = object.metadata().namespace.as_deref().unwrap_or("default");
    format!("{}/{}", Kind::of(object).collection_path(namespace), object.name())
}

/// What could not be applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The API server does not serve this kind's API version: nothing of it was sent.
    NotServed(Kind),
    /// The server refused this object, for this reason (one line).
    Refused { kind: Kind, name: String, reason: String },
}

impl Failure {
    pub fn is_refusal(&self) -> bool {
        matches!(self, Failure::Refused { .. })
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::NotServed(kind) => write!(
                f,
                "this cluster does not serve {} {}; {} or newer is needed",
                kind.api_version(),
                kind.name(),
                kind.needs()
            ),
            Failure::Refused { kind, name, reason } => {
                write!(f, "cannot apply {} {name}: {reason}", kind.name())
            }
        }
    }
}

/// The failures as one line.
pub fn join(failures: &[Failure]) -> String {
    failures.iter().map(Failure::to_string).collect::<Vec<_>>().join("; ")
}

/// The parameters of every apply: one field manager, forced.
pub fn apply_params() -> PatchParams {
    PatchParams::apply(names::FIELD_MANAGER).force()
}

fn namespace_of<'a>(client: &'a Client, object: &'a Emitted) -> &'a str {
    object
        .metadata()
        .namespace
        .as_deref()
        .unwrap_or_else(|| client.default_namespace())
}

/// Server-side applies one object.
pub async fn apply(client: &Client, object: &Emitted) -> Result<(), kube::Error> {
    let api: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        namespace_of(client, object),
        &Kind::of(object).api_resource(),
    );
    api.patch(object.name(), &apply_params(), &Patch::Apply(object.to_json()))
        .await
        .map(|_| ())
}

/// Server-side applies every object the server serves, in order, whatever the others do; the
/// kinds it does not serve (once each) and the objects it refused.
pub async fn apply_all(client: &Client, objects: &[Emitted], served: &ServedKinds) -> Vec<Failure> {
    let mut failures = Vec::new();
    let mut not_served = BTreeSet::new();
    for object in objects {
        let kind = Kind::of(object);
        if !served.serves(kind) {
            if not_served.insert(kind) {
                failures.push(Failure::NotServed(kind));
            }
            continue;
        }
        match apply(client, object).await {
            Ok(()) => tracing::debug!(kind = kind.name(), name = object.name(), "applied"),
            Err(error) => {
                let reason = one_line(&error);
                tracing::warn!(kind = kind.name(), name = object.name(), %reason, "the API server refused an object");
                failures.push(Failure::Refused {
                    kind,
                    name: object.name().to_string(),
                    reason,
                });
            }
        }
    }
    failures
}

/// Which SessionCache a cleanup is for.
#[derive(Debug, Clone)]
pub struct Owner<'a> {
    pub name: &'a str,
    pub namespace: &'a str,
    /// The SessionCache's UID; an object is only deleted when an owner reference carries it.
    pub uid: &'a str,
}

/// An object deleted by [`cleanup`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deleted {
    pub kind: &'static str,
    pub name: String,
}

fn owned_by(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta, owner: &Owner<'_>) -> bool {
    meta.owner_references.iter().flatten().any(|r| {
        r.kind == <crate::crd::SessionCache as Resource>::kind(&()) && r.name == owner.name && r.uid == owner.uid
    })
}

async fn prune(client: &Client, owner: &Owner<'_>, keep: &BTreeSet<&str>, kind: Kind) -> Result<Vec<Deleted>, Error> {
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), owner.namespace, &kind.api_resource());
    let listed = api
        .list_metadata(&ListParams::default().labels(&names::owned_selector(owner.name)))
        .await
        .map_err(|source| Error::List {
            kind: kind.name(),
            namespace: owner.namespace.to_string(),
            source,
        })?;
    let mut deleted = Vec::new();
    for item in listed.items {
        let meta = &item.metadata;
        let Some(name) = meta.name.as_deref() else { continue };
        if keep.contains(name) || meta.deletion_timestamp.is_some() || !owned_by(meta, owner) {
            continue;
        }
        let params = DeleteParams {
            propagation_policy: Some(PropagationPolicy::Background),
            // Never delete a namesake created since the list.
            preconditions: meta.uid.clone().map(|uid| Preconditions {
                uid: Some(uid),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        match api.delete(name, &params).await {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.is_not_found() => {}
            Err(source) => {
                return Err(Error::Delete {
                    kind: kind.name(),
                    namespace: owner.namespace.to_string(),
                    name: name.to_string(),
                    source,
                })
            }
        }
        tracing::info!(
            kind = kind.name(),
            name,
            "deleted an object the SessionCache no longer needs"
        );
        deleted.push(Deleted {
            kind: kind.name(),
            name: name.to_string(),
        });
    }
    Ok(deleted)
}

/// Deletes what this SessionCache emitted earlier and `desired` no longer contains: for each
/// served kind of [`Kind::PRUNED`], a list by label selector, then a `DELETE` of each unwanted
/// item.
pub async fn cleanup(
    client: &Client,
    owner: &Owner<'_>,
    desired: &[Emitted],
    served: &ServedKinds,
) -> Result<Vec<Deleted>, Error> {
    let mut deleted = Vec::new();
    for kind in Kind::PRUNED.into_iter().filter(|k| served.serves(*k)) {
        let keep: BTreeSet<&str> = desired
            .iter()
            .filter(|o| Kind::of(o) == kind)
            .map(|o| o.name())
            .collect();
        deleted.extend(prune(client, owner, &keep, kind).await?);
    }
    Ok(deleted)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_never_pruned() {
        assert!(!Kind::PRUNED.contains(&Kind::Secret));
    }

    #[test]
    fn paths() {
        assert_eq!(
            Kind::StatefulSet.collection_path("isam"),
            "/apis/apps/v1/namespaces/isam/statefulsets"
        );
        assert_eq!(
            Kind::ConfigMap.collection_path("isam"),
            "/api/v1/namespaces/isam/configmaps"
        );
        assert_eq!(
            Kind::PodDisruptionBudget.collection_path("isam"),
            "/apis/policy/v1/namespaces/isam/poddisruptionbudgets"
        );
        assert_eq!(
            Kind::NetworkPolicy.collection_path("isam"),
            "/apis/networking.k8s.io/v1/namespaces/isam/networkpolicies"
        );
    }

    #[test]
    fn failures_read_as_one_line() {
        let failures = [
            Failure::NotServed(Kind::PodDisruptionBudget),
            Failure::Refused {
                kind: Kind::ConfigMap,
                name: "cache-client-web".into(),
                reason: "exceeded quota (HTTP 403 Forbidden)".into(),
            },
        ];
        assert_eq!(
            join(&failures),
            "this cluster does not serve policy/v1 PodDisruptionBudget; Kubernetes 1.21 or newer is needed; \
             cannot apply ConfigMap cache-client-web: exceeded quota (HTTP 403 Forbidden)"
        );
        assert!(!failures[0].is_refusal() && failures[1].is_refusal());
    }
}
