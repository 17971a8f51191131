//! Status: what the operator reports on a SessionCache, computed by a pure function from the
//! reconcile's outcome, the previous status and what was observed; written with a server-side
//! apply patch of the status subresource.
//!
//! Conditions:
//! - `Available`: every component (Redis, Sentinel when replicated, shim) has all its desired
//!   pods ready;
//! - `Progressing`: a rollout is under way (a workload's controller has not yet seen its new
//!   generation, or pods of the current template are missing or not ready);
//! - `Degraded`: the operator cannot do what the spec asks: `InvalidSpec` (the message names the
//!   field), `UnreadableSpec` (the object does not read as a SessionCache: the field and why),
//!   `ApplyFailed` (each refused object: kind, name, the server's reason), `KindNotServed` (the
//!   cluster lacks an API version the cache needs), `SecretMissing` (a Secret the spec names
//!   does not exist). The message is one line.
//!
//! Ready counts and endpoints are what was observed, whatever `Degraded` says.
//!
//! A condition's `lastTransitionTime` moves only when its status changes.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{ApiResource, DynamicObject, Patch, PatchParams};
use kube::{Api, Client, ResourceExt};

use crate::api_error::one_line;
use crate::apply::Failure;
use crate::build;
use crate::crd::{Endpoints, ReadyCount, SessionCache, SessionCacheStatus};
use crate::names;
use crate::observe::{Readiness, SecretRef};
use crate::validate::{Plan, ValidationError};

pub const AVAILABLE: &str = "Available";
pub const PROGRESSING: &str = "Progressing";
pub const DEGRADED: &str = "Degraded";

/// Condition reasons.
pub mod reason {
    pub const ALL_READY: &str = "AllReady";
    pub const NOT_READY: &str = "ComponentsNotReady";
    pub const ROLLING_OUT: &str = "RollingOut";
    pub const ROLLOUT_COMPLETE: &str = "RolloutComplete";
    pub const RECONCILED: &str = "Reconciled";
    pub const INVALID_SPEC: &str = "InvalidSpec";
    pub const APPLY_FAILED: &str = "ApplyFailed";
    pub const NOT_SERVED: &str = "KindNotServed";
    pub const UNREADABLE: &str = "UnreadableSpec";
    pub const SECRET_MISSING: &str = "SecretMissing";
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot write the status of SessionCache {namespace}/{name}: {}", one_line(.source))]
    Patch {
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
}

/// How a reconcile ended, as far as the status is concerned.
#[derive(Debug, Clone, Copy)]
pub enum Outcome<'a> {
    /// The spec failed validation: nothing was applied.
    Invalid(&'a ValidationError),
    /// The object does not read as a SessionCache (the message names the field): nothing was
    /// applied.
    Unreadable(&'a str),
    /// The plan was applied, as far as the server took it, and the workloads observed.
    Applied {
        plan: &'a Plan,
        readiness: &'a Readiness,
        /// Secrets the spec names that do not exist.
        missing_secrets: &'a [SecretRef],
        /// What the server did not take.
        failures: &'a [Failure],
    },
}

/// Where clients connect, for the status.
pub fn endpoints(plan: &Plan) -> Endpoints {
    Endpoints {
        shim: Some(build::shim::dsc_url(plan)),
        redis: format!(
            "{}:{}",
            names::service_host(&names::redis(&plan.name), &plan.namespace),
            names::REDIS_PORT
        ),
        sentinel: build::shim::sentinel_address(plan)
            .map(|address| format!("{address}/{}", names::SENTINEL_PRIMARY_NAME)),
    }
}

/// Client name → SHA-256 of its configuration fragment.
pub fn client_config_hashes(plan: &Plan) -> BTreeMap<String, String> {
    plan.clients
        .iter()
        .map(|c| {
            let (_, content) = build::client_config::fragment(plan, c);
            (c.name.clone(), build::client_config::fragment_hash(&content))
        })
        .collect()
}

/// Sets one condition, keeping the previous `lastTransitionTime` unless the status changed.
fn condition(
    previous: &[Condition],
    type_: &str,
    status: bool,
    reason: &str,
    message: String,
    generation: Option<i64>,
    now: Timestamp,
) -> Condition {
    let status = if status { "True" } else { "False" }.to_string();
    let last_transition_time = previous
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or(Time(now));
    Condition {
        type_: type_.into(),
        status,
        reason: reason.into(),
        message,
        observed_generation: generation,
        last_transition_time,
    }
}

fn find<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// The condition of `type_` from `previous`, or a new `False` one when there was none.
fn kept_or(
    previous: &[Condition],
    type_: &str,
    reason: &str,
    message: &str,
    generation: Option<i64>,
    now: Timestamp,
) -> Condition {
    find(previous, type_)
        .cloned()
        .unwrap_or_else(|| condition(previous, type_, false, reason, message.into(), generation, now))
}

/// Whether a condition of `type_` is `True`.
pub fn is_true(status: Option<&SessionCacheStatus>, type_: &str) -> bool {
    status
        .and_then(|s| find(&s.conditions, type_))
        .is_some_and(|c| c.status == "True")
}

/// The reason of the condition of `type_`, if there is one.
pub fn reason_of<'a>(status: Option<&'a SessionCacheStatus>, type_: &str) -> Option<&'a str> {
    status
        .and_then(|s| find(&s.conditions, type_))
        .map(|c| c.reason.as_str())
}

/// The reason and message of `new`'s `Degraded` condition when it became true or its message
/// changed since `previous`: what deserves a Warning event (once, not at every retry).
pub fn newly_degraded<'a>(
    previous: Option<&SessionCacheStatus>,
    new: &'a SessionCacheStatus,
) -> Option<(&'a str, &'a str)> {
    let now = find(&new.conditions, DEGRADED).filter(|c| c.status == "True")?;
    let before = previous.and_then(|p| find(&p.conditions, DEGRADED));
    match before {
        Some(b) if b.status == "True" && b.message == now.message => None,
        _ => Some((now.reason.as_str(), now.message.as_str())),
    }
}

/// `spec.shim.security.tlsSecret: Secret tls does not exist; …`
pub fn missing_secrets_message(missing: &[SecretRef]) -> String {
    missing
        .iter()
        .map(|s| format!("{}: Secret {} does not exist", s.field, s.name))
        .collect::<Vec<_>>()
        .join("; ")
}

/// The conditions when nothing was applied because the spec is unusable (`why`, `message`).
fn not_applied(
    prev: &[Condition],
    why: &str,
    lead: &str,
    message: &str,
    generation: Option<i64>,
    now: Timestamp,
) -> Vec<Condition> {
    let kept = format!("{lead}: {message}; the previous configuration stays in place");
    vec![
        kept_or(prev, AVAILABLE, why, &kept, generation, now),
        condition(prev, PROGRESSING, false, why, kept.clone(), generation, now),
        condition(prev, DEGRADED, true, why, message.to_string(), generation, now),
    ]
}

/// The status after a reconcile of the object at `generation`.
pub fn compute(
    generation: Option<i64>,
    previous: Option<&SessionCacheStatus>,
    outcome: Outcome<'_>,
    now: Timestamp,
) -> SessionCacheStatus {
    let previous = previous.cloned().unwrap_or_default();
    let prev = previous.conditions.as_slice();
    let mut status = SessionCacheStatus {
        observed_generation: generation,
        ..previous.clone()
    };
    match outcome {
        Outcome::Invalid(error) => {
            status.conditions = not_applied(
                prev,
                reason::INVALID_SPEC,
                "invalid spec",
                &error.to_string(),
                generation,
                now,
            );
        }
        Outcome::Unreadable(message) => {
            status.conditions = not_applied(prev, reason::UNREADABLE, "unreadable spec", message, generation, now);
        }
        Outcome::Applied {
            plan,
            readiness,
            missing_secrets,
            failures,
        } => {
            let available = if readiness.all_ready() {
                condition(
                    prev,
                    AVAILABLE,
                    true,
                    reason::ALL_READY,
                    "every component has all its pods ready".into(),
                    generation,
                    now,
                )
            } else {
                condition(
                    prev,
                    AVAILABLE,
                    false,
                    reason::NOT_READY,
                    format!("not ready: {}", readiness.not_ready_summary()),
                    generation,
                    now,
                )
            };
            let rolling = readiness.rolling_out();
            let progressing = if rolling.is_empty() {
                condition(
                    prev,
                    PROGRESSING,
                    false,
                    reason::ROLLOUT_COMPLETE,
                    "every component runs the current configuration".into(),
                    generation,
                    now,
                )
            } else {
                condition(
                    prev,
                    PROGRESSING,
                    true,
                    reason::ROLLING_OUT,
                    format!("rolling out: {}", rolling.join(", ")),
                    generation,
                    now,
                )
            };
            let mut problems: Vec<String> = failures.iter().map(Failure::to_string).collect();
            if !missing_secrets.is_empty() {
                problems.push(missing_secrets_message(missing_secrets));
            }
            let degraded = if problems.is_empty() {
                condition(
                    prev,
                    DEGRADED,
                    false,
                    reason::RECONCILED,
                    "the spec was applied".into(),
                    generation,
                    now,
                )
            } else {
                let why = if failures.iter().any(Failure::is_refusal) {
                    reason::APPLY_FAILED
                } else if !failures.is_empty() {
                    reason::NOT_SERVED
                } else {
                    reason::SECRET_MISSING
                };
                condition(prev, DEGRADED, true, why, problems.join("; "), generation, now)
            };
            status.conditions = vec![available, progressing, degraded];
            status.redis = Some(ReadyCount::new(readiness.redis.ready, readiness.redis.desired));
            status.sentinel = readiness.sentinel.as_ref().map(|s| ReadyCount::new(s.ready, s.desired));
            status.shim = readiness.shim.as_ref().map(|s| ReadyCount::new(s.ready, s.desired));
            status.sidecars = readiness.sidecars.clone();
            status.endpoints = Some(endpoints(plan));
            status.client_config_hashes = client_config_hashes(plan);
        }
    }
    status
}

/// The server-side apply patch of the status subresource.
pub fn patch_body(status: &SessionCacheStatus) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": <SessionCache as kube::Resource>::api_version(&()),
        "kind": <SessionCache as kube::Resource>::kind(&()),
        "status": status,
    })
}

/// Writes the status (server-side apply, the operator's field manager, forced). Through the
/// dynamic API, so that an object which does not read as a SessionCache can be reported on too.
pub async fn write(client: &Client, object: &impl ResourceExt, status: &SessionCacheStatus) -> Result<(), Error> {
    let namespace = object
        .namespace()
        .unwrap_or_else(|| client.default_namespace().to_string());
    let name = object.name_any();
    let api: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), &namespace, &ApiResource::erase::<SessionCache>(&()));
    api.patch_status(
        &name,
        &PatchParams::apply(names::FIELD_MANAGER).force(),
        &Patch::Apply(patch_body(status)),
    )
    .await
    .map(|_| ())
    .map_err(|source| Error::Patch {
        namespace,
        name,
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observe::WorkloadState;
    use crate::validate::validate;

    fn cache(spec_yaml: &str) -> SessionCache {
        crate::fixtures::session_cache(spec_yaml, 3)
    }

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(1_750_000_000 + seconds).unwrap()
    }

    fn state(desired: i32, ready: i32) -> WorkloadState {
        WorkloadState {
            desired,
            ready,
            updated: ready,
            current: true,
        }
    }

    fn readiness(redis_ready: i32, shim_ready: i32) -> Readiness {
        Readiness {
            redis: state(1, redis_ready),
            sentinel: None,
            shim: Some(state(2, shim_ready)),
            sidecars: None,
        }
    }

    fn cond<'a>(s: &'a SessionCacheStatus, type_: &str) -> &'a Condition {
        find(&s.conditions, type_).unwrap()
    }

    fn applied(
        plan: &Plan,
        r: &Readiness,
        previous: Option<&SessionCacheStatus>,
        now: Timestamp,
    ) -> SessionCacheStatus {
        compute(
            Some(3),
            previous,
            Outcome::Applied {
                plan,
                readiness: r,
                missing_secrets: &[],
                failures: &[],
            },
            now,
        )
    }

    #[test]
    fn first_status_while_rolling_out() {
        let plan = validate(&cache("  clients: [{name: web, kind: WebSEALDSC}]")).unwrap();
        let s = applied(&plan, &readiness(0, 0), None, at(0));
        assert_eq!(s.observed_generation, Some(3));
        assert_eq!(cond(&s, AVAILABLE).status, "False");
        assert_eq!(cond(&s, AVAILABLE).reason, reason::NOT_READY);
        assert_eq!(cond(&s, AVAILABLE).message, "not ready: redis 0/1, shim 0/2");
        assert_eq!(cond(&s, PROGRESSING).status, "True");
        assert_eq!(cond(&s, DEGRADED).status, "False");
        assert!(s.conditions.iter().all(|c| c.observed_generation == Some(3)));
        assert_eq!(s.redis, Some(ReadyCount::new(0, 1)));
        assert_eq!(s.shim.as_ref().unwrap().summary, "0/2");
        assert_eq!(s.sentinel, None);
        let endpoints = s.endpoints.as_ref().unwrap();
        assert_eq!(endpoints.redis, "cache-redis.isam.svc:6379");
        assert_eq!(endpoints.shim.as_deref(), Some(build::shim::dsc_url(&plan).as_str()));
        assert_eq!(s.client_config_hashes.keys().collect::<Vec<_>>(), ["web"]);
        let (_, content) = build::client_config::fragment(&plan, &plan.clients[0]);
        assert_eq!(
            s.client_config_hashes["web"],
            build::client_config::fragment_hash(&content)
        );
    }

    #[test]
    fn transition_time_moves_only_when_the_status_changes() {
        let plan = validate(&cache("  {}")).unwrap();
        let first = applied(&plan, &readiness(0, 0), None, at(0));
        // Still not ready, other counts: no condition changes status.
        let second = applied(&plan, &readiness(1, 0), Some(&first), at(10));
        for type_ in [AVAILABLE, PROGRESSING, DEGRADED] {
            assert_eq!(
                cond(&second, type_).last_transition_time,
                Time(at(0)),
                "{type_} kept its time"
            );
        }
        assert_eq!(cond(&second, AVAILABLE).message, "not ready: shim 0/2");
        // Everything ready: Available and Progressing change, Degraded does not.
        let third = applied(&plan, &readiness(1, 2), Some(&second), at(20));
        assert_eq!(cond(&third, AVAILABLE).status, "True");
        assert_eq!(cond(&third, AVAILABLE).last_transition_time, Time(at(20)));
        assert_eq!(cond(&third, PROGRESSING).status, "False");
        assert_eq!(cond(&third, PROGRESSING).last_transition_time, Time(at(20)));
        assert_eq!(cond(&third, DEGRADED).last_transition_time, Time(at(0)));
        // Unchanged again.
        let fourth = applied(&plan, &readiness(1, 2), Some(&third), at(30));
        assert_eq!(cond(&fourth, AVAILABLE).last_transition_time, Time(at(20)));
    }

    #[test]
    fn invalid_spec_is_degraded_and_names_the_field() {
        let plan = validate(&cache("  {}")).unwrap();
        let good = applied(&plan, &readiness(1, 2), None, at(0));
        let error = validate(&cache("  shim: {mode: Sidecar, sidecar: {port: 8443}}")).unwrap_err();
        let s = compute(Some(4), Some(&good), Outcome::Invalid(&error), at(50));
        assert_eq!(s.observed_generation, Some(4));
        let degraded = cond(&s, DEGRADED);
        assert_eq!(
            (degraded.status.as_str(), degraded.reason.as_str()),
            ("True", "InvalidSpec")
        );
        assert!(
            degraded.message.starts_with("spec.shim.sidecar.port: "),
            "{}",
            degraded.message
        );
        assert_eq!(degraded.last_transition_time, Time(at(50)));
        // What runs keeps running: Available as before, with its time; counts kept.
        assert_eq!(cond(&s, AVAILABLE), cond(&good, AVAILABLE));
        assert_eq!(cond(&s, PROGRESSING).status, "False");
        assert_eq!(s.shim, good.shim);
        assert_eq!(s.endpoints, good.endpoints);
    }

    #[test]
    fn invalid_spec_without_history_is_not_available() {
        let error = validate(&cache("  shim: {mode: Sidecar, sidecar: {port: 8443}}")).unwrap_err();
        let s = compute(Some(1), None, Outcome::Invalid(&error), at(0));
        assert_eq!(cond(&s, AVAILABLE).status, "False");
        assert_eq!(cond(&s, AVAILABLE).reason, reason::INVALID_SPEC);
        assert_eq!(s.redis, None);
    }

    #[test]
    fn refused_objects_are_degraded_and_counts_still_observed() {
        let plan = validate(&cache("  {}")).unwrap();
        let failures = [
            Failure::NotServed(crate::apply::Kind::PodDisruptionBudget),
            Failure::Refused {
                kind: crate::apply::Kind::StatefulSet,
                name: "cache-redis".into(),
                reason: "forbidden (HTTP 403 Forbidden)".into(),
            },
        ];
        let s = compute(
            Some(3),
            None,
            Outcome::Applied {
                plan: &plan,
                readiness: &readiness(1, 1),
                missing_secrets: &[],
                failures: &failures,
            },
            at(0),
        );
        assert_eq!(cond(&s, DEGRADED).reason, reason::APPLY_FAILED);
        assert_eq!(cond(&s, DEGRADED).status, "True");
        assert_eq!(
            cond(&s, DEGRADED).message,
            "this cluster does not serve policy/v1 PodDisruptionBudget; Kubernetes 1.21 or newer is needed; \
             cannot apply StatefulSet cache-redis: forbidden (HTTP 403 Forbidden)"
        );
        // The printer columns show what was observed, Degraded or not.
        assert_eq!(s.redis, Some(ReadyCount::new(1, 1)));
        assert_eq!(s.shim, Some(ReadyCount::new(1, 2)));
        assert!(s.endpoints.is_some());

        let only_not_served = compute(
            Some(3),
            Some(&s),
            Outcome::Applied {
                plan: &plan,
                readiness: &readiness(1, 1),
                missing_secrets: &[],
                failures: &failures[..1],
            },
            at(5),
        );
        assert_eq!(cond(&only_not_served, DEGRADED).reason, reason::NOT_SERVED);
        assert_eq!(
            cond(&only_not_served, DEGRADED).last_transition_time,
            Time(at(0)),
            "still Degraded: no transition"
        );

        let recovered = applied(&plan, &readiness(1, 2), Some(&s), at(5));
        assert_eq!(cond(&recovered, DEGRADED).status, "False");
        assert_eq!(cond(&recovered, DEGRADED).last_transition_time, Time(at(5)));

        let missing = [SecretRef {
            field: "spec.shim.security.tlsSecret",
            name: "tls".into(),
            generated: false,
        }];
        let s = compute(
            Some(3),
            None,
            Outcome::Applied {
                plan: &plan,
                readiness: &readiness(1, 0),
                missing_secrets: &missing,
                failures: &[],
            },
            at(0),
        );
        assert_eq!(cond(&s, DEGRADED).reason, reason::SECRET_MISSING);
        assert_eq!(
            cond(&s, DEGRADED).message,
            "spec.shim.security.tlsSecret: Secret tls does not exist"
        );
    }

    #[test]
    fn an_unreadable_object_is_degraded_naming_the_field() {
        let s = compute(
            Some(2),
            None,
            Outcome::Unreadable("spec.redis.replicas: invalid type: string \"three\", expected i32"),
            at(0),
        );
        assert_eq!(cond(&s, DEGRADED).reason, reason::UNREADABLE);
        assert!(cond(&s, DEGRADED).message.starts_with("spec.redis.replicas: "));
        assert_eq!(cond(&s, AVAILABLE).status, "False");
        assert!(s.conditions.iter().all(|c| !c.message.contains('\n')));
    }

    #[test]
    fn sentinel_endpoint_names_the_primary() {
        let plan = validate(&cache("  redis: {replicas: 3}")).unwrap();
        let r = Readiness {
            redis: state(3, 3),
            sentinel: Some(state(3, 2)),
            shim: Some(state(2, 2)),
            sidecars: None,
        };
        let s = applied(&plan, &r, None, at(0));
        assert_eq!(
            s.endpoints.as_ref().unwrap().sentinel.as_deref(),
            Some("cache-sentinel.isam.svc:26379/redsess")
        );
        assert_eq!(s.sentinel, Some(ReadyCount::new(2, 3)));
        assert_eq!(cond(&s, AVAILABLE).status, "False");
    }

    #[test]
    fn patch_body_is_a_typed_apply_of_the_status() {
        let body = patch_body(&SessionCacheStatus {
            observed_generation: Some(2),
            ..Default::default()
        });
        assert_eq!(body["apiVersion"], "redsess.io/v1alpha1");
        assert_eq!(body["kind"], "SessionCache");
        assert_eq!(body["status"]["observedGeneration"], 2);
    }
}
