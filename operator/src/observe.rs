//! Observe: read what a SessionCache refers to, as plain data for the later, pure steps.
//!
//! Before building: which Secrets the spec names (or the operator would generate) already exist,
//! so generated ones are created once and never regenerated, and missing user Secrets can be
//! reported. After applying: how far the Redis and Sentinel StatefulSets and the shim
//! Deployment have rolled out.

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::ListParams;
use kube::{Api, Client, ResourceExt};

use crate::api_error::one_line;
use crate::build::sidecar::{self, Placement, HASH_ANNOTATION, SIDECAR_LABEL};
use crate::build::Observed;
use crate::crd::SidecarCount;
use crate::crd::{ClientKind, SessionCache};
use crate::names;
use crate::validate::Plan;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read Secret {namespace}/{name}: {}", one_line(.source))]
    Secret {
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("cannot list the pods with a sidecar in {namespace}: {}", one_line(.source))]
    Pods {
        namespace: String,
        #[source]
        source: kube::Error,
    },
    #[error("cannot read {kind} {namespace}/{name}: {}", one_line(.source))]
    Workload {
        kind: &'static str,
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
}

/// A Secret the spec refers to: one the user names, or one the operator generates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretRef {
    /// The spec field that names it (or would name it).
    pub field: &'static str,
    pub name: String,
    /// The operator creates it when it does not exist.
    pub generated: bool,
}

/// Every Secret the spec refers to, in a fixed order (the order they are read in).
pub fn referenced_secrets(sc: &SessionCache) -> Vec<SecretRef> {
    let cache = sc.name_any();
    let redis = &sc.spec.redis;
    let security = &sc.spec.shim.security;
    let mut out = vec![
        match &redis.password_secret {
            Some(name) => SecretRef {
                field: "spec.redis.passwordSecret",
                name: name.clone(),
                generated: false,
            },
            None => SecretRef {
                field: "spec.redis.passwordSecret",
                name: names::redis_auth_secret(&cache),
                generated: true,
            },
        },
        match &security.basic_auth_secret {
            Some(name) => SecretRef {
                field: "spec.shim.security.basicAuthSecret",
                name: name.clone(),
                generated: false,
            },
            None => SecretRef {
                field: "spec.shim.security.basicAuthSecret",
                name: names::shim_auth_secret(&cache),
                generated: true,
            },
        },
    ];
    // The other Redis ACL users (build::acl), generated.
    let generated = |name: String| SecretRef {
        field: "spec.redis",
        name,
        generated: true,
    };
    out.push(generated(names::redis_replication_secret(&cache)));
    out.push(generated(names::redis_monitor_secret(&cache)));
    for client in &sc.spec.clients {
        if matches!(client.kind, ClientKind::WebSealRedis | ClientKind::Iag) {
            out.push(generated(names::client_redis_secret(&cache, &client.name)));
        }
    }
    // Sentinel runs with a replicated Redis only (as validate decides).
    if redis.replicas >= 2 {
        out.push(match &sc.spec.sentinel.password_secret {
            Some(name) => SecretRef {
                field: "spec.sentinel.passwordSecret",
                name: name.clone(),
                generated: false,
            },
            None => SecretRef {
                field: "spec.sentinel.passwordSecret",
                name: names::sentinel_auth_secret(&cache),
                generated: true,
            },
        });
    }
    if sc.spec.shim.encryption.mode() != crate::crd::EncryptionMode::Plain {
        out.push(match &sc.spec.shim.encryption.keys_secret {
            Some(name) => SecretRef {
                field: "spec.shim.encryption.keysSecret",
                name: name.clone(),
                generated: false,
            },
            None => SecretRef {
                field: "spec.shim.encryption.keysSecret",
                name: names::record_keys_secret(&cache),
                generated: true,
            },
        });
    }
    // (With an issuer, cert-manager writes the Secret: not one the user must create.)
    let users_own = redis.tls.enabled && redis.tls.issuer_ref.is_none();
    if let Some(name) = redis.tls.certificate_secret.as_ref().filter(|_| users_own) {
        out.push(SecretRef {
            field: "spec.redis.tls.certificateSecret",
            name: name.clone(),
            generated: false,
        });
    }
    if let Some(name) = &security.tls_secret {
        out.push(SecretRef {
            field: "spec.shim.security.tlsSecret",
            name: name.clone(),
            generated: false,
        });
    }
    if let Some(name) = &security.client_ca_secret {
        out.push(SecretRef {
            field: "spec.shim.security.clientCaSecret",
            name: name.clone(),
            generated: false,
        });
    }
    // The same Secret may be named twice (e.g. one Secret for TLS and the client CA).
    let mut seen = std::collections::BTreeSet::new();
    out.retain(|r| seen.insert(r.name.clone()));
    out
}

/// What observing the referenced Secrets found.
#[derive(Debug, Clone, Default)]
pub struct SecretsObserved {
    /// For the builders: which Secrets exist.
    pub observed: Observed,
    /// Secrets the user named that do not exist, with the field naming them.
    pub missing: Vec<SecretRef>,
}

/// Reads (`GET`, 404 = absent) every Secret the spec refers to.
pub async fn secrets(client: &Client, sc: &SessionCache) -> Result<SecretsObserved, Error> {
    let namespace = sc.namespace().unwrap_or_else(|| client.default_namespace().to_string());
    let api: Api<Secret> = Api::namespaced(client.clone(), &namespace);
    let mut out = SecretsObserved::default();
    for reference in referenced_secrets(sc) {
        let exists = api
            .get_metadata_opt(&reference.name)
            .await
            .map_err(|source| Error::Secret {
                namespace: namespace.clone(),
                name: reference.name.clone(),
                source,
            })?
            .is_some();
        if exists {
            out.observed.existing_secrets.insert(reference.name.clone());
        } else if !reference.generated {
            out.missing.push(reference);
        }
    }
    Ok(out)
}

/// Reads the Secrets of Redis TLS (their data: the certificate, and the generated CA's key).
pub async fn redis_tls(client: &Client, plan: &Plan) -> Result<crate::redis_tls::Found, Error> {
    let mut found = crate::redis_tls::Found::default();
    let Some(tls) = &plan.redis.tls else {
        return Ok(found);
    };
    let api: Api<Secret> = Api::namespaced(client.clone(), &plan.namespace);
    let read = |name: String| {
        let api = api.clone();
        async move {
            let secret = api.get_opt(&name).await.map_err(|source| Error::Secret {
                namespace: plan.namespace.clone(),
                name: name.clone(),
                source,
            })?;
            Ok::<_, Error>(secret.map(|s| crate::redis_tls::SecretContent {
                data: s.data.unwrap_or_default().into_iter().map(|(k, v)| (k, v.0)).collect(),
                annotations: s.metadata.annotations.unwrap_or_default(),
            }))
        }
    };
    found.certificate = read(tls.certificate_secret.clone()).await?;
    if tls.generate {
        found.issuer = read(names::redis_tls_issuer_secret(&plan.name)).await?;
    }
    Ok(found)
}

/// Reads the generated record key Secret when the operator rotates it.
pub async fn record_keys(client: &Client, plan: &Plan) -> Result<Option<crate::record_keys::Found>, Error> {
    let Some(encryption) = plan
        .shim
        .encryption
        .as_ref()
        .filter(|e| e.generate_keys && e.rotate_every.is_some())
    else {
        return Ok(None);
    };
    let api: Api<Secret> = Api::namespaced(client.clone(), &plan.namespace);
    let secret = api
        .get_opt(&encryption.keys_secret)
        .await
        .map_err(|source| Error::Secret {
            namespace: plan.namespace.clone(),
            name: encryption.keys_secret.clone(),
            source,
        })?;
    Ok(secret.map(|s| crate::record_keys::Found {
        file: s
            .data
            .as_ref()
            .and_then(|d| d.get("keys"))
            .map(|v| String::from_utf8_lossy(&v.0).into_owned())
            .unwrap_or_default(),
        annotations: s.metadata.annotations.unwrap_or_default(),
    }))
}

/// How far one workload has rolled out.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WorkloadState {
    /// Replicas the plan asks for.
    pub desired: i32,
    /// Pods ready.
    pub ready: i32,
    /// Pods running the current template.
    pub updated: i32,
    /// The workload exists and its controller has seen its latest generation.
    pub current: bool,
}

impl WorkloadState {
    /// Every desired pod is ready.
    pub fn is_ready(&self) -> bool {
        self.ready >= self.desired
    }

    /// The rollout of the current template has finished.
    pub fn is_rolled_out(&self) -> bool {
        self.current && self.updated >= self.desired && self.ready >= self.desired
    }

    pub fn from_statefulset(sts: Option<&StatefulSet>, desired: i32) -> Self {
        let Some(sts) = sts else {
            return Self {
                desired,
                ..Self::default()
            };
        };
        let status = sts.status.clone().unwrap_or_default();
        Self {
            desired,
            ready: status.ready_replicas.unwrap_or(0),
            updated: status.updated_replicas.unwrap_or(0),
            current: generation_observed(sts.metadata.generation, status.observed_generation),
        }
    }

    pub fn from_deployment(deploy: Option<&Deployment>, desired: i32) -> Self {
        let Some(deploy) = deploy else {
            return Self {
                desired,
                ..Self::default()
            };
        };
        let status = deploy.status.clone().unwrap_or_default();
        Self {
            desired,
            ready: status.ready_replicas.unwrap_or(0),
            updated: status.updated_replicas.unwrap_or(0),
            current: generation_observed(deploy.metadata.generation, status.observed_generation),
        }
    }
}

fn generation_observed(generation: Option<i64>, observed: Option<i64>) -> bool {
    match (generation, observed) {
        (Some(g), Some(o)) => o >= g,
        (None, _) => true,
        (Some(_), None) => false,
    }
}

/// The workloads of one SessionCache.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Readiness {
    pub redis: WorkloadState,
    /// Present when the plan has Sentinel.
    pub sentinel: Option<WorkloadState>,
    /// Absent in Sidecar mode: the shim runs in the proxies' pods.
    pub shim: Option<WorkloadState>,
    /// Sidecar mode: the pods with this cache's shim.
    pub sidecars: Option<SidecarCount>,
}

impl Readiness {
    fn all(&self) -> impl Iterator<Item = (&'static str, &WorkloadState)> {
        [
            Some((names::component::REDIS, &self.redis)),
            self.sentinel.as_ref().map(|s| (names::component::SENTINEL, s)),
            self.shim.as_ref().map(|s| (names::component::SHIM, s)),
        ]
        .into_iter()
        .flatten()
    }

    pub fn all_ready(&self) -> bool {
        self.all().all(|(_, w)| w.is_ready())
    }

    pub fn all_rolled_out(&self) -> bool {
        self.all().all(|(_, w)| w.is_rolled_out())
    }

    /// `redis 1/3, shim 0/2` for the components that are not (yet) ready.
    pub fn not_ready_summary(&self) -> String {
        self.all()
            .filter(|(_, w)| !w.is_ready())
            .map(|(name, w)| format!("{name} {}/{}", w.ready, w.desired))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Components whose rollout has not finished.
    pub fn rolling_out(&self) -> Vec<&'static str> {
        self.all()
            .filter(|(_, w)| !w.is_rolled_out())
            .map(|(name, _)| name)
            .collect()
    }
}

/// Reads the workloads the plan emitted (`GET`s of the Redis StatefulSet, the Sentinel
/// StatefulSet when planned, the shim Deployment; in Sidecar mode a list of the pods with the
/// shim, whose hash is compared with what `placement` would inject now).
pub async fn workloads(client: &Client, plan: &Plan, placement: Placement) -> Result<Readiness, Error> {
    let statefulsets: Api<StatefulSet> = Api::namespaced(client.clone(), &plan.namespace);
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &plan.namespace);
    let workload_error = |kind: &'static str, name: &str| {
        let namespace = plan.namespace.clone();
        let name = name.to_string();
        move |source| Error::Workload {
            kind,
            namespace,
            name,
            source,
        }
    };

    let redis_name = names::redis(&plan.name);
    let redis = statefulsets
        .get_opt(&redis_name)
        .await
        .map_err(workload_error("StatefulSet", &redis_name))?;
    let sentinel = match &plan.sentinel {
        Some(s) => {
            let name = names::sentinel(&plan.name);
            let sts = statefulsets
                .get_opt(&name)
                .await
                .map_err(workload_error("StatefulSet", &name))?;
            Some(WorkloadState::from_statefulset(sts.as_ref(), s.replicas))
        }
        None => None,
    };
    let shim = match plan.shim.sidecar {
        Some(_) => None,
        None => {
            let name = names::shim(&plan.name);
            let deployment = deployments
                .get_opt(&name)
                .await
                .map_err(workload_error("Deployment", &name))?;
            Some(WorkloadState::from_deployment(deployment.as_ref(), plan.shim.replicas))
        }
    };
    let sidecars = match plan.shim.sidecar {
        None => None,
        Some(_) => Some(sidecar_pods(client, plan, &sidecar::sidecar(plan, placement).hash).await?),
    };
    Ok(Readiness {
        redis: WorkloadState::from_statefulset(redis.as_ref(), plan.redis.replicas),
        sentinel,
        shim,
        sidecars,
    })
}

/// The pods the webhook gave this cache's shim (by the label it sets), and how many carry
/// another hash than what it would inject now.
async fn sidecar_pods(client: &Client, plan: &Plan, current: &str) -> Result<SidecarCount, Error> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), &plan.namespace);
    let listed = pods
        .list_metadata(&ListParams::default().labels(&format!("{SIDECAR_LABEL}={}", plan.name)))
        .await
        .map_err(|source| Error::Pods {
            namespace: plan.namespace.clone(),
            source,
        })?;
    let live: Vec<_> = listed
        .items
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .collect();
    let outdated = live
        .iter()
        .filter(|p| p.annotations().get(HASH_ANNOTATION).map(String::as_str) != Some(current))
        .count();
    Ok(SidecarCount::new(live.len() as i32, outdated as i32))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache(spec_yaml: &str) -> SessionCache {
        crate::fixtures::session_cache(spec_yaml, 1)
    }

    #[test]
    fn generated_and_named_secrets_are_referenced_once() {
        let refs = referenced_secrets(&cache("  {}"));
        assert_eq!(
            refs.iter().map(|r| (r.name.as_str(), r.generated)).collect::<Vec<_>>(),
            [
                ("cache-redis-auth", true),
                ("cache-shim-auth", true),
                ("cache-redis-replication-auth", true),
                ("cache-redis-monitor-auth", true)
            ]
        );
        let refs = referenced_secrets(&cache(
            "  redis: {replicas: 3}\n  clients: [{name: www, kind: WebSEALRedis}, {name: dsc, kind: WebSEALDSC}]",
        ));
        assert_eq!(
            refs[2..].iter().map(|r| r.name.as_str()).collect::<Vec<_>>(),
            [
                "cache-redis-replication-auth",
                "cache-redis-monitor-auth",
                "cache-client-www-redis-auth",
                "cache-sentinel-auth"
            ]
        );
        let refs = referenced_secrets(&cache(
            "  redis: {passwordSecret: pw}\n  shim: {security: {tlsSecret: tls, clientCaSecret: tls}}",
        ));
        assert_eq!(
            refs.iter()
                .map(|r| (r.field, r.name.as_str(), r.generated))
                .collect::<Vec<_>>(),
            [
                ("spec.redis.passwordSecret", "pw", false),
                ("spec.shim.security.basicAuthSecret", "cache-shim-auth", true),
                ("spec.redis", "cache-redis-replication-auth", true),
                ("spec.redis", "cache-redis-monitor-auth", true),
                ("spec.shim.security.tlsSecret", "tls", false),
            ]
        );
    }

    #[test]
    fn workload_state_from_status() {
        let sts: StatefulSet = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "cache-redis", "generation": 2},
            "status": {"replicas": 3, "readyReplicas": 3, "updatedReplicas": 1, "observedGeneration": 2}
        }))
        .unwrap();
        let w = WorkloadState::from_statefulset(Some(&sts), 3);
        assert!(w.is_ready() && !w.is_rolled_out());
        let missing = WorkloadState::from_deployment(None, 2);
        assert!(!missing.is_ready() && !missing.is_rolled_out());
        let readiness = Readiness {
            redis: w,
            sentinel: None,
            shim: Some(missing),
            sidecars: None,
        };
        assert_eq!(readiness.not_ready_summary(), "shim 0/2");
        assert_eq!(readiness.rolling_out(), ["redis", "shim"]);
    }
}
