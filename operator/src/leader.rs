//! Leader election through a `coordination.k8s.io/v1` Lease, so that of several operator
//! replicas exactly one reconciles.
//!
//! The algorithm is client-go's: every replica reads the Lease `redsess-operator` in the
//! operator's namespace; it is free when it does not exist (create it), has no holder, or has
//! not been renewed for its `leaseDurationSeconds` (15 s). Expiry is judged by *this* replica's
//! clock, from the moment it saw the Lease's record last change, never by comparing the
//! holder's `renewTime` with the local time, so clock skew between nodes cannot make two
//! leaders. Every write is a `create` (fails with 409 when another replica created it first)
//! or a `replace` carrying the `resourceVersion` that was read (fails with 409 when another
//! replica wrote in between): optimistic concurrency, safe with any number of replicas.
//!
//! The leader renews every 5 s. If it cannot renew for 10 s (the renew deadline, shorter than
//! the lease duration), or finds another holder, it has lost the lease: [`LeaderElector::hold`]
//! returns and the caller exits the process (non-zero, so Kubernetes restarts it as a
//! candidate). On a clean shutdown the leader releases the Lease so a standby takes over at once.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::PostParams;
use kube::{Api, Client};
use tokio::time::Instant;

use crate::http::Health;

pub const LEASE_NAME: &str = "redsess-operator";
pub const LEASE_DURATION: Duration = Duration::from_secs(15);
pub const RENEW_INTERVAL: Duration = Duration::from_secs(5);
/// The leader gives up when it could not renew for this long (< [`LEASE_DURATION`]).
pub const RENEW_DEADLINE: Duration = Duration::from_secs(10);
/// How often a standby looks at the Lease.
pub const RETRY_INTERVAL: Duration = Duration::from_secs(2);

/// This replica's identity: `POD_NAME`, else the host name with a random suffix.
pub fn identity() -> String {
    if let Ok(pod) = std::env::var("POD_NAME") {
        if !pod.is_empty() {
            return pod;
        }
    }
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "redsess-operator".into());
    format!("{host}_{:08x}", rand::random::<u32>())
}

/// The result of one election round.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    Leader,
    /// Another replica holds the Lease (its identity, when known).
    Standby(String),
}

/// What identifies a version of the Lease's record: a change means its holder is alive.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Record {
    holder: Option<String>,
    renew_time: Option<String>,
    transitions: Option<i32>,
}

impl Record {
    fn of(lease: &Lease) -> Self {
        let spec = lease.spec.clone().unwrap_or_default();
        Self {
            holder: spec.holder_identity.filter(|h| !h.is_empty()),
            renew_time: spec.renew_time.map(|t| t.0.to_string()),
            transitions: spec.lease_transitions,
        }
    }
}

/// What to do with a Lease that exists.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Decision {
    Renew,
    TakeOver,
    Wait(String),
}

fn decide(lease: &Lease, identity: &str, expired: bool) -> Decision {
    match Record::of(lease).holder {
        Some(holder) if holder == identity => Decision::Renew,
        Some(holder) if !expired => Decision::Wait(holder),
        _ => Decision::TakeOver,
    }
}

fn lease_duration(lease: &Lease) -> Duration {
    lease
        .spec
        .as_ref()
        .and_then(|s| s.lease_duration_seconds)
        .and_then(|s| u64::try_from(s).ok())
        .map(Duration::from_secs)
        .unwrap_or(LEASE_DURATION)
}

pub struct LeaderElector {
    api: Api<Lease>,
    identity: String,
    /// The Lease's record as last seen, and when it was first seen (local clock).
    observed: Option<(Record, Instant)>,
    /// When this replica last wrote the Lease as its holder.
    last_renewed: Option<Instant>,
}

impl LeaderElector {
    pub fn new(client: Client, namespace: &str, identity: String) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            identity,
            observed: None,
            last_renewed: None,
        }
    }

    pub fn identity(&self) -> &str {
        &self.identity
    }

    fn spec(&self, now: Timestamp, acquire_time: Option<MicroTime>, transitions: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(LEASE_DURATION.as_secs() as i32),
            acquire_time: Some(acquire_time.unwrap_or(MicroTime(now))),
            renew_time: Some(MicroTime(now)),
            lease_transitions: Some(transitions),
            ..LeaseSpec::default()
        }
    }

    /// Notes the record of a Lease just read; true when it has not changed for its duration.
    fn observe(&mut self, lease: &Lease) -> bool {
        let record = Record::of(lease);
        let now = Instant::now();
        match &self.observed {
            Some((seen, at)) if *seen == record => now.duration_since(*at) >= lease_duration(lease),
            _ => {
                self.observed = Some((record, now));
                false
            }
        }
    }

    /// One round: create, renew or take over the Lease, or find it held by another replica.
    /// A lost race (409 Conflict / AlreadyExists) is `Standby`, not an error.
    pub async fn try_acquire_or_renew(&mut self) -> Result<Role, kube::Error> {
        let now = Timestamp::now();
        let Some(lease) = self.api.get_opt(LEASE_NAME).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(LEASE_NAME.into()),
                    ..ObjectMeta::default()
                },
                spec: Some(self.spec(now, None, 0)),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(created) => Ok(self.won(&created)),
                Err(kube::Error::Api(s)) if s.is_already_exists() || s.is_conflict() => {
                    Ok(Role::Standby(String::new()))
                }
                Err(e) => Err(e),
            };
        };
        let expired = self.observe(&lease);
        let spec = lease.spec.clone().unwrap_or_default();
        let mut updated = lease.clone();
        match decide(&lease, &self.identity, expired) {
            Decision::Wait(holder) => return Ok(Role::Standby(holder)),
            Decision::Renew => {
                updated.spec = Some(self.spec(now, spec.acquire_time.clone(), spec.lease_transitions.unwrap_or(0)));
            }
            Decision::TakeOver => {
                let transitions = spec.lease_transitions.unwrap_or(0).saturating_add(1);
                updated.spec = Some(self.spec(now, None, transitions));
            }
        }
        // `updated` carries the resourceVersion read above: a concurrent write makes this a 409.
        match self.api.replace(LEASE_NAME, &PostParams::default(), &updated).await {
            Ok(written) => Ok(self.won(&written)),
            Err(kube::Error::Api(s)) if s.is_conflict() => Ok(Role::Standby(String::new())),
            Err(e) => Err(e),
        }
    }

    fn won(&mut self, lease: &Lease) -> Role {
        let now = Instant::now();
        self.observed = Some((Record::of(lease), now));
        self.last_renewed = Some(now);
        Role::Leader
    }

    /// Waits until this replica leads. While another replica leads, `health.standby` is set.
    pub async fn acquire(&mut self, health: &Health) {
        use std::sync::atomic::Ordering;
        loop {
            match self.try_acquire_or_renew().await {
                Ok(Role::Leader) => {
                    tracing::info!(identity = %self.identity, lease = LEASE_NAME, "became the leader");
                    health.standby.store(false, Ordering::SeqCst);
                    return;
                }
                Ok(Role::Standby(holder)) => {
                    if !health.standby.swap(true, Ordering::SeqCst) {
                        tracing::info!(%holder, "another replica leads; standing by");
                    }
                }
                Err(error) => tracing::warn!(
                    error = crate::api_error::one_line(&error),
                    "leader election: cannot read or write the Lease"
                ),
            }
            tokio::time::sleep(RETRY_INTERVAL).await;
        }
    }

    /// Renews the Lease every [`RENEW_INTERVAL`] while this replica leads; returns when the
    /// lease is lost (another holder, or no successful renewal within [`RENEW_DEADLINE`]).
    pub async fn hold(&mut self) -> LeadershipLost {
        loop {
            tokio::time::sleep(RENEW_INTERVAL).await;
            // A hanging API call must not keep this replica leading past the deadline.
            match tokio::time::timeout(RENEW_INTERVAL, self.try_acquire_or_renew()).await {
                Ok(Ok(Role::Leader)) => continue,
                Ok(Ok(Role::Standby(holder))) if !holder.is_empty() => {
                    return LeadershipLost(format!("the Lease is now held by {holder}"));
                }
                Ok(Ok(Role::Standby(_))) => tracing::warn!("leader election: lost a race renewing the Lease"),
                Ok(Err(error)) => tracing::warn!(
                    error = crate::api_error::one_line(&error),
                    "leader election: cannot renew the Lease"
                ),
                Err(_) => tracing::warn!("leader election: renewing the Lease timed out"),
            }
            let since = self.last_renewed.map(|t| t.elapsed()).unwrap_or(Duration::MAX);
            if since >= RENEW_DEADLINE {
                return LeadershipLost(format!("could not renew the Lease for {}s", since.as_secs()));
            }
        }
    }

    /// Gives the Lease up (clean shutdown): a standby takes over without waiting for expiry.
    pub async fn release(&mut self) {
        let Ok(Some(mut lease)) = self.api.get_opt(LEASE_NAME).await else {
            return;
        };
        if Record::of(&lease).holder.as_deref() != Some(self.identity.as_str()) {
            return;
        }
        let now = MicroTime(Timestamp::now());
        if let Some(spec) = lease.spec.as_mut() {
            spec.holder_identity = None;
            spec.lease_duration_seconds = Some(1);
            spec.renew_time = Some(now.clone());
            spec.acquire_time = Some(now);
        }
        match self.api.replace(LEASE_NAME, &PostParams::default(), &lease).await {
            Ok(_) => tracing::info!("released the Lease"),
            Err(error) => tracing::warn!(error = crate::api_error::one_line(&error), "cannot release the Lease"),
        }
    }
}

/// Why this replica stopped leading.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeadershipLost(pub String);

impl std::fmt::Display for LeadershipLost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{mock_client, Reply, Step};
    use http::Method;
    use serde_json::json;

    const PATH: &str = "/apis/coordination.k8s.io/v1/namespaces/ops/leases";

    fn lease(holder: &str, resource_version: &str, transitions: i32) -> serde_json::Value {
        json!({
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": LEASE_NAME, "namespace": "ops", "resourceVersion": resource_version},
            "spec": {
                "holderIdentity": holder,
                "leaseDurationSeconds": 15,
                "acquireTime": "2026-01-01T00:00:00.000000Z",
                "renewTime": "2026-01-01T00:00:05.000000Z",
                "leaseTransitions": transitions
            }
        })
    }

    #[test]
    fn decisions() {
        let held: Lease = serde_json::from_value(lease("a", "1", 0)).unwrap();
        assert_eq!(decide(&held, "a", false), Decision::Renew);
        assert_eq!(decide(&held, "b", false), Decision::Wait("a".into()));
        assert_eq!(decide(&held, "b", true), Decision::TakeOver);
        let free: Lease = serde_json::from_value(lease("", "1", 3)).unwrap();
        assert_eq!(decide(&free, "b", false), Decision::TakeOver);
    }

    #[tokio::test]
    async fn creates_the_lease_when_there_is_none() {
        let (client, server) = mock_client();
        let server = server.run(vec![
            Step::new(Method::GET, format!("{PATH}/{LEASE_NAME}")).reply(Reply::not_found()),
            Step::new(Method::POST, PATH)
                .check(|body| {
                    assert_eq!(body["spec"]["holderIdentity"], "me");
                    assert_eq!(body["spec"]["leaseDurationSeconds"], 15);
                    assert_eq!(body["spec"]["leaseTransitions"], 0);
                })
                .reply(Reply::EchoWith(json!({"metadata": {"resourceVersion": "1"}}))),
        ]);
        let mut elector = LeaderElector::new(client, "ops", "me".into());
        assert_eq!(elector.try_acquire_or_renew().await.unwrap(), Role::Leader);
        drop(elector);
        server.finish().await;
    }

    #[tokio::test]
    async fn waits_while_another_replica_renews_and_takes_over_after_expiry() {
        let (client, server) = mock_client();
        let server = server.run(vec![
            Step::new(Method::GET, format!("{PATH}/{LEASE_NAME}")).reply(Reply::Json(lease("other", "7", 2))),
            Step::new(Method::GET, format!("{PATH}/{LEASE_NAME}")).reply(Reply::Json(lease("other", "7", 2))),
            Step::new(Method::PUT, format!("{PATH}/{LEASE_NAME}"))
                .check(|body| {
                    assert_eq!(body["metadata"]["resourceVersion"], "7", "optimistic concurrency");
                    assert_eq!(body["spec"]["holderIdentity"], "me");
                    assert_eq!(body["spec"]["leaseTransitions"], 3);
                })
                .reply(Reply::Echo),
        ]);
        let mut elector = LeaderElector::new(client, "ops", "me".into());
        assert_eq!(
            elector.try_acquire_or_renew().await.unwrap(),
            Role::Standby("other".into())
        );
        // The same record, seen first more than a lease duration ago: the holder is gone.
        let (record, _) = elector.observed.clone().unwrap();
        let long_ago = Instant::now()
            .checked_sub(LEASE_DURATION + Duration::from_secs(1))
            .unwrap();
        elector.observed = Some((record, long_ago));
        assert_eq!(elector.try_acquire_or_renew().await.unwrap(), Role::Leader);
        drop(elector);
        server.finish().await;
    }

    #[tokio::test]
    async fn renews_its_own_lease_and_loses_races_gracefully() {
        let (client, server) = mock_client();
        let server = server.run(vec![
            Step::new(Method::GET, format!("{PATH}/{LEASE_NAME}")).reply(Reply::Json(lease("me", "3", 1))),
            Step::new(Method::PUT, format!("{PATH}/{LEASE_NAME}"))
                .check(|body| {
                    assert_eq!(body["metadata"]["resourceVersion"], "3");
                    assert_eq!(body["spec"]["holderIdentity"], "me");
                    assert_eq!(body["spec"]["leaseTransitions"], 1);
                    assert_eq!(body["spec"]["acquireTime"], "2026-01-01T00:00:00.000000Z");
                    assert_ne!(body["spec"]["renewTime"], "2026-01-01T00:00:05.000000Z");
                })
                .reply(Reply::Echo),
            Step::new(Method::GET, format!("{PATH}/{LEASE_NAME}")).reply(Reply::Json(lease("me", "4", 1))),
            Step::new(Method::PUT, format!("{PATH}/{LEASE_NAME}")).reply(Reply::conflict()),
        ]);
        let mut elector = LeaderElector::new(client, "ops", "me".into());
        assert_eq!(elector.try_acquire_or_renew().await.unwrap(), Role::Leader);
        assert_eq!(
            elector.try_acquire_or_renew().await.unwrap(),
            Role::Standby(String::new())
        );
        drop(elector);
        server.finish().await;
    }
}
