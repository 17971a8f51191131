//! A real Kubernetes API server for the operator's end-to-end tests, used the way
//! controller-runtime's envtest is: `../shared/k8s/control-plane` starts etcd, kube-apiserver
//! and kube-controller-manager (1.20.2) on free loopback ports; the real `redsess-operator`
//! binary runs against it as a process, with a ServiceAccount's token and the chart's RBAC.
//!
//! Where the control plane cannot run (no `../shared/k8s`, no etcd), a suite is skipped with a
//! message saying why, so the README's test command passes on any machine; with
//! `REDSESS_REQUIRE_K8S=1` (set by `scripts/test` where `../shared/k8s` exists) it fails instead.

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DynamicObject, GroupVersionKind, Patch, PatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::discovery::{self, Scope};
use kube::{Client, ResourceExt};
use serde::Deserialize;

use crate::{capture_stderr, free_port, http_get, operator_binary};

/// `1`: fail, instead of skipping, when the control plane cannot run here.
pub const REQUIRE_ENV: &str = "REDSESS_REQUIRE_K8S";
/// The control-plane script, when it is not at `../shared/k8s/control-plane`.
pub const SCRIPT_ENV: &str = "REDSESS_K8S_CONTROL_PLANE";
/// The field manager of what the tests apply (the operator's is `redsess-operator`).
pub const TEST_MANAGER: &str = "redsess-tests";

/// The repository's root.
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .canonicalize()
        .expect("workspace root")
}

/// The control-plane script, or why the suite cannot run here.
fn find_control_plane() -> Result<PathBuf, String> {
    let script = match std::env::var_os(SCRIPT_ENV) {
        Some(path) => PathBuf::from(path),
        None => workspace_root().join("../shared/k8s/control-plane"),
    };
    if !script.is_file() {
        return Err(format!(
            "{} does not exist (set {SCRIPT_ENV} to the control-plane script of a Kubernetes test server)",
            script.display()
        ));
    }
    let etcd = Command::new("etcd")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    if !etcd.is_ok_and(|s| s.success()) {
        return Err("etcd is not on PATH (Debian: apt-get install etcd-server; scripts/test installs it)".into());
    }
    Ok(script)
}

/// A running etcd + kube-apiserver + kube-controller-manager, stopped when dropped.
pub struct ControlPlane {
    script: PathBuf,
    dir: PathBuf,
    /// The admin kubeconfig (a token in `system:masters`).
    pub kubeconfig: PathBuf,
}

impl ControlPlane {
    /// Starts a control plane for the suite `suite`, or says why it cannot and returns `None`
    /// (the caller skips); under `REDSESS_REQUIRE_K8S=1` that is a failure instead.
    pub fn start(suite: &str) -> Option<ControlPlane> {
        let script = match find_control_plane() {
            Ok(script) => script,
            Err(why) => {
                if std::env::var(REQUIRE_ENV).as_deref() == Ok("1") {
                    panic!("{suite}: {REQUIRE_ENV}=1 but the Kubernetes test server cannot run: {why}");
                }
                eprintln!("SKIPPED {suite}: {why}");
                return None;
            }
        };
        let dir = std::env::temp_dir().join(format!("redsess-k8s-{suite}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let started = Instant::now();
        let out = Command::new("bash")
            .arg(&script)
            .arg("start")
            .arg(&dir)
            .stdin(Stdio::null())
            .output()
            .expect("cannot run the control-plane script");
        let plane = ControlPlane {
            script,
            kubeconfig: PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()),
            dir,
        };
        assert!(
            out.status.success() && plane.kubeconfig.is_file(),
            "control-plane start failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            plane.log("apiserver")
        );
        eprintln!("{suite}: Kubernetes test server up in {:?}", started.elapsed());
        Some(plane)
    }

    /// A client with the admin token.
    pub async fn admin(&self) -> Client {
        client_from(&self.kubeconfig).await
    }

    /// The last lines of one component's log (`apiserver`, `kcm`, `etcd`).
    pub fn log(&self, component: &str) -> String {
        let text = std::fs::read_to_string(self.dir.join(format!("{component}.log"))).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    fn server_url(&self) -> String {
        let ports = std::fs::read_to_string(self.dir.join("ports")).expect("the control plane's ports file");
        let port = ports
            .lines()
            .find_map(|l| l.strip_prefix("apiserver="))
            .expect("apiserver port");
        format!("https://127.0.0.1:{port}")
    }

    /// A kubeconfig that authenticates as the ServiceAccount `namespace/name`, with the token
    /// the controller manager puts into its Secret (Kubernetes 1.20 still makes those).
    pub async fn service_account_kubeconfig(&self, namespace: &str, name: &str) -> PathBuf {
        let secrets: Api<Secret> = Api::namespaced(self.admin().await, namespace);
        let token = eventually(Duration::from_secs(30), "the ServiceAccount's token Secret", || {
            let secrets = secrets.clone();
            async move {
                let list = secrets.list(&Default::default()).await.map_err(|e| e.to_string())?;
                list.items
                    .into_iter()
                    .find(|s| {
                        s.type_.as_deref() == Some("kubernetes.io/service-account-token")
                            && s.annotations()
                                .get("kubernetes.io/service-account.name")
                                .map(String::as_str)
                                == Some(name)
                    })
                    .and_then(|s| s.data?.get("token").cloned())
                    .map(|t| String::from_utf8_lossy(&t.0).into_owned())
                    .ok_or_else(|| "no token Secret yet".to_string())
            }
        })
        .await;
        let path = self.dir.join(format!("kubeconfig-{namespace}-{name}"));
        let config = format!(
            "apiVersion: v1\nkind: Config\n\
             clusters: [{{name: test, cluster: {{server: \"{}\", certificate-authority: \"{}\"}}}}]\n\
             users: [{{name: {name}, user: {{token: \"{token}\"}}}}]\n\
             contexts: [{{name: test, context: {{cluster: test, user: {name}, namespace: {namespace}}}}}]\n\
             current-context: test\n",
            self.server_url(),
            self.dir.join("ca.crt").display()
        );
        std::fs::write(&path, config).expect("write the ServiceAccount's kubeconfig");
        path
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- kube-apiserver log (last lines):\n{}", self.log("apiserver"));
        }
        let _ = Command::new("bash")
            .arg(&self.script)
            .arg("stop")
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// A client from a kubeconfig file.
pub async fn client_from(kubeconfig: &Path) -> Client {
    let file = Kubeconfig::read_from(kubeconfig).expect("kubeconfig reads");
    let config = kube::Config::from_custom_kubeconfig(file, &KubeConfigOptions::default())
        .await
        .expect("kubeconfig is usable");
    Client::try_from(config).expect("Kubernetes client")
}

/// Polls `check` every 200 ms until it answers `Ok`, at most `within`; panics with its last
/// answer otherwise.
pub async fn eventually<T, F, Fut>(within: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + within;
    loop {
        match check().await {
            Ok(value) => return value,
            Err(last) if Instant::now() >= deadline => panic!("{what}: not within {within:?}; last: {last}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// The dynamic API of an object's kind, found through discovery, in its namespace when the kind
/// is namespaced.
pub async fn api_for(client: &Client, object: &DynamicObject) -> Api<DynamicObject> {
    let types = object.types.as_ref().expect("the object has apiVersion and kind");
    let gvk = GroupVersionKind::try_from(types).expect("apiVersion parses");
    let (resource, capabilities) = discovery::pinned_kind(client, &gvk)
        .await
        .unwrap_or_else(|e| panic!("the server does not serve {}: {e}", types.kind));
    match capabilities.scope {
        Scope::Namespaced => Api::namespaced_with(
            client.clone(),
            &object.namespace().unwrap_or("default".into()),
            &resource,
        ),
        Scope::Cluster => Api::all_with(client.clone(), &resource),
    }
}

/// The objects of a multi-document YAML text (empty documents skipped).
pub fn documents(yaml: &str) -> Vec<DynamicObject> {
    serde_yaml::Deserializer::from_str(yaml)
        .map(|doc| serde_yaml::Value::deserialize(doc).expect("YAML document parses"))
        .filter(|value| !value.is_null())
        .map(|value| serde_yaml::from_value(value).expect("a Kubernetes object"))
        .collect()
}

/// Server-side applies an object as the tests' field manager; the stored object.
pub async fn apply(client: &Client, object: &DynamicObject) -> Result<DynamicObject, kube::Error> {
    api_for(client, object)
        .await
        .patch(
            &object.name_any(),
            &PatchParams::apply(TEST_MANAGER).force(),
            &Patch::Apply(object),
        )
        .await
}

/// A running `redsess-operator run`, killed when dropped (its log printed if the test failed).
pub struct Operator {
    child: Child,
    pub identity: String,
    pub metrics_addr: SocketAddr,
    stderr: Arc<Mutex<String>>,
}

impl Operator {
    /// Starts the operator as `identity` (its Pod name) with the credentials of `kubeconfig`,
    /// its own namespace `namespace`, leader election on.
    pub fn start(kubeconfig: &Path, namespace: &str, identity: &str) -> Operator {
        Self::start_with(kubeconfig, namespace, identity, &[])
    }

    /// Like [`start`](Self::start), with further arguments of `run`.
    pub fn start_with(kubeconfig: &Path, namespace: &str, identity: &str, args: &[&str]) -> Operator {
        let metrics_addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let mut child = Command::new(operator_binary())
            .args(["run", "--platform", "auto", "--metrics-addr"])
            .arg(metrics_addr.to_string())
            .args(args)
            .env("KUBECONFIG", kubeconfig)
            .env("POD_NAMESPACE", namespace)
            .env("POD_NAME", identity)
            .env("RUST_LOG", "info,kube=warn")
            .env_remove("KUBERNETES_SERVICE_HOST")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("cannot start redsess-operator");
        let stderr = capture_stderr(&mut child);
        Operator {
            child,
            identity: identity.into(),
            metrics_addr,
            stderr,
        }
    }

    pub fn logs(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// `/readyz` answers 200: the leader has listed every SessionCache, or a standby knows who
    /// leads.
    pub fn is_ready(&self) -> bool {
        http_get(self.metrics_addr, "/readyz").is_some_and(|(status, _)| status == 200)
    }

    /// `redsess_operator_reconciles_total`.
    pub fn reconciles(&self) -> u64 {
        let (_, body) = http_get(self.metrics_addr, "/metrics").expect("GET /metrics");
        body.lines()
            .find_map(|l| l.strip_prefix("redsess_operator_reconciles_total "))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .map(|v| v as u64)
            .unwrap_or_else(|| panic!("no reconcile counter in /metrics:\n{body}"))
    }

    /// SIGKILL, as a node loss would.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, and waits (at most 20 s) for the exit.
    pub fn stop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.kill();
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!("--- log of operator {}:\n{}", self.identity, self.logs());
        }
    }
}

/// The operator's own namespace in `deploy/` (and the chart's default).
pub const OPERATOR_NAMESPACE: &str = "redsess-system";
/// The operator's ServiceAccount in `deploy/`.
pub const OPERATOR_ACCOUNT: &str = "redsess-operator";

/// Installs what `kubectl apply -k deploy/` would for the operator to run as itself: the CRD of
/// `crds/`, the namespace, and the ServiceAccount with the ClusterRole, Role and bindings that
/// the Helm chart renders (`deploy/operator.yaml`; its Deployment is the test's process
/// instead). Returns a kubeconfig with that ServiceAccount's token: the API server enforces the
/// chart's RBAC on every call the operator makes.
pub async fn install_operator(plane: &ControlPlane) -> PathBuf {
    let admin = plane.admin().await;
    let root = workspace_root();
    let read = |path: &str| std::fs::read_to_string(root.join(path)).unwrap_or_else(|e| panic!("{path}: {e}"));
    for crd in documents(&read("crds/sessioncaches.redsess.io.yaml")) {
        apply(&admin, &crd).await.expect("the CRD is accepted");
    }
    for object in documents(&read("deploy/namespace.yaml")) {
        apply(&admin, &object).await.expect("the namespace is accepted");
    }
    const RBAC: [&str; 5] = [
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
    ];
    let mut installed = Vec::new();
    for object in documents(&read("deploy/operator.yaml")) {
        let kind = object.types.as_ref().map(|t| t.kind.clone()).unwrap_or_default();
        if RBAC.contains(&kind.as_str()) {
            apply(&admin, &object)
                .await
                .unwrap_or_else(|e| panic!("{kind} is accepted: {e}"));
            installed.push(kind);
        }
    }
    assert_eq!(installed.len(), RBAC.len(), "deploy/operator.yaml has each of {RBAC:?}");
    // The CRD serves once it is established.
    let resource = kube::api::ApiResource::erase::<redsess_operator::crd::SessionCache>(&());
    let caches: Api<DynamicObject> = Api::all_with(admin.clone(), &resource);
    eventually(Duration::from_secs(30), "the SessionCache CRD serving", || {
        let caches = caches.clone();
        async move {
            caches
                .list(&Default::default())
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        }
    })
    .await;
    plane
        .service_account_kubeconfig(OPERATOR_NAMESPACE, OPERATOR_ACCOUNT)
        .await
}

/// Creates a namespace (the tests' field manager), if it does not exist.
pub async fn namespace(client: &Client, name: &str) {
    let object: DynamicObject = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}
    }))
    .unwrap();
    apply(client, &object).await.expect("namespace");
}

/// The status of SessionCache `namespace/name` once it describes `generation` (at most 40 s).
pub async fn cache_status_at(client: &Client, namespace: &str, name: &str, generation: i64) -> serde_json::Value {
    let resource = kube::api::ApiResource::erase::<redsess_operator::crd::SessionCache>(&());
    let caches: Api<DynamicObject> = Api::namespaced_with(client.clone(), namespace, &resource);
    eventually(
        Duration::from_secs(40),
        &format!("the status of {name} at generation {generation}"),
        || {
            let caches = caches.clone();
            async move {
                let object = caches.get(name).await.map_err(|e| e.to_string())?;
                let status = object.data.get("status").cloned().unwrap_or_default();
                if status["observedGeneration"] == generation {
                    Ok(status)
                } else {
                    Err(status.to_string())
                }
            }
        },
    )
    .await
}
