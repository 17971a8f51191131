//! The controller: one reconcile is the pipeline observe → validate → build → apply → cleanup →
//! observe workloads → status, each step its own module and error type.
//!
//! - SessionCaches are watched as untyped objects and read into the typed spec per reconcile,
//!   so one object that does not deserialize (written before a schema change, or with the
//!   schema off) is reported on that object (`Degraded`/`UnreadableSpec`, naming the field, and
//!   a Warning event) and never stops the watch for the others.
//! - An invalid spec is not an error: it becomes `Degraded`/`InvalidSpec` (the message names the
//!   field) and a Warning event, and the object is looked at again in 5 minutes (or as soon as
//!   its spec changes), never in a hot loop.
//! - Every object is applied even when the server refuses some: the refusals (and kinds the
//!   cluster does not serve, found once at start) are reported in `Degraded`; refusals are
//!   errors for [`error_policy`]: a failure metric with a reason label, and a retry with
//!   exponential backoff per object (5 s doubling to 5 min). A Warning event goes out when
//!   `Degraded` changes, not at every retry.
//! - The primary watch only passes changes of `metadata.generation` (spec changes), so the
//!   operator's own status writes do not trigger reconciles; changes of the owned objects
//!   (StatefulSets becoming ready, a deleted Service, …) do.
//! - Every reconcile runs in a tracing span naming the namespace and the cache.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use kube::api::{ApiResource, DynamicObject};
use kube::runtime::controller::{Action, Config as ControllerConfig, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::store::Writer;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{predicates, watcher, WatchStreamExt};
use kube::{Api, Client, Resource, ResourceExt};
use tracing::Instrument;

use crate::apply::{self, Failure, Kind};
use crate::build;
use crate::build::sidecar::{Placement, SIDECAR_LABEL};
use crate::crd::{SessionCache, SessionCacheStatus};
use crate::discovery::{self, ServedKinds};
use crate::http;
use crate::metrics::Metrics;
use crate::names;
use crate::observe;
use crate::record_keys;
use crate::redis_tls;
use crate::status::{self, Outcome};
use crate::validate::{validate, Plan, Platform, ValidationError};

/// How soon an invalid spec is looked at again (its next change triggers a reconcile anyway).
pub const INVALID_SPEC_REQUEUE: Duration = Duration::from_secs(5 * 60);
/// Periodic re-reconcile of a healthy object, in case a watch event was missed.
pub const RESYNC: Duration = Duration::from_secs(10 * 60);
/// Re-reconcile while a Secret the spec names is missing (user Secrets are not watched).
pub const MISSING_SECRET_REQUEUE: Duration = Duration::from_secs(60);
/// First retry after an error; doubles per consecutive failure up to [`BACKOFF_MAX`].
pub const BACKOFF_START: Duration = Duration::from_secs(5);
pub const BACKOFF_MAX: Duration = Duration::from_secs(5 * 60);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Observe(#[from] observe::Error),
    #[error(transparent)]
    Apply(apply::Error),
    #[error("cleanup: {0}")]
    Cleanup(apply::Error),
    #[error(transparent)]
    Status(#[from] status::Error),
    #[error("SessionCache {0} has no UID yet")]
    MissingUid(String),
    #[error("cannot make the Redis TLS certificate: {0}")]
    KeyMaterial(rcgen::Error),
}

impl Error {
    /// The `reason` label of `redsess_operator_reconcile_failures_total`.
    pub fn metric_reason(&self) -> &'static str {
        match self {
            Error::Observe(_) => "observe",
            Error::Apply(_) => "apply",
            Error::Cleanup(_) => "cleanup",
            Error::Status(_) => "status",
            Error::MissingUid(_) => "missing_uid",
            Error::KeyMaterial(_) => "key_material",
        }
    }
}

/// What every reconcile shares.
pub struct Context {
    pub client: Client,
    pub metrics: Arc<Metrics>,
    pub recorder: Recorder,
    /// Consecutive failures per object UID, for [`error_policy`]'s backoff.
    failures: Mutex<HashMap<String, u32>>,
    /// What the emitted pods run on (pod security differs).
    pub platform: Platform,
    /// The emitted kinds this cluster serves.
    pub served: ServedKinds,
    /// Where the webhook puts the shim on this cluster (for outdated-sidecar counts).
    pub placement: Placement,
}

impl Context {
    pub fn new(client: Client, metrics: Arc<Metrics>, reporter: Reporter) -> Self {
        Self {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            metrics,
            failures: Mutex::new(HashMap::new()),
            platform: Platform::default(),
            served: ServedKinds::default(),
            placement: Placement::Native,
        }
    }

    /// The same context for pods on `platform`.
    pub fn on(mut self, platform: Platform) -> Self {
        self.platform = platform;
        self
    }

    /// The same context for a cluster that serves only `served`, placing sidecars so.
    pub fn serving(mut self, served: ServedKinds, placement: Placement) -> Self {
        self.served = served;
        self.placement = placement;
        self
    }

    fn key(object: &impl ResourceExt) -> String {
        object
            .uid()
            .unwrap_or_else(|| format!("{}/{}", object.namespace().unwrap_or_default(), object.name_any()))
    }

    /// The delay before the next retry of `object`, counting this failure.
    pub fn next_backoff(&self, object: &impl ResourceExt) -> Duration {
        let mut failures = self.failures.lock().expect("backoff map lock");
        let n = failures.entry(Self::key(object)).or_insert(0);
        let delay = backoff_delay(*n);
        *n = n.saturating_add(1);
        delay
    }

    fn reset_backoff(&self, object: &impl ResourceExt) {
        self.failures
            .lock()
            .expect("backoff map lock")
            .remove(&Self::key(object));
    }

    async fn publish(&self, object: &k8s_openapi::api::core::v1::ObjectReference, event: Event) {
        if let Err(error) = self.recorder.publish(&event, object).await {
            tracing::warn!(%error, reason = event.reason, "cannot publish an event");
        }
    }
}

/// 5 s, 10 s, 20 s, … up to 5 min after `failures` earlier consecutive failures.
pub fn backoff_delay(failures: u32) -> Duration {
    let factor = 1u32.checked_shl(failures.min(16)).unwrap_or(u32::MAX);
    BACKOFF_START.saturating_mul(factor).min(BACKOFF_MAX)
}

fn event(type_: EventType, reason: &str, action: &str, note: String) -> Event {
    Event {
        type_,
        reason: reason.into(),
        note: Some(note),
        action: action.into(),
        secondary: None,
    }
}

/// The SessionCache API resource, for the untyped watch and API.
fn session_cache_resource() -> ApiResource {
    ApiResource::erase::<SessionCache>(&())
}

/// Reads an untyped object as a SessionCache; the error names the field that does not read.
pub fn read_session_cache(object: &DynamicObject) -> Result<SessionCache, String> {
    let value = serde_json::to_value(object).map_err(|e| e.to_string())?;
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        crate::api_error::flatten(&if path == "." {
            inner.to_string()
        } else {
            format!("{path}: {inner}")
        })
    })
}

/// Reconciles one watched object: read as a SessionCache, or reported as unreadable.
pub async fn reconcile_object(object: Arc<DynamicObject>, ctx: Arc<Context>) -> Result<Action, Error> {
    let span = tracing::info_span!(
        "reconcile",
        namespace = object.namespace().unwrap_or_default(),
        cache = object.name_any()
    );
    async move {
        match read_session_cache(&object) {
            Ok(sc) => reconcile(Arc::new(sc), ctx).await,
            Err(message) => report_unreadable(&object, &message, &ctx).await,
        }
    }
    .instrument(span)
    .await
}

/// An object that does not read as a SessionCache: `Degraded`/`UnreadableSpec` and a Warning
/// event, each naming the field. Servers that validate a status write against the whole object
/// (before Kubernetes 1.30's ratcheting) refuse the status then: the event still says it.
async fn report_unreadable(object: &DynamicObject, message: &str, ctx: &Context) -> Result<Action, Error> {
    tracing::warn!(problem = %message, "the SessionCache does not read; fix its spec");
    ctx.metrics.reconcile_failed("unreadable_spec");
    let previous: Option<SessionCacheStatus> = object
        .data
        .get("status")
        .and_then(|s| serde_json::from_value(s.clone()).ok());
    let new = status::compute(
        object.metadata.generation,
        previous.as_ref(),
        Outcome::Unreadable(message),
        Timestamp::now(),
    );
    if Some(&new) != previous.as_ref() {
        if let Err(error) = status::write(&ctx.client, object, &new).await {
            tracing::warn!(%error, "cannot report the unreadable spec in the status");
        }
    }
    let note = format!("cannot read this SessionCache: {message}");
    ctx.publish(
        &object.object_ref(&session_cache_resource()),
        event(EventType::Warning, status::reason::UNREADABLE, "Read", note),
    )
    .await;
    Ok(Action::requeue(INVALID_SPEC_REQUEUE))
}

/// Reconciles one SessionCache.
pub async fn reconcile(sc: Arc<SessionCache>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = Instant::now();
    ctx.metrics.reconcile_started();
    let result = reconcile_inner(&sc, &ctx).await;
    ctx.metrics.reconcile_finished(started.elapsed());
    if result.is_ok() {
        ctx.reset_backoff(sc.as_ref());
    }
    result
}

/// Status and a warning event for a spec (or a Secret it names) that cannot be used.
async fn report_invalid(
    sc: &SessionCache,
    ctx: &Context,
    invalid: &ValidationError,
    requeue: Duration,
) -> Result<Action, Error> {
    tracing::warn!(%invalid, "invalid spec");
    ctx.metrics.reconcile_failed("invalid_spec");
    let previous = sc.status.as_ref();
    let new = status::compute(
        sc.meta().generation,
        previous,
        Outcome::Invalid(invalid),
        Timestamp::now(),
    );
    if Some(&new) != previous {
        status::write(&ctx.client, sc, &new).await?;
    }
    let note = format!("{invalid}");
    ctx.publish(
        &sc.object_ref(&()),
        event(EventType::Warning, status::reason::INVALID_SPEC, "Validate", note),
    )
    .await;
    Ok(Action::requeue(requeue))
}

/// The key material step: Redis TLS and the record keys read, made, renewed or rotated (see
/// `redis_tls` and `record_keys`), into what the builders observe. A Secret that cannot be
/// used is the user's to fix: the inner error.
async fn key_material(
    client: &Client,
    plan: &Plan,
    mut observed: build::Observed,
) -> Result<Result<build::Observed, ValidationError>, Error> {
    let now = Timestamp::now();
    let tls = observe::redis_tls(client, plan).await?;
    observed.redis_tls = match redis_tls::prepare(plan, &tls, now) {
        Ok(material) => material,
        Err(redis_tls::Error::Unusable(invalid)) => return Ok(Err(invalid)),
        Err(redis_tls::Error::Generate(error)) => return Err(Error::KeyMaterial(error)),
    };
    let keys = observe::record_keys(client, plan).await?;
    observed.record_keys = match record_keys::rotate(plan, keys.as_ref(), now, &mut record_keys::new_key_line) {
        Ok(rotated) => rotated,
        Err(invalid) => return Ok(Err(invalid)),
    };
    if let Some(rotated) = &observed.record_keys {
        tracing::info!(
            staged = rotated.annotations.get(record_keys::STAGED_ANNOTATION),
            retiring = rotated.annotations.get(record_keys::RETIRING_ANNOTATION),
            "a step of the record key rotation"
        );
    }
    Ok(Ok(observed))
}

async fn reconcile_inner(sc: &SessionCache, ctx: &Context) -> Result<Action, Error> {
    let client = &ctx.client;
    if sc.meta().deletion_timestamp.is_some() {
        // Everything emitted carries an owner reference: Kubernetes deletes it with the cache.
        return Ok(Action::await_change());
    }
    let generation = sc.meta().generation;
    let previous = sc.status.as_ref();
    let regarding = sc.object_ref(&());

    // observe
    let secrets = observe::secrets(client, sc).await?;

    // validate
    let plan = match validate(sc).map(|plan| plan.on(ctx.platform)) {
        Ok(plan) => plan,
        Err(invalid) => return report_invalid(sc, ctx, &invalid, INVALID_SPEC_REQUEUE).await,
    };

    // key material
    let observed = match key_material(client, &plan, secrets.observed.clone()).await? {
        Ok(observed) => observed,
        // A Secret the user can fix: reported like an invalid spec, read again soon.
        Err(invalid) => return report_invalid(sc, ctx, &invalid, MISSING_SECRET_REQUEUE).await,
    };

    // build
    let owner = sc
        .controller_owner_ref(&())
        .filter(|o| !o.uid.is_empty())
        .ok_or_else(|| Error::MissingUid(sc.name_any()))?;
    let objects = build::all(&plan, &owner, &observed, &mut build::secrets::random_secret);

    // apply every object, then delete what is no longer planned
    let failures = apply::apply_all(client, &objects, &ctx.served).await;
    let uid = owner.uid.clone();
    let deleted = apply::cleanup(
        client,
        &apply::Owner {
            name: &plan.name,
            namespace: &plan.namespace,
            uid: &uid,
        },
        &objects,
        &ctx.served,
    )
    .await
    .map_err(Error::Cleanup)?;

    // observe the workloads, then status
    let readiness = observe::workloads(client, &plan, ctx.placement).await?;
    let new = status::compute(
        generation,
        previous,
        Outcome::Applied {
            plan: &plan,
            readiness: &readiness,
            missing_secrets: &secrets.missing,
            failures: &failures,
        },
        Timestamp::now(),
    );
    if Some(&new) != previous {
        status::write(client, sc, &new).await?;
    }

    // events on transitions
    if !deleted.is_empty() {
        let list = deleted
            .iter()
            .map(|d| format!("{} {}", d.kind, d.name))
            .collect::<Vec<_>>()
            .join(", ");
        ctx.publish(
            &regarding,
            event(
                EventType::Normal,
                "Pruned",
                "Cleanup",
                format!("deleted what the spec no longer needs: {list}"),
            ),
        )
        .await;
    }
    let was_available = status::is_true(previous, status::AVAILABLE);
    let is_available = status::is_true(Some(&new), status::AVAILABLE);
    if is_available && !was_available {
        let endpoint = new.endpoints.as_ref().and_then(|e| e.shim.clone()).unwrap_or_default();
        ctx.publish(
            &regarding,
            event(
                EventType::Normal,
                "Available",
                "Reconcile",
                format!("every component is ready; the shim serves {endpoint}"),
            ),
        )
        .await;
    } else if was_available && !is_available {
        ctx.publish(
            &regarding,
            event(
                EventType::Warning,
                "Unavailable",
                "Reconcile",
                format!("not ready: {}", readiness.not_ready_summary()),
            ),
        )
        .await;
    }
    if let Some((reason, message)) = status::newly_degraded(previous, &new) {
        ctx.publish(
            &regarding,
            event(EventType::Warning, reason, "Reconcile", message.to_string()),
        )
        .await;
    }

    if failures.iter().any(Failure::is_refusal) {
        return Err(Error::Apply(apply::Error::Refused(failures)));
    }
    Ok(Action::requeue(if secrets.missing.is_empty() {
        RESYNC
    } else {
        MISSING_SECRET_REQUEUE
    }))
}

/// After a failed reconcile: count the failure and retry with per-object exponential backoff.
pub fn error_policy<K: ResourceExt>(object: Arc<K>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics.reconcile_failed(error.metric_reason());
    let delay = ctx.next_backoff(object.as_ref());
    tracing::warn!(
        cache = %object.name_any(),
        namespace = object.namespace().unwrap_or_default(),
        %error,
        retry_in = ?delay,
        "reconcile failed"
    );
    Action::requeue(delay)
}

/// Only objects this operator manages are watched (not every Secret of the cluster).
fn owned_config() -> watcher::Config {
    watcher::Config::default().labels(&format!("app.kubernetes.io/managed-by={}", names::MANAGER))
}

/// Runs the controller until a shutdown signal (SIGTERM, Ctrl-C). `health` becomes ready once
/// the SessionCache watch has listed every object.
pub async fn run(
    client: Client,
    metrics: Arc<Metrics>,
    reporter: Reporter,
    health: Arc<http::Health>,
    platform: Platform,
) -> Result<(), discovery::Error> {
    let served = discovery::served_kinds(&client).await?;
    let placement = discovery::placement(&client).await?;
    for missing in served.missing() {
        tracing::warn!("{missing}: such objects are not made, and every SessionCache reports it in Degraded");
    }
    let resource = session_cache_resource();
    let caches: Api<DynamicObject> = Api::all_with(client.clone(), &resource);
    let writer = Writer::new(resource.clone());
    let reader = writer.as_reader();
    let ready = health.clone();
    // The primary stream passes an object only when its generation changed: status writes
    // (ours included) and metadata-only changes do not trigger a reconcile. The store (`reader`)
    // still sees every change, so a reconcile reads the latest status.
    let primary = watcher(caches, watcher::Config::default())
        .default_backoff()
        .reflect(writer)
        .inspect_ok(move |event| {
            // Every SessionCache listed: the controller is ready. (Watching the event here rather
            // than `Store::wait_until_ready`, whose wake-up goes to one waiter only, the
            // controller's.)
            if matches!(event, watcher::Event::InitDone) && !ready.controller_ready.swap(true, Ordering::SeqCst) {
                tracing::info!("SessionCache watch is synchronised");
            }
        })
        .applied_objects()
        .predicate_filter(predicates::generation, Default::default());

    let mut controller = Controller::for_stream_with(primary, reader, resource.clone())
        .with_config(ControllerConfig::default().debounce(Duration::from_millis(500)));
    // Secrets are not watched: that would need list and watch on every Secret in the cluster. A
    // deleted generated Secret is made again at the next periodic reconcile.
    for kind in Kind::ALL
        .into_iter()
        .filter(|k| *k != Kind::Secret && served.serves(*k))
    {
        let owned = kind.api_resource();
        controller = controller.owns_with(
            Api::<DynamicObject>::all_with(client.clone(), &owned),
            owned,
            owned_config(),
        );
    }
    // Pods with a sidecar, so the status counts follow them (metadata only, labelled ones).
    let pods: Api<DynamicObject> = Api::all_with(client.clone(), &ApiResource::erase::<Pod>(&()));
    let mapped = resource.clone();
    controller = controller.watches_with(
        pods,
        ApiResource::erase::<Pod>(&()),
        watcher::Config::default().labels(SIDECAR_LABEL),
        move |pod| {
            let cache = pod.labels().get(SIDECAR_LABEL)?.clone();
            Some(ObjectRef::new_with(&cache, mapped.clone()).within(&pod.namespace()?))
        },
    );
    let ctx = Arc::new(
        Context::new(client.clone(), metrics, reporter)
            .on(platform)
            .serving(served, placement),
    );
    controller
        .shutdown_on_signal()
        .run(reconcile_object, error_policy, ctx)
        .for_each(|result| async move {
            match result {
                Ok((object, _)) => tracing::debug!(%object, "reconciled"),
                Err(error) => tracing::debug!(%error, "reconcile failed"),
            }
        })
        .await;
    health.controller_ready.store(false, Ordering::SeqCst);
    tracing::info!("controller stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use ::http::Method;
    use serde_json::{json, Value};

    use super::*;
    use crate::build::{Emitted, Observed};
    use crate::fixtures::*;
    use crate::validate::Plan;

    fn reporter() -> Reporter {
        Reporter {
            controller: names::MANAGER.into(),
            instance: Some("redsess-operator-0".into()),
        }
    }

    /// Reconciles `sc` once against a scripted API server.
    async fn reconcile_with(
        sc: &SessionCache,
        steps: Vec<Step>,
    ) -> (Result<Action, Error>, Vec<Recorded>, Arc<Context>) {
        let (client, server) = mock_client();
        let server = server.run(steps);
        let ctx = Arc::new(Context::new(client, Arc::new(Metrics::new()), reporter()));
        let result = reconcile(Arc::new(sc.clone()), ctx.clone()).await;
        // Keep the metrics and backoff map, drop every client clone so the scenario can end.
        let (idle, _) = mock_client();
        let kept = Arc::new(Context {
            recorder: Recorder::new(idle.clone(), reporter()),
            client: idle,
            metrics: ctx.metrics.clone(),
            failures: Mutex::new(ctx.failures.lock().unwrap().clone()),
            platform: ctx.platform,
            served: ctx.served.clone(),
            placement: ctx.placement,
        });
        drop(ctx);
        let recorded = server.finish().await;
        (result, recorded, kept)
    }

    /// The plan and objects the controller will build for `sc`, given the Secrets that exist.
    fn expected(sc: &SessionCache, existing: &[&str]) -> (Plan, Vec<Emitted>) {
        let plan = validate(sc).unwrap();
        let owner = sc.controller_owner_ref(&()).unwrap();
        let observed = Observed {
            existing_secrets: existing.iter().map(|s| s.to_string()).collect(),
            ..Observed::default()
        };
        let objects = build::all(&plan, &owner, &observed, &mut || "not-random".to_string());
        (plan, objects)
    }

    fn secrets_of(objects: &[Emitted]) -> Vec<&str> {
        objects
            .iter()
            .filter(|o| matches!(o, Emitted::Secret(_)))
            .map(|o| o.name())
            .collect()
    }

    fn status_is(body: &Value, generation: i64, available: &str, progressing: &str, degraded: &str) {
        assert_eq!(body["status"]["observedGeneration"], generation, "{body:#}");
        assert_eq!(condition(body, status::AVAILABLE)["status"], available, "{body:#}");
        assert_eq!(condition(body, status::PROGRESSING)["status"], progressing, "{body:#}");
        assert_eq!(condition(body, status::DEGRADED)["status"], degraded, "{body:#}");
    }

    #[tokio::test]
    async fn create_applies_every_object_and_reports_progress() {
        let sc = session_cache("  clients: [{name: web, kind: WebSEALDSC}]", 1);
        let (plan, objects) = expected(&sc, &[]);
        assert_eq!(
            secrets_of(&objects),
            [
                "cache-redis-auth",
                "cache-redis-replication-auth",
                "cache-redis-monitor-auth",
                "cache-shim-auth"
            ]
        );

        let mut steps = secret_reads(&sc, &[]);
        steps.extend(applies(&objects));
        steps.extend(cleanup_lists(&plan, BTreeMap::new()));
        steps.extend(workload_reads(&plan, Some(0)));
        steps.push(status_patch(&sc, |body| {
            assert_eq!(body["apiVersion"], "redsess.io/v1alpha1");
            assert_eq!(body["kind"], "SessionCache");
            status_is(body, 1, "False", "True", "False");
            assert_eq!(condition(body, status::AVAILABLE)["reason"], status::reason::NOT_READY);
            assert_eq!(body["status"]["redis"]["summary"], "0/1");
            assert_eq!(body["status"]["shim"]["summary"], "0/2");
            assert_eq!(body["status"]["endpoints"]["redis"], "cache-redis.isam.svc:6379");
            assert!(body["status"]["clientConfigHashes"]["web"].is_string());
        }));

        let (result, recorded, ctx) = reconcile_with(&sc, steps).await;
        assert_eq!(result.unwrap(), Action::requeue(RESYNC));
        let patched_secrets = recorded
            .iter()
            .filter(|r| r.method == Method::PATCH && r.path.contains("/secrets/"))
            .count();
        assert_eq!(patched_secrets, 4, "every generated Secret is created");
        assert_eq!(ctx.metrics.reconciles(), 1);
    }

    #[tokio::test]
    async fn becoming_available_is_an_event() {
        let sc = session_cache("  redis: {replicas: 3}", 1);
        let (plan, objects) = expected(&sc, &[]);
        assert!(objects
            .iter()
            .any(|o| matches!(o, Emitted::StatefulSet(_)) && o.name() == "cache-sentinel"));

        let mut steps = secret_reads(&sc, &[]);
        steps.extend(applies(&objects));
        steps.extend(cleanup_lists(&plan, BTreeMap::new()));
        steps.extend(workload_reads(&plan, None));
        steps.push(status_patch(&sc, |body| {
            status_is(body, 1, "True", "False", "False");
            assert_eq!(body["status"]["sentinel"]["summary"], "3/3");
            assert_eq!(
                body["status"]["endpoints"]["sentinel"],
                "cache-sentinel.isam.svc:26379/redsess"
            );
        }));
        steps.push(event_post(&sc, |body| {
            assert_eq!(body["type"], "Normal");
            assert_eq!(body["reason"], "Available");
            assert_eq!(body["regarding"]["kind"], "SessionCache");
            assert_eq!(body["regarding"]["name"], "cache");
        }));

        let (result, _, _) = reconcile_with(&sc, steps).await;
        assert_eq!(result.unwrap(), Action::requeue(RESYNC));
    }

    #[tokio::test]
    async fn update_keeps_existing_secrets() {
        let mut sc = session_cache("  shim: {replicas: 3}", 2);
        let existing = [
            "cache-redis-auth",
            "cache-redis-replication-auth",
            "cache-redis-monitor-auth",
            "cache-shim-auth",
        ];
        let (plan, objects) = expected(&sc, &existing);
        assert!(secrets_of(&objects).is_empty(), "no Secret is emitted again");
        // A previous status: available, from generation 1.
        sc.status = Some(status::compute(
            Some(1),
            None,
            Outcome::Applied {
                plan: &validate(&session_cache("  {}", 1)).unwrap(),
                readiness: &observe::Readiness {
                    redis: observe::WorkloadState {
                        desired: 1,
                        ready: 1,
                        updated: 1,
                        current: true,
                    },
                    sentinel: None,
                    shim: Some(observe::WorkloadState {
                        desired: 2,
                        ready: 2,
                        updated: 2,
                        current: true,
                    }),
                    sidecars: None,
                },
                missing_secrets: &[],
                failures: &[],
            },
            Timestamp::from_second(1_750_000_000).unwrap(),
        ));

        let mut steps = secret_reads(&sc, &existing);
        steps.extend(applies(&objects));
        steps.extend(cleanup_lists(&plan, BTreeMap::new()));
        steps.extend(workload_reads(&plan, Some(2)));
        steps.push(status_patch(&sc, |body| {
            // The third shim pod is not ready yet.
            status_is(body, 2, "False", "True", "False");
            assert_eq!(body["status"]["shim"]["summary"], "2/3");
            // Degraded did not change: its transition time stays.
            assert_eq!(
                condition(body, status::DEGRADED)["lastTransitionTime"],
                json!("2025-06-15T15:06:40Z")
            );
        }));
        steps.push(event_post(&sc, |body| {
            assert_eq!(body["type"], "Warning");
            assert_eq!(body["reason"], "Unavailable");
            assert!(body["note"].as_str().unwrap().contains("shim 2/3"), "{body:#}");
        }));

        let (result, recorded, _) = reconcile_with(&sc, steps).await;
        result.unwrap();
        assert!(
            !recorded
                .iter()
                .any(|r| r.method == Method::PATCH && r.path.contains("/secrets/")),
            "existing Secrets are not patched"
        );
    }

    #[tokio::test]
    async fn objects_no_longer_needed_are_deleted() {
        // Redis went from 3 replicas to 1 and the client `old` was removed.
        let sc = session_cache("  clients: [{name: web, kind: IAG}]", 3);
        let existing = [
            "cache-redis-auth",
            "cache-redis-replication-auth",
            "cache-redis-monitor-auth",
            "cache-shim-auth",
        ];
        let (plan, objects) = expected(&sc, &existing);
        let sentinel = owned_item(&sc, "cache-sentinel", names::component::SENTINEL);
        let old_client = owned_item(&sc, "cache-client-old", names::component::CLIENT_CONFIG);
        let web_client = owned_item(&sc, "cache-client-web", names::component::CLIENT_CONFIG);
        let mut foreign = owned_item(&sc, "cache-client-foreign", names::component::CLIENT_CONFIG);
        foreign["metadata"]["ownerReferences"][0]["uid"] = json!("another-uid");

        let mut steps = secret_reads(&sc, &existing);
        steps.extend(applies(&objects));
        for kind in Kind::PRUNED {
            let list = |items: Vec<Value>| {
                Step::new(Method::GET, kind.collection_path("isam"))
                    .query("labelSelector", &names::owned_selector("cache"))
                    .reply(Reply::list(items))
            };
            let delete = |name: &str| {
                let uid = format!("uid-of-{name}");
                Step::new(Method::DELETE, format!("{}/{name}", kind.collection_path("isam")))
                    .check(move |body| {
                        assert_eq!(body["preconditions"]["uid"], uid);
                        assert_eq!(body["propagationPolicy"], "Background");
                    })
                    .reply(Reply::Json(
                        json!({"apiVersion": "v1", "kind": "Status", "status": "Success", "metadata": {}}),
                    ))
            };
            match kind {
                Kind::StatefulSet => {
                    steps.push(list(vec![sentinel.clone()]));
                    steps.push(delete("cache-sentinel"));
                }
                Kind::ConfigMap => {
                    steps.push(list(vec![web_client.clone(), old_client.clone(), foreign.clone()]));
                    steps.push(delete("cache-client-old"));
                }
                _ => steps.push(list(vec![])),
            }
        }
        steps.extend(workload_reads(&plan, Some(0)));
        steps.push(status_patch(&sc, |body| status_is(body, 3, "False", "True", "False")));
        steps.push(event_post(&sc, |body| {
            assert_eq!(body["reason"], "Pruned");
            let note = body["note"].as_str().unwrap();
            assert!(
                note.contains("StatefulSet cache-sentinel") && note.contains("ConfigMap cache-client-old"),
                "{note}"
            );
        }));

        let (result, recorded, _) = reconcile_with(&sc, steps).await;
        result.unwrap();
        let deleted: Vec<_> = recorded
            .iter()
            .filter(|r| r.method == Method::DELETE)
            .map(|r| r.path.rsplit('/').next().unwrap().to_string())
            .collect();
        assert_eq!(deleted, ["cache-sentinel", "cache-client-old"]);
    }

    #[tokio::test]
    async fn invalid_spec_is_reported_not_applied() {
        let sc = session_cache("  shim: {mode: Sidecar, sidecar: {port: 8443}}", 4);
        let mut steps = secret_reads(&sc, &[]);
        steps.push(status_patch(&sc, |body| {
            assert_eq!(body["status"]["observedGeneration"], 4);
            let degraded = condition(body, status::DEGRADED);
            assert_eq!(degraded["status"], "True");
            assert_eq!(degraded["reason"], "InvalidSpec");
            assert!(
                degraded["message"]
                    .as_str()
                    .unwrap()
                    .starts_with("spec.shim.sidecar.port: "),
                "{degraded:#}"
            );
            assert_eq!(condition(body, status::AVAILABLE)["status"], "False");
        }));
        steps.push(event_post(&sc, |body| {
            assert_eq!(body["type"], "Warning");
            assert_eq!(body["reason"], "InvalidSpec");
            assert!(
                body["note"].as_str().unwrap().contains("spec.shim.sidecar.port"),
                "{body:#}"
            );
        }));

        let (result, recorded, ctx) = reconcile_with(&sc, steps).await;
        assert_eq!(result.unwrap(), Action::requeue(INVALID_SPEC_REQUEUE));
        assert!(!recorded
            .iter()
            .any(|r| r.method == Method::PATCH && !r.path.ends_with("/status")));
        assert_eq!(ctx.metrics.failures("invalid_spec"), 1);
    }

    #[tokio::test]
    async fn a_missing_user_secret_is_degraded() {
        let sc = session_cache("  shim: {security: {tlsSecret: cache-tls}}", 1);
        let (plan, objects) = expected(&sc, &[]);
        let mut steps = secret_reads(&sc, &[]);
        steps.extend(applies(&objects));
        steps.extend(cleanup_lists(&plan, BTreeMap::new()));
        steps.extend(workload_reads(&plan, Some(0)));
        steps.push(status_patch(&sc, |body| {
            let degraded = condition(body, status::DEGRADED);
            assert_eq!(degraded["reason"], "SecretMissing");
            assert_eq!(
                degraded["message"],
                "spec.shim.security.tlsSecret: Secret cache-tls does not exist"
            );
        }));
        steps.push(event_post(&sc, |body| assert_eq!(body["reason"], "SecretMissing")));
        let (result, _, _) = reconcile_with(&sc, steps).await;
        assert_eq!(result.unwrap(), Action::requeue(MISSING_SECRET_REQUEUE));
    }

    #[tokio::test]
    async fn a_refused_object_does_not_stop_the_others() {
        let sc = session_cache("  {}", 1);
        let (plan, objects) = expected(&sc, &[]);
        let refused = objects
            .iter()
            .position(|o| matches!(o, Emitted::StatefulSet(_)))
            .unwrap();
        let mut steps = secret_reads(&sc, &[]);
        for (i, step) in applies(&objects).into_iter().enumerate() {
            steps.push(if i == refused {
                Step::apply(apply::object_path(&objects[i])).reply(Reply::Status(403, "Forbidden"))
            } else {
                step
            });
        }
        steps.extend(cleanup_lists(&plan, BTreeMap::new()));
        steps.extend(workload_reads(&plan, Some(0)));
        steps.push(status_patch(&sc, |body| {
            let degraded = condition(body, status::DEGRADED);
            assert_eq!(degraded["status"], "True");
            assert_eq!(degraded["reason"], "ApplyFailed");
            let message = degraded["message"].as_str().unwrap();
            assert!(
                message.starts_with("cannot apply StatefulSet cache-redis: ")
                    && message.ends_with("(HTTP 403 Forbidden)"),
                "{message}"
            );
            assert!(!message.contains("Status {"), "no Debug dump: {message}");
            // What was observed is still reported.
            assert_eq!(body["status"]["shim"]["summary"], "0/2");
        }));
        steps.push(event_post(&sc, |body| {
            assert_eq!(body["type"], "Warning");
            assert_eq!(body["reason"], "ApplyFailed");
        }));

        let (result, recorded, ctx) = reconcile_with(&sc, steps).await;
        let applied = recorded
            .iter()
            .filter(|r| r.method == Method::PATCH && !r.path.ends_with("/status"))
            .count();
        assert_eq!(applied, objects.len(), "every object was sent");
        let error = result.unwrap_err();
        assert_eq!(error.metric_reason(), "apply");
        let sc = Arc::new(sc);
        let delays: Vec<Action> = (0..3).map(|_| error_policy(sc.clone(), &error, ctx.clone())).collect();
        assert_eq!(delays, [5, 10, 20].map(|s| Action::requeue(Duration::from_secs(s))));
        assert_eq!(ctx.metrics.failures("apply"), 3);
        ctx.reset_backoff(sc.as_ref());
        assert_eq!(error_policy(sc, &error, ctx.clone()), Action::requeue(BACKOFF_START));
    }

    #[tokio::test]
    async fn a_kind_the_cluster_does_not_serve_is_reported_not_sent() {
        let sc = session_cache("  {}", 1);
        let (plan, objects) = expected(&sc, &[]);
        let served = ServedKinds::from_kinds(Kind::ALL.into_iter().filter(|k| *k != Kind::PodDisruptionBudget));
        let sent: Vec<Emitted> = objects
            .iter()
            .filter(|o| !matches!(o, Emitted::PodDisruptionBudget(_)))
            .cloned()
            .collect();
        assert!(sent.len() < objects.len(), "the plan has PodDisruptionBudgets");
        let mut steps = secret_reads(&sc, &[]);
        steps.extend(applies(&sent));
        let pruned: Vec<Step> = cleanup_lists(&plan, BTreeMap::new())
            .into_iter()
            .filter(|s| !s.describe().contains("poddisruptionbudgets"))
            .collect();
        steps.extend(pruned);
        steps.extend(workload_reads(&plan, Some(0)));
        steps.push(status_patch(&sc, |body| {
            let degraded = condition(body, status::DEGRADED);
            assert_eq!(degraded["reason"], "KindNotServed");
            assert_eq!(
                degraded["message"],
                "this cluster does not serve policy/v1 PodDisruptionBudget; Kubernetes 1.21 or newer is needed"
            );
        }));
        steps.push(event_post(&sc, |body| assert_eq!(body["reason"], "KindNotServed")));

        let (client, server) = mock_client();
        let server = server.run(steps);
        let ctx =
            Arc::new(Context::new(client, Arc::new(Metrics::new()), reporter()).serving(served, Placement::Native));
        let result = reconcile(Arc::new(sc), ctx.clone()).await;
        drop(ctx);
        server.finish().await;
        assert_eq!(
            result.unwrap(),
            Action::requeue(RESYNC),
            "not an error: retrying cannot help"
        );
    }

    #[tokio::test]
    async fn sidecar_mode_runs_no_shim_deployment_and_counts_outdated_sidecars() {
        let sc = session_cache("  shim: {mode: Sidecar}", 1);
        let (plan, objects) = expected(&sc, &[]);
        assert!(
            !objects.iter().any(|o| matches!(o, Emitted::Deployment(_))),
            "no shim Deployment"
        );
        let current = crate::build::sidecar::sidecar(&plan, Placement::Native).hash;
        let pod = |name: &str, hash: &str| {
            json!({"metadata": {"name": name, "namespace": "isam",
                "labels": {"redsess.io/sidecar": "cache"},
                "annotations": {"redsess.io/sidecar-sha256": hash}}})
        };
        let mut steps = secret_reads(&sc, &[]);
        steps.extend(applies(&objects));
        steps.extend(cleanup_lists(&plan, BTreeMap::new()));
        let mut reads = workload_reads(&plan, Some(1));
        let pods = reads.pop().expect("the sidecar pods' list");
        assert!(
            pods.describe().ends_with("/namespaces/isam/pods"),
            "{}",
            pods.describe()
        );
        steps.extend(reads);
        steps.push(
            Step::new(Method::GET, "/api/v1/namespaces/isam/pods")
                .query("labelSelector", "redsess.io/sidecar=cache")
                .reply(Reply::list(vec![
                    pod("webseal-a", &current),
                    pod("webseal-b", "an-older-hash"),
                ])),
        );
        steps.push(status_patch(&sc, |body| {
            assert_eq!(body["status"]["sidecars"]["injected"], 2);
            assert_eq!(body["status"]["sidecars"]["outdated"], 1);
            assert_eq!(body["status"]["sidecars"]["summary"], "2 (1 outdated)");
            assert!(body["status"].get("shim").is_none(), "{body:#}");
            assert_eq!(
                body["status"]["endpoints"]["shim"],
                "http://127.0.0.1:18443/DSess/services/DSess"
            );
            // Redis is ready and no shim Deployment is waited for.
            status_is(body, 1, "True", "False", "False");
        }));
        steps.push(event_post(&sc, |body| assert_eq!(body["reason"], "Available")));
        let (result, _, _) = reconcile_with(&sc, steps).await;
        assert_eq!(result.unwrap(), Action::requeue(RESYNC));
    }

    #[test]
    fn an_object_that_does_not_read_names_the_field() {
        let object: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "redsess.io/v1alpha1",
            "kind": "SessionCache",
            "metadata": {"name": "broken", "namespace": "isam", "uid": "u1", "generation": 1},
            "spec": {"redis": {"replicas": "three"}}
        }))
        .unwrap();
        let message = read_session_cache(&object).unwrap_err();
        assert!(
            message.starts_with("spec.redis.replicas: invalid type: string \"three\""),
            "{message}"
        );
        let fine: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "redsess.io/v1alpha1",
            "kind": "SessionCache",
            "metadata": {"name": "fine", "namespace": "isam", "uid": "u2", "generation": 1},
            "spec": {}
        }))
        .unwrap();
        assert_eq!(read_session_cache(&fine).unwrap().name_any(), "fine");
    }

    #[test]
    fn backoff_doubles_from_5s_to_5min() {
        let delays: Vec<u64> = (0..9).map(|n| backoff_delay(n).as_secs()).collect();
        assert_eq!(delays, [5, 10, 20, 40, 80, 160, 300, 300, 300]);
        assert_eq!(backoff_delay(u32::MAX), BACKOFF_MAX);
    }
}
