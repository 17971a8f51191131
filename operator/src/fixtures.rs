//! Test harness: a [`kube::Client`] whose API server is a scripted scenario (tower-test's mock
//! service, as in kube-rs's controller-rs). The scenario answers requests in order and asserts
//! each one's method, path, query parameters and, optionally, body; after the last step it
//! asserts that no further request comes once every client clone is dropped.
//!
//! Besides the generic [`Step`]s there are builders for the requests one reconcile makes, derived
//! from the same functions the controller uses (`observe::referenced_secrets`, `build::all`,
//! `apply::Kind::PRUNED`), so tests do not hard-code the number or order of emitted objects.

use std::collections::BTreeMap;
use std::time::Duration;

use http::{Method, Request, Response, StatusCode};
use kube::client::Body;
use kube::Client;
use serde_json::{json, Value};
use tokio::task::JoinHandle;

use crate::apply::{self, Kind};
use crate::build::Emitted;
use crate::crd::SessionCache;
use crate::names;
use crate::observe;
use crate::validate::Plan;

pub type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

/// How long a step waits for its request before the scenario fails.
const STEP_TIMEOUT: Duration = Duration::from_secs(10);

/// A client talking to a scripted API server.
pub fn mock_client() -> (Client, ApiServer) {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    (Client::new(service, "default"), ApiServer { handle })
}

/// The answer to one request.
pub enum Reply {
    /// 200 with this body.
    Json(Value),
    /// 200 with the request's own body (what server-side apply and create return, roughly).
    Echo,
    /// 200 with the request's body, `extra` merged over it (JSON merge patch semantics).
    EchoWith(Value),
    /// An error: a `metav1.Status` with this code and reason.
    Status(u16, &'static str),
    /// 404 as plain text, not a Status: what the API server answers for a group it does not
    /// serve at all.
    PageNotFound,
}

impl Reply {
    pub fn not_found() -> Self {
        Reply::Status(404, "NotFound")
    }
    pub fn conflict() -> Self {
        Reply::Status(409, "Conflict")
    }
    /// A list answer with these items.
    pub fn list(items: Vec<Value>) -> Self {
        Reply::Json(json!({"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": "1"}, "items": items}))
    }
}

type Check = Box<dyn FnOnce(&Value) + Send>;

/// One expected request and its answer.
pub struct Step {
    pub method: Method,
    pub path: String,
    pub query: Vec<(String, String)>,
    pub content_type: Option<String>,
    check: Option<Check>,
    reply: Reply,
}

impl Step {
    pub fn new(method: Method, path: impl Into<String>) -> Self {
        Self {
            method,
            path: path.into(),
            query: Vec::new(),
            content_type: None,
            check: None,
            reply: Reply::Echo,
        }
    }

    /// A server-side apply: `PATCH ?fieldManager=redsess-operator&force=true`.
    pub fn apply(path: impl Into<String>) -> Self {
        let mut step = Self::new(Method::PATCH, path)
            .query("fieldManager", names::FIELD_MANAGER)
            .query("force", "true");
        step.content_type = Some("application/apply-patch+yaml".into());
        step
    }

    /// The request must carry this query parameter.
    pub fn query(mut self, key: &str, value: &str) -> Self {
        self.query.push((key.into(), value.into()));
        self
    }

    /// Assertions on the request's JSON body (`Null` when empty).
    pub fn check(mut self, check: impl FnOnce(&Value) + Send + 'static) -> Self {
        self.check = Some(Box::new(check));
        self
    }

    pub fn reply(mut self, reply: Reply) -> Self {
        self.reply = reply;
        self
    }

    pub fn describe(&self) -> String {
        format!("{} {}", self.method, self.path)
    }
}

/// A request as it was received.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: Method,
    pub path: String,
    pub query: BTreeMap<String, String>,
    pub body: Value,
}

pub struct ApiServer {
    handle: Handle,
}

/// A scenario being served; [`Running::finish`] waits for it and returns what it received.
pub struct Running {
    task: JoinHandle<Vec<Recorded>>,
}

fn merge(target: &mut Value, patch: &Value) {
    match (target, patch) {
        (Value::Object(t), Value::Object(p)) => {
            for (k, v) in p {
                merge(t.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
        (t, p) => *t = p.clone(),
    }
}

fn parse_query(query: Option<&str>) -> BTreeMap<String, String> {
    query
        .unwrap_or_default()
        .split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 3;
                        continue;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl ApiServer {
    /// Serves `steps` in order on a task.
    pub fn run(mut self, steps: Vec<Step>) -> Running {
        let task = tokio::spawn(async move {
            let mut recorded = Vec::new();
            let total = steps.len();
            for (i, step) in steps.into_iter().enumerate() {
                let next = tokio::time::timeout(STEP_TIMEOUT, self.handle.next_request()).await;
                let Ok(Some((request, send))) = next else {
                    panic!(
                        "step {}/{total}: expected {}, but no request came (after {recorded:#?})",
                        i + 1,
                        step.describe()
                    );
                };
                let (parts, body) = request.into_parts();
                let bytes = body.collect_bytes().await.expect("request body");
                let body: Value = if bytes.is_empty() {
                    Value::Null
                } else {
                    serde_json::from_slice(&bytes).expect("request body is JSON")
                };
                let query = parse_query(parts.uri.query());
                let got = Recorded {
                    method: parts.method.clone(),
                    path: parts.uri.path().to_string(),
                    query,
                    body,
                };
                assert_eq!(
                    (&got.method, got.path.as_str()),
                    (&step.method, step.path.as_str()),
                    "step {}/{total}: expected {}, got {} {} (after {:?})",
                    i + 1,
                    step.describe(),
                    got.method,
                    got.path,
                    recorded
                        .iter()
                        .map(|r: &Recorded| format!("{} {}", r.method, r.path))
                        .collect::<Vec<_>>()
                );
                for (k, v) in &step.query {
                    assert_eq!(
                        got.query.get(k),
                        Some(v),
                        "step {}/{total} ({}): query {k}={v} (got {:?})",
                        i + 1,
                        step.describe(),
                        got.query
                    );
                }
                if let Some(expected) = &step.content_type {
                    let actual = parts
                        .headers
                        .get(http::header::CONTENT_TYPE)
                        .and_then(|v| v.to_str().ok());
                    assert_eq!(actual, Some(expected.as_str()), "step {}: content type", i + 1);
                }
                if let Some(check) = step.check {
                    check(&got.body);
                }
                if let Reply::PageNotFound = step.reply {
                    let response = Response::builder()
                        .status(StatusCode::NOT_FOUND)
                        .header(http::header::CONTENT_TYPE, "text/plain; charset=utf-8")
                        .body(Body::from(b"404 page not found\n".to_vec()))
                        .expect("response");
                    send.send_response(response);
                    recorded.push(got);
                    continue;
                }
                let (status, answer) = match step.reply {
                    Reply::PageNotFound => unreachable!("answered above"),
                    Reply::Json(v) => (StatusCode::OK, v),
                    Reply::Echo => (StatusCode::OK, got.body.clone()),
                    Reply::EchoWith(extra) => {
                        let mut v = got.body.clone();
                        merge(&mut v, &extra);
                        (StatusCode::OK, v)
                    }
                    Reply::Status(code, reason) => (
                        StatusCode::from_u16(code).expect("status code"),
                        json!({
                            "apiVersion": "v1", "kind": "Status", "metadata": {},
                            "status": "Failure", "message": format!("{reason} (scripted)"),
                            "reason": reason, "code": code
                        }),
                    ),
                };
                let response = Response::builder()
                    .status(status)
                    .header(http::header::CONTENT_TYPE, "application/json")
                    .body(Body::from(serde_json::to_vec(&answer).expect("JSON")))
                    .expect("response");
                send.send_response(response);
                recorded.push(got);
            }
            // Every client clone dropped: the mock service closes. Anything else is a request
            // the scenario did not expect.
            match tokio::time::timeout(STEP_TIMEOUT, self.handle.next_request()).await {
                Ok(None) => {}
                Ok(Some((request, _))) => panic!(
                    "unexpected request after the last step: {} {}",
                    request.method(),
                    request.uri()
                ),
                Err(_) => panic!("the client was not dropped after the last step"),
            }
            recorded
        });
        Running { task }
    }
}

impl Running {
    /// Waits for the scenario to end (drop every client clone first); re-raises its panic.
    pub async fn finish(self) -> Vec<Recorded> {
        match self.task.await {
            Ok(recorded) => recorded,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(e) => panic!("scenario task failed: {e}"),
        }
    }
}

// ---- the requests of a reconcile -------------------------------------------------------

/// A SessionCache as the API server would hand it to the controller.
pub fn session_cache(spec_yaml: &str, generation: i64) -> SessionCache {
    serde_yaml::from_str(&format!(
        "apiVersion: redsess.io/v1alpha1\nkind: SessionCache\nmetadata: {{name: cache, namespace: isam, uid: 0d7ae2c1-1111-4222-8333-944455556666, generation: {generation}, resourceVersion: '100'}}\nspec:\n{spec_yaml}"
    ))
    .expect("a SessionCache")
}

/// `GET`s of every Secret the spec refers to; those in `existing` exist, the others are 404.
pub fn secret_reads(sc: &SessionCache, existing: &[&str]) -> Vec<Step> {
    let namespace = sc.metadata.namespace.clone().unwrap_or_default();
    observe::referenced_secrets(sc)
        .into_iter()
        .map(|r| {
            let step = Step::new(
                Method::GET,
                format!("{}/{}", Kind::Secret.collection_path(&namespace), r.name),
            );
            if existing.contains(&r.name.as_str()) {
                step.reply(Reply::Json(json!({
                    "apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata",
                    "metadata": {"name": r.name, "namespace": namespace}
                })))
            } else {
                step.reply(Reply::not_found())
            }
        })
        .collect()
}

/// One server-side apply per object, in order; the body must be the object (for Secrets,
/// whose values are random: the same metadata and keys).
pub fn applies(objects: &[Emitted]) -> Vec<Step> {
    objects
        .iter()
        .map(|object| {
            let expected = object.to_json();
            let is_secret = matches!(object, Emitted::Secret(_));
            Step::apply(apply::object_path(object)).check(move |body| {
                if is_secret {
                    assert_eq!(body["kind"], "Secret");
                    assert_eq!(body["metadata"], expected["metadata"]);
                    for field in ["data", "stringData"] {
                        let keys = |v: &Value| v.as_object().map(|o| o.keys().cloned().collect::<Vec<_>>());
                        assert_eq!(keys(&body[field]), keys(&expected[field]), "{field} keys");
                    }
                } else {
                    assert_eq!(body, &expected);
                }
            })
        })
        .collect()
}

/// The lists of the cleanup, one per pruned kind, with label selector; `extra` adds listed
/// items (metadata only) for some kinds.
pub fn cleanup_lists(plan: &Plan, mut extra: BTreeMap<Kind, Vec<Value>>) -> Vec<Step> {
    Kind::PRUNED
        .iter()
        .map(|kind| {
            let items = extra.remove(kind).unwrap_or_default();
            Step::new(Method::GET, kind.collection_path(&plan.namespace))
                .query("labelSelector", &names::owned_selector(&plan.name))
                .reply(Reply::list(items))
        })
        .collect()
}

/// Metadata of an object this SessionCache emitted earlier (for [`cleanup_lists`]).
pub fn owned_item(sc: &SessionCache, name: &str, component: &str) -> Value {
    json!({
        "metadata": {
            "name": name,
            "namespace": sc.metadata.namespace,
            "uid": format!("uid-of-{name}"),
            "labels": names::labels(sc.metadata.name.as_deref().unwrap_or_default(), component),
            "ownerReferences": [{
                "apiVersion": "redsess.io/v1alpha1", "kind": "SessionCache",
                "name": sc.metadata.name, "uid": sc.metadata.uid,
                "controller": true, "blockOwnerDeletion": true
            }]
        }
    })
}

/// `GET`s of the workloads after apply, answering with `ready` pods each (the current
/// generation observed, every pod updated).
pub fn workload_reads(plan: &Plan, ready: Option<i32>) -> Vec<Step> {
    let status = |replicas: i32| {
        let ready = ready.map_or(replicas, |r| r.min(replicas));
        json!({"observedGeneration": 1, "replicas": replicas, "readyReplicas": ready, "updatedReplicas": replicas})
    };
    let sts = |name: String, replicas: i32| {
        Step::new(
            Method::GET,
            format!("{}/{name}", Kind::StatefulSet.collection_path(&plan.namespace)),
        )
        .reply(Reply::Json(json!({
            "apiVersion": "apps/v1", "kind": "StatefulSet",
            "metadata": {"name": name, "namespace": plan.namespace, "generation": 1},
            "status": status(replicas)
        })))
    };
    let mut steps = vec![sts(names::redis(&plan.name), plan.redis.replicas)];
    if let Some(s) = &plan.sentinel {
        steps.push(sts(names::sentinel(&plan.name), s.replicas));
    }
    if plan.shim.sidecar.is_some() {
        steps.push(
            Step::new(Method::GET, format!("/api/v1/namespaces/{}/pods", plan.namespace))
                .query("labelSelector", &format!("redsess.io/sidecar={}", plan.name))
                .reply(Reply::list(vec![])),
        );
        return steps;
    }
    let shim = names::shim(&plan.name);
    steps.push(
        Step::new(
            Method::GET,
            format!("{}/{shim}", Kind::Deployment.collection_path(&plan.namespace)),
        )
        .reply(Reply::Json(json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": shim, "namespace": plan.namespace, "generation": 1},
            "status": status(plan.shim.replicas)
        }))),
    );
    steps
}

/// The server-side apply of the status subresource.
pub fn status_patch(sc: &SessionCache, check: impl FnOnce(&Value) + Send + 'static) -> Step {
    let namespace = sc.metadata.namespace.as_deref().unwrap_or_default();
    let name = sc.metadata.name.as_deref().unwrap_or_default();
    Step::apply(format!(
        "/apis/redsess.io/v1alpha1/namespaces/{namespace}/sessioncaches/{name}/status"
    ))
    .check(check)
    .reply(Reply::EchoWith(json!({
        "metadata": {"name": name, "namespace": namespace, "uid": sc.metadata.uid},
        "spec": sc.spec,
    })))
}

/// An event created about the SessionCache.
pub fn event_post(sc: &SessionCache, check: impl FnOnce(&Value) + Send + 'static) -> Step {
    let namespace = sc.metadata.namespace.as_deref().unwrap_or_default();
    Step::new(
        Method::POST,
        format!("/apis/events.k8s.io/v1/namespaces/{namespace}/events"),
    )
    .check(check)
}

/// The condition of `type_` in a status patch body.
pub fn condition<'a>(body: &'a Value, type_: &str) -> &'a Value {
    body["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == type_))
        .unwrap_or_else(|| panic!("no {type_} condition in {body:#}"))
}
