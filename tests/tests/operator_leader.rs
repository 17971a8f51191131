//! Two `redsess-operator` processes against a real API server (see `redsess_tests::k8s`): one
//! leads through the Lease, the other stands by without reconciling, and takes over when the
//! leader is killed (SIGKILL: no release, the Lease has to expire).

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, DynamicObject};
use kube::Client;
use redsess_operator::leader::{LEASE_DURATION, LEASE_NAME, RENEW_INTERVAL};
use redsess_tests::k8s::{self, eventually, ControlPlane, Operator, OPERATOR_NAMESPACE};
use serde_json::json;

const NS: &str = "isam";

async fn holder(client: &Client) -> Option<String> {
    let leases: Api<Lease> = Api::namespaced(client.clone(), OPERATOR_NAMESPACE);
    leases
        .get_opt(LEASE_NAME)
        .await
        .ok()
        .flatten()
        .and_then(|l| l.spec?.holder_identity)
}

fn cache(shim_replicas: i32) -> DynamicObject {
    serde_json::from_value(json!({
        "apiVersion": "redsess.io/v1alpha1",
        "kind": "SessionCache",
        "metadata": {"name": "sessions", "namespace": NS},
        "spec": {"shim": {"replicas": shim_replicas}}
    }))
    .unwrap()
}

#[tokio::test]
async fn a_standby_takes_over_when_the_leader_dies() {
    let Some(plane) = ControlPlane::start("operator_leader") else {
        return;
    };
    let admin = plane.admin().await;
    let kubeconfig = k8s::install_operator(&plane).await;
    k8s::namespace(&admin, NS).await;

    let a = Operator::start(&kubeconfig, OPERATOR_NAMESPACE, "redsess-operator-a");
    let leader = eventually(Duration::from_secs(30), "a leader", || async {
        holder(&admin).await.ok_or_else(|| "no holder".to_string())
    })
    .await;
    assert_eq!(leader, "redsess-operator-a");
    let b = Operator::start(&kubeconfig, OPERATOR_NAMESPACE, "redsess-operator-b");
    eventually(Duration::from_secs(30), "both ready", || async {
        if a.is_ready() && b.is_ready() {
            Ok(())
        } else {
            Err(format!("a ready {}, b ready {}", a.is_ready(), b.is_ready()))
        }
    })
    .await;

    k8s::apply(&admin, &cache(2))
        .await
        .expect("the SessionCache is accepted");
    k8s::cache_status_at(&admin, NS, "sessions", 1).await;
    assert!(a.reconciles() >= 1, "the leader reconciles");
    assert_eq!(b.reconciles(), 0, "the standby does not reconcile");
    assert_eq!(holder(&admin).await.as_deref(), Some("redsess-operator-a"));

    // The leader dies without releasing the Lease: the standby takes it once it expires.
    let mut a = a;
    let killed = Instant::now();
    a.kill();
    eventually(
        LEASE_DURATION + Duration::from_secs(15),
        "the standby holding the Lease",
        || async {
            match holder(&admin).await {
                Some(h) if h == "redsess-operator-b" => Ok(()),
                other => Err(format!("holder {other:?}")),
            }
        },
    )
    .await;
    let took = killed.elapsed();
    // The last renewal came at most RENEW_INTERVAL before the kill.
    assert!(
        took + RENEW_INTERVAL + Duration::from_secs(1) >= LEASE_DURATION,
        "took over after {took:?}, before the Lease could expire"
    );
    k8s::apply(&admin, &cache(3))
        .await
        .expect("the SessionCache is accepted");
    k8s::cache_status_at(&admin, NS, "sessions", 2).await;
    assert!(b.reconciles() >= 1, "the new leader reconciles");
}
