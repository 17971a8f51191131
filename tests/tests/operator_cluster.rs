//! The operator against a real Kubernetes API server (kube-apiserver and kube-controller-manager
//! 1.20.2 from `../shared/k8s`, see `redsess_tests::k8s`): the real `redsess-operator run`
//! binary, as the ServiceAccount of `deploy/` bound to the chart's ClusterRole and Role, so a
//! missing RBAC rule fails here.
//!
//! One scenario, in order, on one server: the samples of `deploy/samples/` applied, changed
//! (replicas, Sentinel on and off, clients added and removed) and deleted; every owned object
//! checked against what `redsess-operator render` says the sample needs, with its owner
//! reference and field manager; status through the status subresource; no hot loop; an
//! operator restart without a reconcile storm; a SessionCache that does not deserialize; a
//! ConfigMap the server refuses (a quota); the garbage collector after deletion.
//!
//! This server is older than the operator's objects in one way that the suite asserts: it does
//! not serve `policy/v1`, so exactly the PodDisruptionBudgets are missing, reported in
//! `Degraded`, and nothing else is.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, ListParams, Patch, PatchParams};
use kube::{Client, ResourceExt};
use redsess_operator::apply::Kind;
use redsess_operator::crd::SessionCache;
use redsess_operator::names;
use redsess_tests::k8s::{self, eventually, ControlPlane, Operator, OPERATOR_NAMESPACE};
use serde_json::{json, Value};

const NS: &str = "isam";
const WAIT: Duration = Duration::from_secs(40);
const NOT_SERVED: &str =
    "this cluster does not serve policy/v1 PodDisruptionBudget; Kubernetes 1.21 or newer is needed";

fn cache_resource() -> ApiResource {
    ApiResource::erase::<SessionCache>(&())
}

fn caches(client: &Client) -> Api<DynamicObject> {
    Api::namespaced_with(client.clone(), NS, &cache_resource())
}

/// A sample of `deploy/samples/` as an object, with `edit` applied to its JSON.
fn sample(file: &str, edit: impl FnOnce(&mut Value)) -> DynamicObject {
    let path = k8s::workspace_root().join("deploy/samples").join(file);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut value = serde_json::to_value(&k8s::documents(&text)[0]).unwrap();
    edit(&mut value);
    serde_json::from_value(value).unwrap()
}

/// `(kind, name)` of every object `redsess-operator render` makes of `cache` (generated Secrets
/// are left out of a render), less what this server does not serve.
fn rendered(cache: &DynamicObject) -> BTreeSet<(String, String)> {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), serde_yaml::to_string(cache).unwrap()).unwrap();
    let out = std::process::Command::new(redsess_tests::operator_binary())
        .arg("render")
        .arg(file.path())
        .output()
        .expect("redsess-operator render");
    assert!(out.status.success(), "render: {}", String::from_utf8_lossy(&out.stderr));
    k8s::documents(&String::from_utf8_lossy(&out.stdout))
        .iter()
        .map(|o| (o.types.as_ref().unwrap().kind.clone(), o.name_any()))
        .filter(|(kind, _)| kind != "PodDisruptionBudget")
        .collect()
}

/// Every object labelled as this cache's, of every kind the operator emits and this server
/// serves, by `(kind, name)`.
async fn owned(client: &Client, cache: &str) -> BTreeMap<(String, String), DynamicObject> {
    let mut out = BTreeMap::new();
    for kind in Kind::ALL.into_iter().filter(|k| *k != Kind::PodDisruptionBudget) {
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), NS, &kind.api_resource());
        let list = api
            .list(&ListParams::default().labels(&names::owned_selector(cache)))
            .await
            .unwrap_or_else(|e| panic!("list {}: {e}", kind.name()));
        for item in list.items {
            out.insert((kind.name().to_string(), item.name_any()), item);
        }
    }
    out
}

/// The generated Secrets of a cache that names none of its own; `sentinel`: it has (or had:
/// generated Secrets are never pruned) Sentinel; `native`: its native clients (had, too).
fn generated_secrets(cache: &str, sentinel: bool, native: &[&str]) -> BTreeSet<(String, String)> {
    [
        names::redis_auth_secret(cache),
        names::shim_auth_secret(cache),
        names::redis_replication_secret(cache),
        names::redis_monitor_secret(cache),
    ]
    .into_iter()
    .chain(sentinel.then(|| names::sentinel_auth_secret(cache)))
    .chain(native.iter().map(|client| names::client_redis_secret(cache, client)))
    .map(|name| ("Secret".to_string(), name))
    .collect()
}

/// Every owned object is exactly `expected`, each owned by the cache (controller reference with
/// its UID) and applied by the operator's field manager.
async fn assert_owned(client: &Client, cache: &DynamicObject, expected: &BTreeSet<(String, String)>) {
    let name = cache.name_any();
    let uid = cache.uid().unwrap();
    let objects = eventually(WAIT, &format!("the objects of {name}"), || async {
        let objects = owned(client, &name).await;
        let have: BTreeSet<_> = objects.keys().cloned().collect();
        if &have == expected {
            Ok(objects)
        } else {
            let missing: Vec<_> = expected.difference(&have).collect();
            let extra: Vec<_> = have.difference(expected).collect();
            Err(format!("missing {missing:?}, not expected {extra:?}"))
        }
    })
    .await;
    for ((kind, object), item) in &objects {
        let references = &item.metadata.owner_references;
        assert!(
            references
                .iter()
                .flatten()
                .any(|r| r.kind == "SessionCache" && r.name == name && r.uid == uid && r.controller == Some(true)),
            "{kind} {object} is not owned by SessionCache {name}: {references:?}"
        );
        let managers = &item.metadata.managed_fields;
        assert!(
            managers
                .iter()
                .flatten()
                .any(|m| m.manager.as_deref() == Some(names::FIELD_MANAGER) && m.operation.as_deref() == Some("Apply")),
            "{kind} {object} was not server-side applied by {}: {managers:?}",
            names::FIELD_MANAGER
        );
    }
}

fn condition<'a>(status: &'a Value, type_: &str) -> &'a Value {
    status["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == type_))
        .unwrap_or_else(|| panic!("no {type_} condition in {status:#}"))
}

/// On this server the only problem of a cache whose Secrets exist: the PodDisruptionBudgets.
fn assert_degraded_only_by_the_missing_policy_v1(status: &Value) {
    let degraded = condition(status, "Degraded");
    assert_eq!(degraded["status"], "True", "{degraded:#}");
    assert_eq!(degraded["reason"], "KindNotServed", "{degraded:#}");
    assert_eq!(degraded["message"], NOT_SERVED, "{degraded:#}");
}

/// The printer columns the server shows for a cache (`kubectl get rsc`), by column name.
async fn printer_columns(client: &Client, cache: &str) -> BTreeMap<String, String> {
    let request = http::Request::get(format!(
        "/apis/redsess.io/v1alpha1/namespaces/{NS}/sessioncaches/{cache}"
    ))
    .header("Accept", "application/json;as=Table;v=v1;g=meta.k8s.io")
    .body(Vec::new())
    .unwrap();
    let table: Value = client.request(request).await.expect("the server's table of the cache");
    let names: Vec<String> = table["columnDefinitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap().to_string())
        .collect();
    let cells = table["rows"][0]["cells"].as_array().unwrap();
    names
        .into_iter()
        .zip(
            cells
                .iter()
                .map(|c| c.as_str().map(String::from).unwrap_or_else(|| c.to_string())),
        )
        .collect()
}

/// The resource version of the cache and of each object it owns: what changes when anything
/// is written.
async fn versions(client: &Client, cache: &str) -> BTreeMap<String, String> {
    let mut out: BTreeMap<String, String> = owned(client, cache)
        .await
        .into_iter()
        .map(|((kind, name), o)| (format!("{kind} {name}"), o.resource_version().unwrap_or_default()))
        .collect();
    let object = caches(client).get(cache).await.unwrap();
    out.insert(format!("SessionCache {cache}"), object.resource_version().unwrap());
    out
}

/// Waits until nothing of `cache` is written for 3 s (pods of the workloads are created and the
/// controller manager reports on them first); fails if that never happens: a hot loop.
async fn settled(client: &Client, cache: &str) -> BTreeMap<String, String> {
    let mut last = versions(client, cache).await;
    for _ in 0..15 {
        tokio::time::sleep(Duration::from_secs(3)).await;
        let now = versions(client, cache).await;
        if now == last {
            return now;
        }
        last = now;
    }
    panic!("{cache}: objects are still being written after 45 s (a hot loop?): {last:?}");
}

async fn secret_values(client: &Client, cache: &str) -> BTreeMap<String, Value> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), NS);
    let mut out = BTreeMap::new();
    for (_, name) in generated_secrets(cache, false, &[]) {
        let secret = secrets
            .get(&name)
            .await
            .unwrap_or_else(|e| panic!("Secret {name}: {e}"));
        out.insert(name, serde_json::to_value(&secret.data).unwrap());
    }
    out
}

async fn apply_cache(client: &Client, cache: &DynamicObject) -> DynamicObject {
    k8s::apply(client, cache).await.expect("the SessionCache is accepted")
}

async fn start_operator(kubeconfig: &Path, identity: &str) -> Operator {
    let mut operator = Operator::start(kubeconfig, OPERATOR_NAMESPACE, identity);
    eventually(WAIT, "the operator ready", || {
        let ready = operator.is_ready();
        let running = operator.is_running();
        async move {
            match (running, ready) {
                (false, _) => Err("it exited".to_string()),
                (true, true) => Ok(()),
                (true, false) => Err("not ready".to_string()),
            }
        }
    })
    .await;
    operator
}

/// The events about one object, as `reason: note`.
async fn events_about(client: &Client, name: &str) -> Vec<String> {
    let resource = ApiResource::erase::<k8s_openapi::api::events::v1::Event>(&());
    let events: Api<DynamicObject> = Api::namespaced_with(client.clone(), NS, &resource);
    events
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| e.data["regarding"]["name"] == name)
        .map(|e| {
            format!(
                "{}: {}",
                e.data["reason"].as_str().unwrap_or(""),
                e.data["note"].as_str().unwrap_or("")
            )
        })
        .collect()
}

#[tokio::test]
async fn the_operator_against_a_real_api_server() {
    let Some(plane) = ControlPlane::start("operator_cluster") else {
        return;
    };
    let admin = plane.admin().await;
    let kubeconfig = k8s::install_operator(&plane).await;
    k8s::namespace(&admin, NS).await;
    // cert-manager's Certificate kind served (by a stand-in CRD), as where cert-manager runs.
    let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let certificate_crd = std::fs::read_to_string(root.join("fixtures/cert-manager-certificate-crd.yaml")).unwrap();
    for crd in k8s::documents(&certificate_crd) {
        k8s::apply(&admin, &crd).await.expect("the Certificate CRD is accepted");
    }
    let mut operator = start_operator(&kubeconfig, "redsess-operator-a").await;
    assert!(
        operator.logs().contains(NOT_SERVED),
        "the missing policy/v1 is logged at start:\n{}",
        operator.logs()
    );

    // 1. The minimal sample: everything but the PodDisruptionBudgets, owned and applied.
    let minimal = apply_cache(&admin, &sample("minimal.yaml", |_| {})).await;
    let status = k8s::cache_status_at(&admin, NS, "sessions-dev", 1).await;
    let mut expected = rendered(&minimal);
    expected.extend(generated_secrets("sessions-dev", false, &[]));
    assert_owned(&admin, &minimal, &expected).await;
    assert_degraded_only_by_the_missing_policy_v1(&status);
    assert_eq!(
        condition(&status, "Available")["status"],
        "False",
        "no kubelet: nothing is ready"
    );
    assert_eq!(condition(&status, "Available")["reason"], "ComponentsNotReady");
    assert_eq!(status["redis"]["summary"], "0/1");
    assert_eq!(status["shim"]["summary"], "0/2");
    assert_eq!(status["endpoints"]["redis"], "sessions-dev-redis.isam.svc:6379");
    for condition in status["conditions"].as_array().unwrap() {
        let message = condition["message"].as_str().unwrap();
        assert!(!message.contains('\n') && !message.contains("Status {"), "{message}");
    }
    let columns = printer_columns(&admin, "sessions-dev").await;
    assert_eq!(columns["Redis"], "0/1", "{columns:?}");
    assert_eq!(columns["Shim"], "0/2", "{columns:?}");
    assert_eq!(columns["Available"], "False", "{columns:?}");
    let degraded_since = condition(&status, "Degraded")["lastTransitionTime"].clone();
    let kind_events: Vec<String> = events_about(&admin, "sessions-dev")
        .await
        .into_iter()
        .filter(|e| e.starts_with("KindNotServed"))
        .collect();
    assert_eq!(kind_events, [format!("KindNotServed: {NOT_SERVED}")], "reported once");

    // 2. No hot loop: once the workloads' pods exist, nothing is written and nothing reconciled.
    let quiet = settled(&admin, "sessions-dev").await;
    let reconciles = operator.reconciles();
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(
        versions(&admin, "sessions-dev").await,
        quiet,
        "written while nothing changed"
    );
    assert_eq!(operator.reconciles(), reconciles, "reconciled while nothing changed");
    let secrets = secret_values(&admin, "sessions-dev").await;

    // 3. Sentinel on, more shims, two clients.
    let grown = sample("minimal.yaml", |v| {
        v["spec"] = json!({
            "redis": {"replicas": 3},
            "shim": {"replicas": 3},
            "clients": [{"name": "www", "kind": "WebSEALDSC"}, {"name": "api", "kind": "IAG"}]
        })
    });
    let grown = apply_cache(&admin, &grown).await;
    let status = k8s::cache_status_at(&admin, NS, "sessions-dev", 2).await;
    let mut expected = rendered(&grown);
    expected.extend(generated_secrets("sessions-dev", true, &["api"]));
    assert!(expected.contains(&("StatefulSet".into(), "sessions-dev-sentinel".into())));
    assert!(expected.contains(&("ConfigMap".into(), "sessions-dev-client-api".into())));
    assert_owned(&admin, &grown, &expected).await;
    assert_eq!(status["sentinel"]["summary"], "0/3");
    assert_eq!(status["shim"]["summary"], "0/3");
    assert_eq!(
        status["endpoints"]["sentinel"],
        "sessions-dev-sentinel.isam.svc:26379/redsess"
    );
    let hashes = status["clientConfigHashes"].as_object().unwrap();
    assert_eq!(hashes.keys().collect::<Vec<_>>(), ["api", "www"]);
    assert_eq!(printer_columns(&admin, "sessions-dev").await["Sentinel"], "0/3");
    assert_eq!(
        condition(&status, "Degraded")["lastTransitionTime"],
        degraded_since,
        "still Degraded for the same reason: no transition"
    );
    assert_eq!(condition(&status, "Degraded")["observedGeneration"], 2);

    // 4. Sentinel off and a client removed: their objects are pruned.
    let shrunk = sample("minimal.yaml", |v| {
        v["spec"] = json!({"clients": [{"name": "www", "kind": "WebSEALDSC"}]})
    });
    let shrunk = apply_cache(&admin, &shrunk).await;
    let status = k8s::cache_status_at(&admin, NS, "sessions-dev", 3).await;
    let mut expected = rendered(&shrunk);
    expected.extend(generated_secrets("sessions-dev", true, &["api"]));
    assert!(!expected
        .iter()
        .any(|(kind, name)| kind != "Secret" && name.contains("sentinel") || name.ends_with("-api")));
    assert_owned(&admin, &shrunk, &expected).await;
    assert!(status.get("sentinel").is_none_or(Value::is_null), "{status:#}");
    assert_eq!(
        status["clientConfigHashes"]
            .as_object()
            .unwrap()
            .keys()
            .collect::<Vec<_>>(),
        ["www"]
    );
    assert!(
        events_about(&admin, "sessions-dev")
            .await
            .iter()
            .any(|e| e.starts_with("Pruned: ") && e.contains("StatefulSet sessions-dev-sentinel")),
        "a Pruned event names what went"
    );
    assert_eq!(
        secret_values(&admin, "sessions-dev").await,
        secrets,
        "generated Secrets keep their values"
    );

    // 5. A SessionCache written under another schema does not read; it is reported on itself
    //    and the others are still reconciled.
    set_spec_schema(
        &admin,
        Some(json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true})),
    )
    .await;
    let broken = sample("minimal.yaml", |v| {
        v["metadata"]["name"] = json!("broken");
        v["spec"] = json!({"redis": {"replicas": "three"}});
    });
    apply_cache(&admin, &broken).await;
    set_spec_schema(&admin, None).await;
    eventually(WAIT, "an UnreadableSpec event on broken", || async {
        let events = events_about(&admin, "broken").await;
        if events.iter().any(|e| {
            e.starts_with(
                "UnreadableSpec: cannot read this SessionCache: spec.redis.replicas: invalid type: string \"three\"",
            )
        }) {
            Ok(())
        } else {
            Err(format!("{events:?}"))
        }
    })
    .await;
    assert!(
        operator
            .logs()
            .lines()
            .any(|l| l.contains(r#"reconcile{namespace="isam" cache="broken"}"#) && l.contains("spec.redis.replicas")),
        "the reconcile's log lines name the cache:\n{}",
        operator.logs()
    );
    let edge = apply_cache(&admin, &sample("webseal-and-iag.yaml", |_| {})).await;
    let status = k8s::cache_status_at(&admin, NS, "sessions-edge", 1).await;
    let mut expected = rendered(&edge);
    expected.extend(generated_secrets(
        "sessions-edge",
        true,
        &["partner-portal", "api-gateway"],
    ));
    // spec.redis.tls: the generated CA (the operator's only), the certificate, the CA alone.
    for name in [
        "sessions-edge-redis-tls-issuer",
        "sessions-edge-redis-tls",
        "sessions-edge-redis-ca",
    ] {
        expected.insert(("Secret".into(), name.into()));
    }
    assert_owned(&admin, &edge, &expected).await;
    let secret_keys = |name: &'static str| {
        let admin = admin.clone();
        async move {
            let secret = Api::<Secret>::namespaced(admin, NS).get(name).await.unwrap();
            secret.data.unwrap_or_default()
        }
    };
    let ca = secret_keys("sessions-edge-redis-ca").await;
    let certificate = secret_keys("sessions-edge-redis-tls").await;
    assert_eq!(
        ca.keys().collect::<Vec<_>>(),
        ["ca.crt"],
        "the clients' Secret holds no key"
    );
    assert_eq!(ca["ca.crt"], certificate["ca.crt"]);
    assert!(certificate.contains_key("tls.key") && certificate.contains_key("tls.crt"));
    let degraded = condition(&status, "Degraded");
    assert_eq!(
        degraded["message"],
        format!("{NOT_SERVED}; spec.shim.security.tlsSecret: Secret sessions-edge-shim-tls does not exist")
    );

    // 6. An operator restart (the broken cache still there): one reconcile per cache, nothing
    //    written, the generated Secrets kept.
    let quiet = [
        settled(&admin, "sessions-dev").await,
        settled(&admin, "sessions-edge").await,
    ];
    let logs = operator.logs();
    let pdb_lines: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("PodDisruptionBudget") || l.contains("poddisruptionbudgets"))
        .collect();
    assert_eq!(
        pdb_lines.len(),
        1,
        "the missing kind is logged once, and not watched: {pdb_lines:#?}"
    );
    operator.stop();
    let restarted = start_operator(&kubeconfig, "redsess-operator-b").await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        [
            versions(&admin, "sessions-dev").await,
            versions(&admin, "sessions-edge").await
        ],
        quiet,
        "the restarted operator wrote objects that had not changed"
    );
    let after_restart = restarted.reconciles();
    assert!(
        (2..=4).contains(&after_restart),
        "{after_restart} reconciles of 2 caches after a restart: a storm\n{}",
        restarted.logs()
    );
    assert_eq!(
        secret_values(&admin, "sessions-dev").await,
        secrets,
        "generated Secrets keep their values"
    );

    // 7. An object the server refuses (a quota on ConfigMaps) does not stop the others, is
    //    reported with the server's reason, and is retried until it goes through.
    refused_objects_are_reported_and_retried(&admin).await;

    // 7a. With an issuer, the operator asks cert-manager for the certificate (a Certificate it
    //     owns) and prunes it when the issuer is no longer named.
    issuer_certificates_are_applied_and_pruned(&admin).await;

    // 7b. The operator's record key rotation writes its steps into the generated key Secret it
    //     created (server-side apply over its own stringData): aged by hand, the next
    //     reconcile adds the new key second, to open only.
    rotation_steps_are_written(&admin).await;

    // 8. Deleted: the controller manager's garbage collector removes every owned object,
    //    generated Secrets included.
    caches(&admin)
        .delete("sessions-dev", &DeleteParams::default())
        .await
        .expect("delete the SessionCache");
    eventually(
        Duration::from_secs(60),
        "garbage collection of sessions-dev",
        || async {
            let left = owned(&admin, "sessions-dev").await;
            if left.is_empty() {
                Ok(())
            } else {
                Err(format!("{:?}", left.keys().collect::<Vec<_>>()))
            }
        },
    )
    .await;
    drop(restarted);
}

/// Replaces the CRD's schema of `spec` (`None`: the operator's own, from `crds/`).
async fn issuer_certificates_are_applied_and_pruned(admin: &Client) {
    let certificates: Api<DynamicObject> = Api::namespaced_with(admin.clone(), NS, &Kind::Certificate.api_resource());
    let issued = apply_cache(
        admin,
        &sample("minimal.yaml", |v| {
            v["metadata"]["name"] = json!("issued");
            v["spec"] = json!({"redis": {"tls": {"enabled": true, "issuerRef": {"name": "ca"}}}});
        }),
    )
    .await;
    let certificate = eventually(WAIT, "the Certificate of issued", || async {
        certificates.get("issued-redis-tls").await.map_err(|e| e.to_string())
    })
    .await;
    assert_eq!(certificate.data["spec"]["secretName"], "issued-redis-tls");
    assert_eq!(
        certificate.data["spec"]["issuerRef"],
        json!({"name": "ca", "kind": "Issuer", "group": "cert-manager.io"})
    );
    assert!(certificate
        .owner_references()
        .iter()
        .any(|r| r.uid == issued.uid().unwrap() && r.controller == Some(true)));
    // The Secret is cert-manager's to write: not reported missing, and nothing generated for it.
    let status = k8s::cache_status_at(admin, NS, "issued", 1).await;
    assert!(
        !condition(&status, "Degraded")["message"]
            .as_str()
            .unwrap_or_default()
            .contains("issued-redis-tls"),
        "{status:#}"
    );
    let secrets: Api<Secret> = Api::namespaced(admin.clone(), NS);
    assert!(secrets.get_opt("issued-redis-tls-issuer").await.unwrap().is_none());

    apply_cache(
        admin,
        &sample("minimal.yaml", |v| {
            v["metadata"]["name"] = json!("issued");
            v["spec"] = json!({"redis": {"tls": {"enabled": true}}});
        }),
    )
    .await;
    eventually(WAIT, "the Certificate pruned once the issuer goes", || async {
        match certificates
            .get_opt("issued-redis-tls")
            .await
            .map_err(|e| e.to_string())?
        {
            None => Ok(()),
            Some(c) if c.metadata.deletion_timestamp.is_some() => Ok(()),
            Some(_) => Err("still there".to_string()),
        }
    })
    .await;
    caches(admin).delete("issued", &DeleteParams::default()).await.unwrap();
}

async fn rotation_steps_are_written(admin: &Client) {
    use redsess_operator::record_keys::{SEALING_SINCE_ANNOTATION, STAGED_ANNOTATION};
    let sealed = sample("minimal.yaml", |v| {
        v["metadata"]["name"] = json!("sealed");
        v["spec"] = json!({"shim": {"encryption": {"mode": "Sealed"}}});
    });
    apply_cache(admin, &sealed).await;
    let secrets: Api<Secret> = Api::namespaced(admin.clone(), NS);
    let annotated = |key: &'static str| {
        let secrets = secrets.clone();
        move || {
            let secrets = secrets.clone();
            async move {
                let secret = secrets.get("sealed-record-keys").await.map_err(|e| e.to_string())?;
                match secret.metadata.annotations.as_ref().and_then(|a| a.get(key)) {
                    Some(_) => Ok(secret),
                    None => Err(format!("no {key} yet: {:?}", secret.metadata.annotations)),
                }
            }
        }
    };
    let secret = eventually(
        WAIT,
        "the key Secret, its clock started",
        annotated(SEALING_SINCE_ANNOTATION),
    )
    .await;
    let key_lines = |secret: &Secret| -> usize {
        String::from_utf8_lossy(&secret.data.as_ref().unwrap()["keys"].0)
            .lines()
            .filter(|l| !l.starts_with('#'))
            .count()
    };
    assert_eq!(key_lines(&secret), 1);
    let aged = json!({"metadata": {"annotations": {SEALING_SINCE_ANNOTATION: "2020-01-01T00:00:00Z"}}});
    secrets
        .patch("sealed-record-keys", &PatchParams::default(), &Patch::Merge(&aged))
        .await
        .unwrap();
    // Secrets are not watched: a change to an owned object makes the reconcile come now.
    let config_maps: Api<ConfigMap> = Api::namespaced(admin.clone(), NS);
    config_maps
        .delete("sealed-redis-config", &DeleteParams::default())
        .await
        .unwrap();
    let staged = eventually(WAIT, "a new key staged", annotated(STAGED_ANNOTATION)).await;
    assert_eq!(key_lines(&staged), 2, "the new key is added, the old one still seals");
    caches(admin).delete("sealed", &DeleteParams::default()).await.unwrap();
}

async fn set_spec_schema(admin: &Client, spec: Option<Value>) {
    let text = std::fs::read_to_string(k8s::workspace_root().join("crds/sessioncaches.redsess.io.yaml")).unwrap();
    let crd = k8s::documents(&text).remove(0);
    let mut value = serde_json::to_value(&crd).unwrap();
    if let Some(spec) = spec {
        for version in value["spec"]["versions"].as_array_mut().unwrap() {
            version["schema"]["openAPIV3Schema"]["properties"]["spec"] = spec.clone();
        }
    }
    k8s::apply(admin, &serde_json::from_value(value).unwrap())
        .await
        .expect("the CRD is accepted");
    // The API server takes the new schema a moment later.
    tokio::time::sleep(Duration::from_secs(2)).await;
}

async fn refused_objects_are_reported_and_retried(admin: &Client) {
    const QUOTA_NS: &str = "quota";
    k8s::namespace(admin, QUOTA_NS).await;
    // kube-root-ca.crt and the Redis configuration fit; the client fragment does not.
    let quota = |configmaps: &str| -> DynamicObject {
        serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "ResourceQuota",
            "metadata": {"name": "configmaps", "namespace": QUOTA_NS},
            "spec": {"hard": {"configmaps": configmaps}}
        }))
        .unwrap()
    };
    k8s::apply(admin, &quota("2")).await.expect("quota");
    let quotas: Api<DynamicObject> = Api::namespaced_with(
        admin.clone(),
        QUOTA_NS,
        &ApiResource::erase::<k8s_openapi::api::core::v1::ResourceQuota>(&()),
    );
    eventually(WAIT, "the quota counted", || async {
        let q = quotas.get("configmaps").await.map_err(|e| e.to_string())?;
        if q.data["status"]["hard"]["configmaps"] == "2" {
            Ok(())
        } else {
            Err(q.data["status"].to_string())
        }
    })
    .await;
    let cache = sample("minimal.yaml", |v| {
        v["metadata"] = json!({"name": "limited", "namespace": QUOTA_NS});
        v["spec"] = json!({"clients": [{"name": "web", "kind": "WebSEALDSC"}]});
    });
    k8s::apply(admin, &cache).await.expect("the SessionCache is accepted");
    let limited: Api<DynamicObject> = Api::namespaced_with(admin.clone(), QUOTA_NS, &cache_resource());
    let degraded = eventually(WAIT, "limited reports the refused ConfigMap", || async {
        let object = limited.get("limited").await.map_err(|e| e.to_string())?;
        let status = object.data.get("status").cloned().unwrap_or_default();
        let degraded = status["conditions"]
            .as_array()
            .and_then(|c| c.iter().find(|c| c["type"] == "Degraded").cloned())
            .unwrap_or_default();
        if degraded["reason"] == "ApplyFailed" {
            Ok(degraded)
        } else {
            Err(status.to_string())
        }
    })
    .await;
    let message = degraded["message"].as_str().unwrap();
    assert!(
        message.contains("cannot apply ConfigMap limited-client-web: ")
            && message.contains("exceeded quota")
            && message.contains("(HTTP 403 Forbidden)")
            && message.contains(NOT_SERVED),
        "{message}"
    );
    assert!(!message.contains('\n') && !message.contains("Status {"), "{message}");
    // Everything after the refused ConfigMap was applied all the same.
    let deployments: Api<DynamicObject> =
        Api::namespaced_with(admin.clone(), QUOTA_NS, &Kind::Deployment.api_resource());
    let policies: Api<DynamicObject> =
        Api::namespaced_with(admin.clone(), QUOTA_NS, &Kind::NetworkPolicy.api_resource());
    deployments
        .get("limited-shim")
        .await
        .expect("the shim Deployment exists");
    policies.get("limited-redis").await.expect("the NetworkPolicy exists");

    // Room for the fragment: the backoff retry applies it.
    k8s::apply(admin, &quota("5")).await.expect("quota");
    let configmaps: Api<DynamicObject> = Api::namespaced_with(admin.clone(), QUOTA_NS, &Kind::ConfigMap.api_resource());
    eventually(Duration::from_secs(60), "the fragment applied on a retry", || async {
        let object = limited.get("limited").await.map_err(|e| e.to_string())?;
        let reason = object.data["status"]["conditions"]
            .as_array()
            .and_then(|c| c.iter().find(|c| c["type"] == "Degraded"))
            .map(|c| c["reason"].clone())
            .unwrap_or_default();
        let fragment = configmaps
            .get_opt("limited-client-web")
            .await
            .map_err(|e| e.to_string())?;
        if reason == "KindNotServed" && fragment.is_some() {
            Ok(())
        } else {
            Err(format!("Degraded reason {reason}, fragment {}", fragment.is_some()))
        }
    })
    .await;
}
