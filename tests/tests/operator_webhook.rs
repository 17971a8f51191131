//! Sidecar mode against a real API server (see `redsess_tests::k8s`): a
//! MutatingWebhookConfiguration as the chart writes it, pointing at the running operator's
//! webhook by URL on loopback, with an empty caBundle that the operator fills with its own CA.
//! The API server calls the webhook for every pod created in an enabled namespace: a selected
//! pod is stored with the shim (a plain container here: 1.20 predates native sidecars), an
//! unselected one unchanged, and with the operator stopped a selected pod is refused, saying
//! why.

use std::time::Duration;

use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::core::v1::{Pod, ServiceAccount};
use kube::api::{Api, PostParams};
use kube::Client;
use redsess_operator::build::sidecar::{CONTAINER, HASH_ANNOTATION, SIDECAR_LABEL};
use redsess_operator::webhook::{CONFIGURATION, PATH};
use redsess_tests::free_port;
use redsess_tests::k8s::{self, eventually, ControlPlane, Operator, OPERATOR_NAMESPACE};
use serde_json::json;

const NS: &str = "isam";
const WAIT: Duration = Duration::from_secs(40);

fn pod(name: &str, labels: serde_json::Value) -> Pod {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": NS, "labels": labels},
        "spec": {"containers": [{"name": "webseal", "image": "icr.io/ivia/ivia-wrp:11.0.0.0"}]}
    }))
    .unwrap()
}

async fn create(client: &Client, pod: &Pod) -> Result<Pod, kube::Error> {
    Api::<Pod>::namespaced(client.clone(), NS)
        .create(&PostParams::default(), pod)
        .await
}

fn containers(pod: &Pod) -> Vec<String> {
    pod.spec
        .as_ref()
        .unwrap()
        .containers
        .iter()
        .map(|c| c.name.clone())
        .collect()
}

/// Posts an AdmissionReview of a pod shaped like the verify-access-operator's to the webhook, as
/// the API server would, over TLS verified against `ca_pem` for 127.0.0.1.
async fn review_over_https(port: u16, ca_pem: &[u8]) {
    use rustls::pki_types::pem::PemObject;
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_slice_iter(ca_pem) {
        roots.add(cert.unwrap()).unwrap();
    }
    let tls = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let http = reqwest::Client::builder().use_preconfigured_tls(tls).build().unwrap();
    let review = json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": "b1d2c3e4-0000-4000-8000-000000000001",
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": NS, "operation": "CREATE",
            "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller"},
            "object": {
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"generateName": "webseal-default-", "namespace": NS,
                             "labels": {"app": "webseal", "kind": "IBMSecurityVerifyAccess", "VerifyAccess_cr": "webseal-default"}},
                "spec": {"containers": [{"name": "webseal-default", "image": "icr.io/ivia/ivia-wrp:11.0.0.0"}]}
            }
        }
    });
    let answer = http
        .post(format!("https://127.0.0.1:{port}{PATH}"))
        .header("content-type", "application/json")
        .body(serde_json::to_vec(&review).unwrap())
        .send()
        .await
        .expect("the webhook answers over TLS for 127.0.0.1 with the operator's CA")
        .bytes()
        .await
        .unwrap();
    let answer: serde_json::Value = serde_json::from_slice(&answer).unwrap();
    let response = &answer["response"];
    assert_eq!(answer["kind"], "AdmissionReview", "{answer:#}");
    assert_eq!(response["uid"], "b1d2c3e4-0000-4000-8000-000000000001");
    assert_eq!(response["allowed"], true);
    assert_eq!(response["patchType"], "JSONPatch", "{response:#}");

    // Not a review at all: a clear refusal, not a crash.
    let refused = http
        .post(format!("https://127.0.0.1:{port}{PATH}"))
        .header("content-type", "application/json")
        .body("{\"kind\": \"Pod\"}")
        .send()
        .await
        .unwrap();
    assert!(refused.status().is_client_error(), "{}", refused.status());
}

#[tokio::test]
async fn the_webhook_injects_the_shim_through_a_real_api_server() {
    let Some(plane) = ControlPlane::start("operator_webhook") else {
        return;
    };
    let admin = plane.admin().await;
    let kubeconfig = k8s::install_operator(&plane).await;
    k8s::apply(
        &admin,
        &serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": NS, "labels": {"redsess.io/injection": "enabled"}}
        }))
        .unwrap(),
    )
    .await
    .unwrap();
    // Pods need the namespace's default ServiceAccount, which the controller manager makes.
    let accounts: Api<ServiceAccount> = Api::namespaced(admin.clone(), NS);
    eventually(WAIT, "the default ServiceAccount", || async {
        accounts
            .get_opt("default")
            .await
            .map_err(|e| e.to_string())?
            .ok_or("not yet".to_string())
    })
    .await;

    // As the chart writes it, but by URL on loopback: no Service routes to a process here.
    let port = free_port();
    let configuration: serde_json::Value = json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": CONFIGURATION},
        "webhooks": [{
            "name": "pods.redsess.io",
            "admissionReviewVersions": ["v1"],
            "clientConfig": {"url": format!("https://127.0.0.1:{port}{PATH}")},
            "rules": [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"], "resources": ["pods"], "scope": "Namespaced"}],
            "namespaceSelector": {"matchExpressions": [
                {"key": "redsess.io/injection", "operator": "In", "values": ["enabled"]},
                {"key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": [OPERATOR_NAMESPACE, "kube-system"]}
            ]},
            "failurePolicy": "Fail",
            "sideEffects": "None",
            "reinvocationPolicy": "IfNeeded",
            "timeoutSeconds": 5
        }, {
            "name": "sessioncaches.redsess.io",
            "admissionReviewVersions": ["v1"],
            "clientConfig": {"url": format!("https://127.0.0.1:{port}{}", redsess_operator::defaulting::PATH)},
            "rules": [{"apiGroups": ["redsess.io"], "apiVersions": ["v1alpha1"], "operations": ["CREATE"], "resources": ["sessioncaches"], "scope": "Namespaced"}],
            "failurePolicy": "Fail",
            "sideEffects": "None",
            "timeoutSeconds": 5
        }]
    });
    k8s::apply(&admin, &serde_json::from_value(configuration).unwrap())
        .await
        .expect("the MutatingWebhookConfiguration is accepted");

    let mut operator = Operator::start_with(
        &kubeconfig,
        OPERATOR_NAMESPACE,
        "redsess-operator-a",
        &[
            "--webhook-addr",
            &format!("127.0.0.1:{port}"),
            "--webhook-hosts",
            "127.0.0.1",
        ],
    );
    let configurations: Api<MutatingWebhookConfiguration> = Api::all(admin.clone());
    eventually(WAIT, "the operator's CA in every caBundle", || async {
        let c = configurations.get(CONFIGURATION).await.map_err(|e| e.to_string())?;
        let bundles: Vec<_> = c
            .webhooks
            .unwrap_or_default()
            .into_iter()
            .map(|w| w.client_config.ca_bundle)
            .collect();
        if bundles.len() == 2
            && bundles.iter().all(|b| {
                b.as_ref()
                    .is_some_and(|b| String::from_utf8_lossy(&b.0).contains("BEGIN CERTIFICATE"))
            })
        {
            Ok(())
        } else {
            Err(format!("{bundles:?}"))
        }
    })
    .await;

    // Ready only once its webhook serves (the webhook Service sends reviews to ready replicas).
    eventually(WAIT, "the operator ready, its webhook serving", || {
        let ready = operator.is_ready();
        async move {
            if ready {
                Ok(())
            } else {
                Err("not ready".to_string())
            }
        }
    })
    .await;

    k8s::apply(
        &admin,
        &serde_json::from_value(json!({
            "apiVersion": "redsess.io/v1alpha1", "kind": "SessionCache",
            "metadata": {"name": "sessions", "namespace": NS},
            "spec": {"shim": {"mode": "Sidecar", "sidecar": {"podSelector": {"matchLabels": {"app": "webseal"}}}}}
        }))
        .unwrap(),
    )
    .await
    .unwrap();

    // A new cache without a record encryption mode is stored sealing; a named mode is kept.
    let caches: Api<kube::api::DynamicObject> = Api::namespaced_with(
        admin.clone(),
        NS,
        &kube::api::ApiResource::erase::<redsess_operator::crd::SessionCache>(&()),
    );
    let stored_mode = |name: &'static str| {
        let caches = caches.clone();
        async move { caches.get(name).await.unwrap().data["spec"]["shim"]["encryption"]["mode"].clone() }
    };
    assert_eq!(stored_mode("sessions").await, "SealMigrating");
    k8s::apply(
        &admin,
        &serde_json::from_value(json!({
            "apiVersion": "redsess.io/v1alpha1", "kind": "SessionCache",
            "metadata": {"name": "kept-plain", "namespace": NS},
            "spec": {"shim": {"encryption": {"mode": "Plain"}}}
        }))
        .unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(stored_mode("kept-plain").await, "Plain");

    // The webhook may start before its watch has seen the new cache: retry the first pod.
    let selected = eventually(WAIT, "a selected pod stored with the shim", || async {
        let name = format!("webseal-{}", free_port());
        let stored = create(&admin, &pod(&name, json!({"app": "webseal"})))
            .await
            .map_err(|e| e.to_string())?;
        if containers(&stored).contains(&CONTAINER.to_string()) {
            Ok(stored)
        } else {
            Err(format!("stored without the shim: {:?}", containers(&stored)))
        }
    })
    .await;
    assert_eq!(
        containers(&selected),
        ["webseal", CONTAINER],
        "a plain container on 1.20"
    );
    assert!(selected.spec.as_ref().unwrap().init_containers.is_none());
    assert_eq!(selected.metadata.labels.as_ref().unwrap()[SIDECAR_LABEL], "sessions");
    assert_eq!(
        selected.metadata.annotations.as_ref().unwrap()[HASH_ANNOTATION].len(),
        64
    );

    let other = create(&admin, &pod("other", json!({"app": "other"})))
        .await
        .expect("an unselected pod");
    assert_eq!(containers(&other), ["webseal"], "stored unchanged");
    assert!(other.metadata.labels.as_ref().unwrap().get(SIDECAR_LABEL).is_none());

    // The webhook itself, over HTTPS, trusting only the CA the operator made.
    let secrets: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(admin.clone(), OPERATOR_NAMESPACE);
    let ca = secrets
        .get(redsess_operator::certificates::SECRET)
        .await
        .expect("the webhook's Secret");
    let ca_pem = ca.data.unwrap()["ca.crt"].0.clone();
    review_over_https(port, &ca_pem).await;

    // The status counts the injected pod, up to date (the pod watch needs the chart's RBAC).
    eventually(WAIT, "status.sidecars", || async {
        let status = caches.get("sessions").await.map_err(|e| e.to_string())?.data["status"].clone();
        if status["sidecars"]["injected"] == 1 && status["sidecars"]["outdated"] == 0 {
            Ok(())
        } else {
            Err(status.to_string())
        }
    })
    .await;

    // With the operator stopped, a selected pod is refused (failurePolicy Fail), saying why.
    operator.kill();
    let refused = create(&admin, &pod("while-down", json!({"app": "webseal"})))
        .await
        .expect_err("a selected pod must not start without its shim");
    let message = redsess_operator::api_error::one_line(&refused);
    assert!(
        message.contains("failed calling webhook \"pods.redsess.io\"") && message.contains(PATH),
        "{message}"
    );
    // And a new SessionCache is refused rather than stored without its defaults.
    let refused = k8s::apply(
        &admin,
        &serde_json::from_value(json!({
            "apiVersion": "redsess.io/v1alpha1", "kind": "SessionCache",
            "metadata": {"name": "while-down", "namespace": NS},
            "spec": {}
        }))
        .unwrap(),
    )
    .await
    .expect_err("a SessionCache created while no replica answers");
    let message = redsess_operator::api_error::one_line(&refused);
    assert!(
        message.contains("failed calling webhook \"sessioncaches.redsess.io\""),
        "{message}"
    );
}
