//! Apply: server-side apply of every emitted object with one field manager
//! ([`names::FIELD_MANAGER`], forced, so the operator's intent wins over drift), and deletion of
//! what this SessionCache emitted earlier but its current plan no longer needs (the Sentinel
//! StatefulSet after `redis.replicas` went down to 1, the ConfigMap of a removed client, …).
//!
//! Deletion only touches objects that carry this SessionCache's labels
//! ([`names::owned_selector`]) *and* an owner reference to it, and never Secrets: a generated
//! Secret holds credentials clients may already use; it goes away with the SessionCache through
//! its owner reference.

use std::collections::BTreeSet;
use std::fmt::Debug;

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::NamespaceResourceScope;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, Preconditions, PropagationPolicy};
use kube::core::PartialObjectMeta;
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;

use crate::build::Emitted;
use crate::names;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot apply {kind} {namespace}/{name}: {source}")]
    Apply {
        kind: &'static str,
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("cannot list {kind}s in {namespace}: {source}")]
    List {
        kind: &'static str,
        namespace: String,
        #[source]
        source: kube::Error,
    },
    #[error("cannot delete {kind} {namespace}/{name}: {source}")]
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
}

impl Kind {
    /// Kinds cleaned up when no longer planned, in deletion order (workloads first, so no pod
    /// is left without its configuration). Secrets are never among them.
    pub const PRUNED: [Kind; 6] = [
        Kind::StatefulSet,
        Kind::Deployment,
        Kind::PodDisruptionBudget,
        Kind::Service,
        Kind::ConfigMap,
        Kind::NetworkPolicy,
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
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Kind::StatefulSet => <StatefulSet as k8s_openapi::Resource>::KIND,
            Kind::Deployment => <Deployment as k8s_openapi::Resource>::KIND,
            Kind::Service => <Service as k8s_openapi::Resource>::KIND,
            Kind::ConfigMap => <ConfigMap as k8s_openapi::Resource>::KIND,
            Kind::Secret => <Secret as k8s_openapi::Resource>::KIND,
            Kind::PodDisruptionBudget => <PodDisruptionBudget as k8s_openapi::Resource>::KIND,
            Kind::NetworkPolicy => <NetworkPolicy as k8s_openapi::Resource>::KIND,
        }
    }

    /// The REST path of this kind's collection in a namespace, e.g.
    /// `/apis/apps/v1/namespaces/isam/statefulsets`.
    pub fn collection_path(self, namespace: &str) -> String {
        let ns = Some(namespace);
        match self {
            Kind::StatefulSet => StatefulSet::url_path(&(), ns),
            Kind::Deployment => Deployment::url_path(&(), ns),
            Kind::Service => Service::url_path(&(), ns),
            Kind::ConfigMap => ConfigMap::url_path(&(), ns),
            Kind::Secret => Secret::url_path(&(), ns),
            Kind::PodDisruptionBudget => PodDisruptionBudget::url_path(&(), ns),
            Kind::NetworkPolicy => NetworkPolicy::url_path(&(), ns),
        }
    }
}

/// The REST path of an emitted object, e.g. `/api/v1/namespaces/isam/configmaps/cache-client-web`.
pub fn object_path(object: &Emitted) -> String {
    let namespace = object.metadata().namespace.as_deref().unwrap_or("default");
    format!("{}/{}", Kind::of(object).collection_path(namespace), object.name())
}

/// The parameters of every apply: one field manager, forced.
pub fn apply_params() -> PatchParams {
    PatchParams::apply(names::FIELD_MANAGER).force()
}

async fn apply_typed<K>(client: &Client, namespace: &str, name: &str, body: &serde_json::Value) -> kube::Result<()>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()> + Clone + DeserializeOwned + Debug,
{
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    api.patch(name, &apply_params(), &Patch::Apply(body)).await.map(|_| ())
}

/// Server-side applies one object.
pub async fn apply(client: &Client, object: &Emitted) -> Result<(), Error> {
    let namespace = object
        .metadata()
        .namespace
        .clone()
        .unwrap_or_else(|| client.default_namespace().to_string());
    let name = object.name();
    let body = object.to_json();
    let result = match object {
        Emitted::StatefulSet(_) => apply_typed::<StatefulSet>(client, &namespace, name, &body).await,
        Emitted::Deployment(_) => apply_typed::<Deployment>(client, &namespace, name, &body).await,
        Emitted::Service(_) => apply_typed::<Service>(client, &namespace, name, &body).await,
        Emitted::ConfigMap(_) => apply_typed::<ConfigMap>(client, &namespace, name, &body).await,
        Emitted::Secret(_) => apply_typed::<Secret>(client, &namespace, name, &body).await,
        Emitted::PodDisruptionBudget(_) => apply_typed::<PodDisruptionBudget>(client, &namespace, name, &body).await,
        Emitted::NetworkPolicy(_) => apply_typed::<NetworkPolicy>(client, &namespace, name, &body).await,
    };
    result.map_err(|source| Error::Apply {
        kind: object.kind(),
        namespace,
        name: name.to_string(),
        source,
    })
}

/// Server-side applies every object, in order; stops at the first failure.
pub async fn apply_all(client: &Client, objects: &[Emitted]) -> Result<(), Error> {
    for object in objects {
        apply(client, object).await?;
        tracing::debug!(kind = object.kind(), name = object.name(), "applied");
    }
    Ok(())
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

async fn prune<K>(client: &Client, owner: &Owner<'_>, keep: &BTreeSet<&str>, kind: Kind) -> Result<Vec<Deleted>, Error>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()> + Clone + DeserializeOwned + Debug,
{
    let api: Api<K> = Api::namespaced(client.clone(), owner.namespace);
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
        let item: PartialObjectMeta<K> = item;
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
/// kind of [`Kind::PRUNED`], a list by label selector, then a `DELETE` of each unwanted item.
pub async fn cleanup(client: &Client, owner: &Owner<'_>, desired: &[Emitted]) -> Result<Vec<Deleted>, Error> {
    let mut deleted = Vec::new();
    for kind in Kind::PRUNED {
        let keep: BTreeSet<&str> = desired
            .iter()
            .filter(|o| Kind::of(o) == kind)
            .map(|o| o.name())
            .collect();
        let gone = match kind {
            Kind::StatefulSet => prune::<StatefulSet>(client, owner, &keep, kind).await?,
            Kind::Deployment => prune::<Deployment>(client, owner, &keep, kind).await?,
            Kind::Service => prune::<Service>(client, owner, &keep, kind).await?,
            Kind::ConfigMap => prune::<ConfigMap>(client, owner, &keep, kind).await?,
            Kind::PodDisruptionBudget => prune::<PodDisruptionBudget>(client, owner, &keep, kind).await?,
            Kind::NetworkPolicy => prune::<NetworkPolicy>(client, owner, &keep, kind).await?,
            Kind::Secret => unreachable!("Secrets are never pruned"),
        };
        deleted.extend(gone);
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
}
