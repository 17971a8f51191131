//! The redsess-shim: a Deployment of stateless shims (configured only through `REDSESS_*`
//! environment variables, secrets only as mounted files), the Service WebSEAL's
//! `[dsess-cluster] server` points at, and a PodDisruptionBudget when there are two or more.
//!
//! Probes: `/readyz` (200 only while Redis answers) gates the Service, `/healthz` restarts a
//! hung process; both are unauthenticated in the shim. With HTTPS the kubelet probes with
//! `scheme: HTTPS` (it does not verify the certificate). With a required client CA the kubelet
//! cannot present a certificate, so an HTTP probe would fail the TLS handshake: both probes
//! then fall back to `tcpSocket` on the DSC port (the process listens; it cannot tell whether
//! Redis answers). No `exec` probe: it would need a client certificate and a binary in the
//! image. Readiness that follows Redis under a client CA needs a plain-HTTP health listener
//! in the shim (see the operator's open points).

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment};
use k8s_openapi::api::core::v1::{
    Affinity, Container, ContainerPort, EnvVar, EnvVarSource, HTTPGetAction, KeyToPath, PodAffinityTerm,
    PodAntiAffinity, PodSpec, PodTemplateSpec, Probe, ResourceRequirements, SecretKeySelector, SecretVolumeSource,
    Service, ServicePort, ServiceSpec, TCPSocketAction, Volume, VolumeMount, WeightedPodAffinityTerm,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::{metadata, pod_security, Emitted, Observed};
use crate::names;
use crate::redis_tls::CERTIFICATE_ANNOTATION;
use crate::validate::Plan;

/// The shim's container name.
pub const CONTAINER: &str = "shim";
/// Name of the DSC port on the container and the Service.
pub const PORT_NAME: &str = "dsc";
/// WebSEAL's client endpoint on the shim.
pub const DSC_PATH: &str = "/DSess/services/DSess";
/// Prefix of the shim's own Redis keys (WebSEAL/IAG use other prefixes, see `client_config`).
pub const KEY_PREFIX: &str = "redsess:";

/// Where the secrets are mounted (read-only) in the shim container.
pub const REDIS_PASSWORD_DIR: &str = "/etc/redsess/redis";
pub const REDIS_PASSWORD_FILE: &str = "/etc/redsess/redis/password";
pub const BASIC_AUTH_DIR: &str = "/etc/redsess/basic-auth";
pub const BASIC_AUTH_PASSWORD_FILE: &str = "/etc/redsess/basic-auth/password";
pub const TLS_DIR: &str = "/etc/redsess/tls";
pub const TLS_CERT_FILE: &str = "/etc/redsess/tls/tls.crt";
pub const TLS_KEY_FILE: &str = "/etc/redsess/tls/tls.key";
pub const CLIENT_CA_DIR: &str = "/etc/redsess/client-ca";
pub const CLIENT_CA_FILE: &str = "/etc/redsess/client-ca/ca.crt";
pub const RECORD_KEYS_DIR: &str = "/etc/redsess/record-keys";
pub const RECORD_KEYS_FILE: &str = "/etc/redsess/record-keys/keys";
/// The CA of Redis's and Sentinel's certificate (`spec.redis.tls`).
pub const REDIS_CA_DIR: &str = "/etc/redsess/redis-ca";
pub const REDIS_CA_FILE: &str = "/etc/redsess/redis-ca/ca.crt";

/// Shutdown budget: after SIGTERM the shim serves on for `SHUTDOWN_DELAY`, so the endpoint
/// removal reaches every proxy first, then answers its long polls at once and finishes
/// in-flight requests within `SHUTDOWN_GRACE`; the sum stays under the pod's grace period.
/// (The shim waits itself rather than through a preStop `sleep` hook: that field needs
/// Kubernetes 1.30, and older servers refuse the whole Deployment in a server-side apply.)
const SHUTDOWN_DELAY_SECONDS: u64 = 5;
const SHUTDOWN_GRACE_SECONDS: u64 = 20;
const TERMINATION_GRACE_SECONDS: i64 = 30;

/// Secret files are world-readable inside the pod: the operator sets no fsGroup (OpenShift
/// assigns one), so a group-only mode would leave them unreadable on plain Kubernetes. The
/// volume is read-only and visible only in this container.
const SECRET_FILE_MODE: i32 = 0o444;

/// The shim serves HTTPS.
pub fn tls_enabled(plan: &Plan) -> bool {
    plan.shim.tls_secret.is_some()
}

/// WebSEAL's `[dsess-cluster] server` URL (without the priority): the shim Service, or in
/// Sidecar mode the shim on 127.0.0.1 of the proxy's own pod.
pub fn dsc_url(plan: &Plan) -> String {
    if let Some(sidecar) = &plan.shim.sidecar {
        return format!("http://127.0.0.1:{}{DSC_PATH}", sidecar.port);
    }
    let scheme = if tls_enabled(plan) { "https" } else { "http" };
    format!(
        "{scheme}://{}:{}{DSC_PATH}",
        names::service_host(&names::shim(&plan.name), &plan.namespace),
        names::SHIM_PORT
    )
}

/// `REDSESS_REDIS_URL`: the ACL user and the Redis client Service, never the password.
pub fn redis_url(plan: &Plan) -> String {
    format!(
        "{}://{}@{}:{}",
        if plan.redis.tls.is_some() { "rediss" } else { "redis" },
        names::REDIS_USER,
        names::service_host(&names::redis(&plan.name), &plan.namespace),
        names::REDIS_PORT
    )
}

/// `REDSESS_REDIS_SENTINELS` when Redis is replicated: the Sentinel Service.
pub fn sentinel_address(plan: &Plan) -> Option<String> {
    plan.sentinel.as_ref().map(|_| {
        format!(
            "{}:{}",
            names::service_host(&names::sentinel(&plan.name), &plan.namespace),
            names::SENTINEL_PORT
        )
    })
}

/// The Deployment, the Service and (with two or more replicas) the PodDisruptionBudget;
/// nothing in Sidecar mode, where the shim runs in the proxies' pods (build::sidecar).
pub fn build(plan: &Plan, owner: &OwnerReference, observed: &Observed) -> Vec<Emitted> {
    if plan.shim.sidecar.is_some() {
        return Vec::new();
    }
    let mut out = vec![
        Emitted::Deployment(deployment(plan, owner, observed)),
        Emitted::Service(service(plan, owner)),
    ];
    if plan.shim.replicas >= 2 {
        out.push(Emitted::PodDisruptionBudget(disruption_budget(plan, owner)));
    }
    out
}

fn plain(name: &str, value: impl Into<String>) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value.into()),
        value_from: None,
    }
}

/// Every setting of the shim, as `REDSESS_*` variables. Secrets appear only as file paths or
/// Secret references.
pub fn env(plan: &Plan) -> Vec<EnvVar> {
    let listen = match &plan.shim.sidecar {
        Some(sidecar) => format!("127.0.0.1:{}", sidecar.port),
        None => format!("0.0.0.0:{}", names::SHIM_PORT),
    };
    let shim = &plan.shim;
    let mut env = vec![
        plain("REDSESS_LISTEN", listen),
        // One JSON object a line, as the operator's own logs, for the cluster's log store.
        plain("REDSESS_LOG_FORMAT", "json"),
        plain("REDSESS_REALM", shim.realm.clone()),
        plain("REDSESS_REPLICA_SETS", shim.replica_sets.join(",")),
        plain("REDSESS_MAX_LIFETIME", shim.max_lifetime.clone()),
        plain("REDSESS_CLOCK_SKEW", shim.clock_skew.clone()),
        plain("REDSESS_MAX_SESSIONS_PER_USER", shim.max_sessions_per_user.to_string()),
        plain("REDSESS_DISPLACE_SESSIONS", shim.displace.to_string()),
        plain("REDSESS_SHUTDOWN_DELAY", format!("{SHUTDOWN_DELAY_SECONDS}s")),
        plain("REDSESS_SHUTDOWN_GRACE", format!("{SHUTDOWN_GRACE_SECONDS}s")),
        plain("REDSESS_KEY_PREFIX", KEY_PREFIX),
        plain("REDSESS_REDIS_URL", redis_url(plan)),
    ];
    if let Some(sentinels) = sentinel_address(plan) {
        env.push(plain("REDSESS_REDIS_SENTINELS", sentinels));
        env.push(plain("REDSESS_REDIS_SENTINEL_PRIMARY", names::SENTINEL_PRIMARY_NAME));
        // The Sentinels know the Redis ACL user, read-only (see build::sentinel).
        env.push(plain("REDSESS_REDIS_SENTINEL_USER", names::REDIS_USER));
        env.push(plain("REDSESS_REDIS_SENTINEL_PASSWORD_FILE", REDIS_PASSWORD_FILE));
    }
    env.push(plain("REDSESS_REDIS_PASSWORD_FILE", REDIS_PASSWORD_FILE));
    let durability = &plan.redis.durability;
    if durability.replicas > 0 {
        env.push(plain("REDSESS_REDIS_WAIT_REPLICAS", durability.replicas.to_string()));
        env.push(plain(
            "REDSESS_REDIS_WAIT_TIMEOUT",
            format!("{}ms", durability.timeout.as_millis()),
        ));
    }
    if plan.redis.tls.is_some() {
        env.push(plain("REDSESS_REDIS_TLS_CA_FILE", REDIS_CA_FILE));
        if plan.sentinel.is_some() {
            env.push(plain("REDSESS_REDIS_SENTINEL_TLS", "true"));
        }
    }
    env.push(EnvVar {
        name: "REDSESS_BASIC_AUTH_USER".into(),
        value: None,
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: shim.basic_auth_secret.clone(),
                key: "username".into(),
                optional: Some(false),
            }),
            ..EnvVarSource::default()
        }),
    });
    env.push(plain("REDSESS_BASIC_AUTH_PASSWORD_FILE", BASIC_AUTH_PASSWORD_FILE));
    if shim.tls_secret.is_some() {
        env.push(plain("REDSESS_TLS_CERT", TLS_CERT_FILE));
        env.push(plain("REDSESS_TLS_KEY", TLS_KEY_FILE));
    }
    if shim.client_ca_secret.is_some() {
        env.push(plain("REDSESS_TLS_CLIENT_CA", CLIENT_CA_FILE));
    }
    if let Some(encryption) = &shim.encryption {
        env.push(plain("REDSESS_RECORD_ENCRYPTION", encryption.mode.shim_value()));
        env.push(plain("REDSESS_RECORD_KEYS_FILE", RECORD_KEYS_FILE));
    }
    env
}

pub(crate) fn secret_volume(name: &str, secret: &str, keys: &[&str]) -> Volume {
    Volume {
        name: name.into(),
        secret: Some(SecretVolumeSource {
            secret_name: Some(secret.into()),
            items: Some(
                keys.iter()
                    .map(|k| KeyToPath {
                        key: (*k).into(),
                        path: (*k).into(),
                        mode: None,
                    })
                    .collect(),
            ),
            default_mode: Some(SECRET_FILE_MODE),
            optional: Some(false),
        }),
        ..Volume::default()
    }
}

pub(crate) fn mount(name: &str, path: &str) -> VolumeMount {
    VolumeMount {
        name: name.into(),
        mount_path: path.into(),
        read_only: Some(true),
        ..VolumeMount::default()
    }
}

/// The CA volume of Redis TLS, for the Deployment and the sidecar.
pub(crate) fn redis_ca_volume(plan: &Plan, name: &str) -> Option<(Volume, VolumeMount)> {
    let tls = plan.redis.tls.as_ref()?;
    Some((
        secret_volume(name, &tls.ca_secret, &["ca.crt"]),
        mount(name, REDIS_CA_DIR),
    ))
}

/// The Secret volumes and where the container mounts them.
fn volumes(plan: &Plan) -> (Vec<Volume>, Vec<VolumeMount>) {
    let shim = &plan.shim;
    let mut volumes = vec![
        secret_volume("redis-password", &plan.redis.password_secret, &["password"]),
        secret_volume("basic-auth", &shim.basic_auth_secret, &["password"]),
    ];
    let mut mounts = vec![
        mount("redis-password", REDIS_PASSWORD_DIR),
        mount("basic-auth", BASIC_AUTH_DIR),
    ];
    if let Some(tls) = &shim.tls_secret {
        volumes.push(secret_volume("tls", tls, &["tls.crt", "tls.key"]));
        mounts.push(mount("tls", TLS_DIR));
    }
    if let Some(ca) = &shim.client_ca_secret {
        volumes.push(secret_volume("client-ca", ca, &["ca.crt"]));
        mounts.push(mount("client-ca", CLIENT_CA_DIR));
    }
    if let Some(encryption) = &shim.encryption {
        volumes.push(secret_volume("record-keys", &encryption.keys_secret, &["keys"]));
        mounts.push(mount("record-keys", RECORD_KEYS_DIR));
    }
    if let Some((volume, mount)) = redis_ca_volume(plan, "redis-ca") {
        volumes.push(volume);
        mounts.push(mount);
    }
    (volumes, mounts)
}

/// Readiness and liveness probes (see the module documentation for the client-CA case).
fn probes(plan: &Plan) -> (Probe, Probe) {
    let port = IntOrString::String(PORT_NAME.into());
    let http = |path: &str| HTTPGetAction {
        path: Some(path.into()),
        port: port.clone(),
        scheme: Some(if tls_enabled(plan) { "HTTPS" } else { "HTTP" }.into()),
        ..HTTPGetAction::default()
    };
    let tcp = || TCPSocketAction {
        port: port.clone(),
        host: None,
    };
    let client_certificates_required = plan.shim.client_ca_secret.is_some();
    let mut readiness = Probe {
        period_seconds: Some(5),
        timeout_seconds: Some(3),
        failure_threshold: Some(3),
        success_threshold: Some(1),
        ..Probe::default()
    };
    let mut liveness = Probe {
        initial_delay_seconds: Some(5),
        period_seconds: Some(10),
        timeout_seconds: Some(3),
        failure_threshold: Some(3),
        ..Probe::default()
    };
    if client_certificates_required {
        readiness.tcp_socket = Some(tcp());
        liveness.tcp_socket = Some(tcp());
    } else {
        readiness.http_get = Some(http("/readyz"));
        liveness.http_get = Some(http("/healthz"));
    }
    (readiness, liveness)
}

/// The plan's resources, or 50m/64Mi requested and 256Mi memory limit.
pub(crate) fn resources(plan: &Plan) -> ResourceRequirements {
    plan.shim.resources.clone().unwrap_or_else(|| ResourceRequirements {
        requests: Some(BTreeMap::from([
            ("cpu".to_string(), Quantity("50m".into())),
            ("memory".to_string(), Quantity("64Mi".into())),
        ])),
        limits: Some(BTreeMap::from([("memory".to_string(), Quantity("256Mi".into()))])),
        ..ResourceRequirements::default()
    })
}

fn selector(plan: &Plan) -> LabelSelector {
    LabelSelector {
        match_labels: Some(names::selector(&plan.name, names::component::SHIM)),
        ..LabelSelector::default()
    }
}

/// Prefer spreading shims over nodes; never block scheduling for it.
fn anti_affinity(plan: &Plan) -> Affinity {
    Affinity {
        pod_anti_affinity: Some(PodAntiAffinity {
            preferred_during_scheduling_ignored_during_execution: Some(vec![WeightedPodAffinityTerm {
                weight: 100,
                pod_affinity_term: PodAffinityTerm {
                    label_selector: Some(selector(plan)),
                    topology_key: "kubernetes.io/hostname".into(),
                    ..PodAffinityTerm::default()
                },
            }]),
            ..PodAntiAffinity::default()
        }),
        ..Affinity::default()
    }
}

fn deployment(plan: &Plan, owner: &OwnerReference, observed: &Observed) -> Deployment {
    let (volumes, mounts) = volumes(plan);
    let (readiness, liveness) = probes(plan);
    let container = Container {
        name: CONTAINER.into(),
        image: Some(plan.shim.image.clone()),
        env: Some(env(plan)),
        ports: Some(vec![ContainerPort {
            name: Some(PORT_NAME.into()),
            container_port: names::SHIM_PORT,
            protocol: Some("TCP".into()),
            ..ContainerPort::default()
        }]),
        readiness_probe: Some(readiness),
        liveness_probe: Some(liveness),
        resources: Some(resources(plan)),
        security_context: Some(pod_security::container(true)),
        volume_mounts: Some(mounts),
        termination_message_policy: Some("FallbackToLogsOnError".into()),
        ..Container::default()
    };
    Deployment {
        metadata: metadata(plan, names::shim(&plan.name), names::component::SHIM, owner),
        spec: Some(DeploymentSpec {
            replicas: Some(plan.shim.replicas),
            revision_history_limit: Some(5),
            selector: selector(plan),
            strategy: Some(DeploymentStrategy {
                type_: Some("RollingUpdate".into()),
                rolling_update: Some(RollingUpdateDeployment {
                    max_unavailable: Some(IntOrString::Int(0)),
                    max_surge: Some(IntOrString::Int(1)),
                }),
            }),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(names::labels(&plan.name, names::component::SHIM)),
                    // The shim reads the CA once, at start: a new CA rolls it.
                    annotations: observed
                        .redis_tls
                        .as_ref()
                        .filter(|_| plan.redis.tls.is_some())
                        .map(|m| BTreeMap::from([(CERTIFICATE_ANNOTATION.to_string(), m.ca_digest())])),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    containers: vec![container],
                    volumes: Some(volumes),
                    security_context: Some(pod_security::pod()),
                    affinity: Some(anti_affinity(plan)),
                    termination_grace_period_seconds: Some(TERMINATION_GRACE_SECONDS),
                    automount_service_account_token: Some(false),
                    enable_service_links: Some(false),
                    ..PodSpec::default()
                }),
            },
            ..DeploymentSpec::default()
        }),
        status: None,
    }
}

fn service(plan: &Plan, owner: &OwnerReference) -> Service {
    Service {
        metadata: metadata(plan, names::shim(&plan.name), names::component::SHIM, owner),
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".into()),
            selector: Some(names::selector(&plan.name, names::component::SHIM)),
            ports: Some(vec![ServicePort {
                name: Some(PORT_NAME.into()),
                port: names::SHIM_PORT,
                target_port: Some(IntOrString::String(PORT_NAME.into())),
                protocol: Some("TCP".into()),
                app_protocol: Some(if tls_enabled(plan) { "https" } else { "http" }.into()),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        status: None,
    }
}

/// At most one shim voluntarily down at a time. Unready shims may always be evicted (they
/// serve nothing, and a Redis outage makes every shim unready: that must not block drains).
fn disruption_budget(plan: &Plan, owner: &OwnerReference) -> PodDisruptionBudget {
    PodDisruptionBudget {
        metadata: metadata(plan, names::shim(&plan.name), names::component::SHIM, owner),
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(1)),
            selector: Some(selector(plan)),
            unhealthy_pod_eviction_policy: Some("AlwaysAllow".into()),
            ..PodDisruptionBudgetSpec::default()
        }),
        status: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::redis::tests::{owner, plan};

    fn deployment_of(plan: &Plan) -> Deployment {
        build(plan, &owner(), &Observed::default())
            .into_iter()
            .find_map(|o| match o {
                Emitted::Deployment(d) => Some(d),
                _ => None,
            })
            .expect("a Deployment")
    }

    fn pod(d: &Deployment) -> &PodSpec {
        d.spec.as_ref().unwrap().template.spec.as_ref().unwrap()
    }

    fn container(d: &Deployment) -> &Container {
        &pod(d).containers[0]
    }

    fn env_map(c: &Container) -> BTreeMap<String, EnvVar> {
        c.env
            .as_ref()
            .unwrap()
            .iter()
            .map(|e| (e.name.clone(), e.clone()))
            .collect()
    }

    fn value(env: &BTreeMap<String, EnvVar>, name: &str) -> String {
        env.get(name)
            .unwrap_or_else(|| panic!("{name} is missing"))
            .value
            .clone()
            .unwrap_or_else(|| panic!("{name} has no plain value"))
    }

    #[test]
    fn record_encryption_mounts_the_key_file_and_names_the_mode() {
        let plain = env_map(container(&deployment_of(&plan("  {}"))));
        assert!(!plain.contains_key("REDSESS_RECORD_ENCRYPTION") && !plain.contains_key("REDSESS_RECORD_KEYS_FILE"));
        for (mode, shim_value) in [
            ("PlainMigrating", "plain-migrating"),
            ("SealMigrating", "seal-migrating"),
            ("Sealed", "sealed"),
        ] {
            let d = deployment_of(&plan(&format!("  shim: {{encryption: {{mode: {mode}}}}}")));
            let env = env_map(container(&d));
            assert_eq!(value(&env, "REDSESS_RECORD_ENCRYPTION"), shim_value);
            assert_eq!(value(&env, "REDSESS_RECORD_KEYS_FILE"), "/etc/redsess/record-keys/keys");
            let json = serde_json::to_value(pod(&d)).unwrap();
            crate::build::redis::tests::assert_contains(
                &json,
                "volumes: [{}, {}, {name: record-keys, secret: {secretName: cache-record-keys, items: [{key: keys, path: keys}]}}]",
            );
        }
        let own = deployment_of(&plan("  shim: {encryption: {mode: Sealed, keysSecret: my-keys}}"));
        assert!(serde_json::to_string(pod(&own))
            .unwrap()
            .contains("\"secretName\":\"my-keys\""));
    }

    #[test]
    fn the_shim_waits_for_the_replicas_durability_names() {
        let env_of = |spec: &str| {
            let p = plan(spec);
            let d = build(&p, &owner(), &Observed::default())
                .into_iter()
                .find_map(|o| match o {
                    Emitted::Deployment(d) => Some(d),
                    _ => None,
                })
                .unwrap();
            env_map(container(&d))
        };
        let env = env_of("  redis: {replicas: 3, durability: {timeout: 250ms}}");
        assert_eq!(value(&env, "REDSESS_REDIS_WAIT_REPLICAS"), "1");
        assert_eq!(value(&env, "REDSESS_REDIS_WAIT_TIMEOUT"), "250ms");
        let standalone = env_of("  {}");
        assert!(!standalone.contains_key("REDSESS_REDIS_WAIT_REPLICAS"));
    }

    #[test]
    fn redis_tls_is_verified_with_the_caches_ca_and_a_new_ca_rolls_the_shims() {
        let p = plan("  redis: {replicas: 3, tls: {enabled: true}}");
        let observed = crate::build::redis::tests::with_tls(&p);
        let d = build(&p, &owner(), &observed)
            .into_iter()
            .find_map(|o| match o {
                Emitted::Deployment(d) => Some(d),
                _ => None,
            })
            .unwrap();
        let env = env_map(container(&d));
        assert_eq!(
            value(&env, "REDSESS_REDIS_URL"),
            "rediss://redsess@cache-redis.isam.svc:6379"
        );
        assert_eq!(value(&env, "REDSESS_REDIS_TLS_CA_FILE"), "/etc/redsess/redis-ca/ca.crt");
        assert_eq!(value(&env, "REDSESS_REDIS_SENTINEL_TLS"), "true");
        let json = serde_json::to_value(&d).unwrap();
        crate::build::redis::tests::assert_contains(
            &json["spec"]["template"],
            &format!(
                "metadata: {{annotations: {{redsess.io/tls-certificate: {}}}}}",
                observed.redis_tls.as_ref().unwrap().ca_digest()
            ),
        );
        let volumes = json["spec"]["template"]["spec"]["volumes"].as_array().unwrap();
        let ca = volumes.iter().find(|v| v["name"] == "redis-ca").unwrap();
        assert_eq!(ca["secret"]["secretName"], "cache-redis-ca");
        assert_eq!(
            ca["secret"]["items"],
            serde_json::json!([{"key": "ca.crt", "path": "ca.crt"}])
        );
        // Standalone: TLS to Redis, no Sentinel to speak it to.
        let standalone = env_map(container(&deployment_of(&plan("  redis: {tls: {enabled: true}}"))));
        assert!(!standalone.contains_key("REDSESS_REDIS_SENTINEL_TLS"));
        // Off: nothing of it.
        let off = env_map(container(&deployment_of(&plan("  redis: {replicas: 3}"))));
        assert!(!off.contains_key("REDSESS_REDIS_TLS_CA_FILE") && !off.contains_key("REDSESS_REDIS_SENTINEL_TLS"));
    }

    #[test]
    fn standalone_redis_is_reached_through_its_service_with_the_acl_user() {
        let p = plan("  {}");
        let env = env_map(container(&deployment_of(&p)));
        assert_eq!(value(&env, "REDSESS_LISTEN"), "0.0.0.0:8443");
        assert_eq!(
            value(&env, "REDSESS_REDIS_URL"),
            "redis://redsess@cache-redis.isam.svc:6379"
        );
        assert_eq!(value(&env, "REDSESS_KEY_PREFIX"), "redsess:");
        assert_eq!(
            value(&env, "REDSESS_REDIS_PASSWORD_FILE"),
            "/etc/redsess/redis/password"
        );
        assert!(!env.contains_key("REDSESS_REDIS_SENTINELS"));
        assert!(!env.contains_key("REDSESS_REDIS_SENTINEL_PRIMARY"));
    }

    #[test]
    fn replicated_redis_adds_the_sentinels() {
        let p = plan("  redis: {replicas: 3}");
        let env = env_map(container(&deployment_of(&p)));
        assert_eq!(
            value(&env, "REDSESS_REDIS_URL"),
            "redis://redsess@cache-redis.isam.svc:6379"
        );
        assert_eq!(value(&env, "REDSESS_REDIS_SENTINELS"), "cache-sentinel.isam.svc:26379");
        assert_eq!(value(&env, "REDSESS_REDIS_SENTINEL_PRIMARY"), "redsess");
        assert_eq!(value(&env, "REDSESS_REDIS_SENTINEL_USER"), "redsess");
        assert_eq!(
            value(&env, "REDSESS_REDIS_SENTINEL_PASSWORD_FILE"),
            "/etc/redsess/redis/password"
        );
    }

    #[test]
    fn session_settings_become_environment_variables() {
        let p = plan(
            "  shim:\n    realm: R\n    replicaSets: [default, admin]\n    session: {maxLifetime: 8h, clockSkew: 1m, maxSessionsPerUser: 3, displace: true}",
        );
        let env = env_map(container(&deployment_of(&p)));
        assert_eq!(value(&env, "REDSESS_REALM"), "R");
        assert_eq!(value(&env, "REDSESS_REPLICA_SETS"), "default,admin");
        assert_eq!(value(&env, "REDSESS_MAX_LIFETIME"), "8h");
        assert_eq!(value(&env, "REDSESS_CLOCK_SKEW"), "1m");
        assert_eq!(value(&env, "REDSESS_MAX_SESSIONS_PER_USER"), "3");
        assert_eq!(value(&env, "REDSESS_DISPLACE_SESSIONS"), "true");
        let defaults = env_map(container(&deployment_of(&plan("  {}"))));
        assert_eq!(value(&defaults, "REDSESS_DISPLACE_SESSIONS"), "false");
        assert_eq!(value(&defaults, "REDSESS_MAX_SESSIONS_PER_USER"), "0");
    }

    #[test]
    fn secrets_are_files_or_references_never_values() {
        let p = plan("  shim: {security: {basicAuthSecret: mine}}\n  redis: {passwordSecret: rpw}");
        let d = deployment_of(&p);
        let c = container(&d);
        assert!(c.args.is_none() && c.command.is_none());
        for e in c.env.as_ref().unwrap() {
            // Only *_FILE variables name a password, and they hold paths.
            if e.name.contains("PASSWORD") {
                assert!(e.name.ends_with("_FILE"), "{} must be a file setting", e.name);
                assert!(e.value.as_deref().unwrap().starts_with("/etc/redsess/"));
            }
        }
        let env = env_map(c);
        let user = env["REDSESS_BASIC_AUTH_USER"].value_from.as_ref().unwrap();
        let user = user.secret_key_ref.as_ref().unwrap();
        assert_eq!((user.name.as_str(), user.key.as_str()), ("mine", "username"));
        assert_eq!(
            value(&env, "REDSESS_BASIC_AUTH_PASSWORD_FILE"),
            "/etc/redsess/basic-auth/password"
        );

        let volumes = pod(&d).volumes.as_ref().unwrap();
        let secret = |name: &str| {
            volumes
                .iter()
                .find(|v| v.name == name)
                .and_then(|v| v.secret.clone())
                .unwrap_or_else(|| panic!("volume {name}"))
        };
        assert_eq!(secret("redis-password").secret_name.as_deref(), Some("rpw"));
        assert_eq!(secret("redis-password").items.unwrap()[0].key, "password");
        assert_eq!(secret("basic-auth").secret_name.as_deref(), Some("mine"));
        for m in c.volume_mounts.as_ref().unwrap() {
            assert_eq!(m.read_only, Some(true), "{} is read-only", m.name);
        }
        let mounted: Vec<_> = c
            .volume_mounts
            .as_ref()
            .unwrap()
            .iter()
            .map(|m| m.mount_path.as_str())
            .collect();
        assert!(mounted.contains(&"/etc/redsess/redis") && mounted.contains(&"/etc/redsess/basic-auth"));
    }

    #[test]
    fn plain_http_probes_the_health_endpoints() {
        let p = plan("  {}");
        assert_eq!(dsc_url(&p), "http://cache-shim.isam.svc:8443/DSess/services/DSess");
        let d = deployment_of(&p);
        let c = container(&d);
        let ready = c.readiness_probe.as_ref().unwrap().http_get.as_ref().unwrap();
        assert_eq!(ready.path.as_deref(), Some("/readyz"));
        assert_eq!(ready.scheme.as_deref(), Some("HTTP"));
        assert_eq!(ready.port, IntOrString::String("dsc".into()));
        let live = c.liveness_probe.as_ref().unwrap().http_get.as_ref().unwrap();
        assert_eq!(live.path.as_deref(), Some("/healthz"));
        let env = env_map(c);
        assert!(!env.contains_key("REDSESS_TLS_CERT") && !env.contains_key("REDSESS_TLS_CLIENT_CA"));
    }

    #[test]
    fn tls_mounts_the_certificate_and_probes_over_https() {
        let p = plan("  shim: {security: {tlsSecret: shim-tls}}");
        assert_eq!(dsc_url(&p), "https://cache-shim.isam.svc:8443/DSess/services/DSess");
        let d = deployment_of(&p);
        let c = container(&d);
        let env = env_map(c);
        assert_eq!(value(&env, "REDSESS_TLS_CERT"), "/etc/redsess/tls/tls.crt");
        assert_eq!(value(&env, "REDSESS_TLS_KEY"), "/etc/redsess/tls/tls.key");
        assert!(!env.contains_key("REDSESS_TLS_CLIENT_CA"));
        let tls = pod(&d)
            .volumes
            .as_ref()
            .unwrap()
            .iter()
            .find(|v| v.name == "tls")
            .unwrap();
        let tls = tls.secret.as_ref().unwrap();
        assert_eq!(tls.secret_name.as_deref(), Some("shim-tls"));
        let keys: Vec<_> = tls.items.as_ref().unwrap().iter().map(|i| i.key.as_str()).collect();
        assert_eq!(keys, ["tls.crt", "tls.key"]);
        let ready = c.readiness_probe.as_ref().unwrap().http_get.as_ref().unwrap();
        assert_eq!(ready.scheme.as_deref(), Some("HTTPS"));
    }

    #[test]
    fn a_required_client_certificate_falls_back_to_tcp_probes() {
        let p = plan("  shim: {security: {tlsSecret: shim-tls, clientCaSecret: webseal-ca}}");
        let d = deployment_of(&p);
        let c = container(&d);
        let env = env_map(c);
        assert_eq!(value(&env, "REDSESS_TLS_CLIENT_CA"), "/etc/redsess/client-ca/ca.crt");
        let ca = pod(&d)
            .volumes
            .as_ref()
            .unwrap()
            .iter()
            .find(|v| v.name == "client-ca")
            .unwrap();
        assert_eq!(ca.secret.as_ref().unwrap().secret_name.as_deref(), Some("webseal-ca"));
        for probe in [c.readiness_probe.as_ref().unwrap(), c.liveness_probe.as_ref().unwrap()] {
            assert!(probe.http_get.is_none() && probe.exec.is_none());
            assert_eq!(
                probe.tcp_socket.as_ref().unwrap().port,
                IntOrString::String("dsc".into())
            );
        }
    }

    #[test]
    fn the_pod_is_locked_down_and_rolls_without_losing_capacity() {
        let p = plan("  {}");
        let d = deployment_of(&p);
        let spec = d.spec.as_ref().unwrap();
        assert_eq!(spec.replicas, Some(2));
        assert_eq!(spec.selector.match_labels, Some(names::selector("cache", "shim")));
        assert_eq!(
            spec.template.metadata.as_ref().unwrap().labels,
            Some(names::labels("cache", "shim"))
        );
        let rolling = spec.strategy.as_ref().unwrap().rolling_update.as_ref().unwrap();
        assert_eq!(rolling.max_unavailable, Some(IntOrString::Int(0)));
        assert_eq!(rolling.max_surge, Some(IntOrString::Int(1)));
        let pod = pod(&d);
        assert_eq!(pod.automount_service_account_token, Some(false));
        assert_eq!(pod.enable_service_links, Some(false));
        assert_eq!(pod.termination_grace_period_seconds, Some(30));
        assert_eq!(pod.security_context, Some(pod_security::pod()));
        let c = container(&d);
        assert_eq!(c.name, "shim");
        assert_eq!(c.image.as_deref(), Some(crate::crd::DEFAULT_SHIM_IMAGE));
        let sc = c.security_context.as_ref().unwrap();
        assert_eq!(sc.read_only_root_filesystem, Some(true));
        assert_eq!(sc.allow_privilege_escalation, Some(false));
        let port = &c.ports.as_ref().unwrap()[0];
        assert_eq!((port.name.as_deref(), port.container_port), (Some("dsc"), 8443));
        let preferred = pod
            .affinity
            .as_ref()
            .unwrap()
            .pod_anti_affinity
            .as_ref()
            .unwrap()
            .preferred_during_scheduling_ignored_during_execution
            .as_ref()
            .unwrap();
        assert_eq!(preferred[0].pod_affinity_term.topology_key, "kubernetes.io/hostname");
        assert!(pod
            .affinity
            .as_ref()
            .unwrap()
            .pod_anti_affinity
            .as_ref()
            .unwrap()
            .required_during_scheduling_ignored_during_execution
            .is_none());
        // The shim's own shutdown delay plus its grace fit in the pod's grace period; no
        // lifecycle hook (a preStop sleep would need Kubernetes 1.30).
        assert!(c.lifecycle.is_none());
        assert_eq!(value(&env_map(c), "REDSESS_SHUTDOWN_DELAY"), "5s");
        assert_eq!(value(&env_map(c), "REDSESS_SHUTDOWN_GRACE"), "20s");
        let grace = pod.termination_grace_period_seconds.unwrap();
        assert!(SHUTDOWN_DELAY_SECONDS + SHUTDOWN_GRACE_SECONDS < grace as u64);
    }

    #[test]
    fn resources_default_unless_the_plan_sets_them() {
        let d = deployment_of(&plan("  {}"));
        let r = container(&d).resources.clone().unwrap();
        assert_eq!(r.requests.as_ref().unwrap()["cpu"], Quantity("50m".into()));
        assert_eq!(r.requests.as_ref().unwrap()["memory"], Quantity("64Mi".into()));
        assert_eq!(r.limits.as_ref().unwrap()["memory"], Quantity("256Mi".into()));
        let d = deployment_of(&plan("  shim: {resources: {limits: {memory: 1Gi}}}"));
        let r = container(&d).resources.clone().unwrap();
        assert_eq!(r.limits.as_ref().unwrap()["memory"], Quantity("1Gi".into()));
        assert!(r.requests.is_none());
    }

    #[test]
    fn the_service_exposes_the_dsc_port() {
        let p = plan("  {}");
        let objects = build(&p, &owner(), &Observed::default());
        let svc = objects
            .iter()
            .find_map(|o| match o {
                Emitted::Service(s) => Some(s),
                _ => None,
            })
            .unwrap();
        assert_eq!(svc.metadata.name.as_deref(), Some("cache-shim"));
        assert_eq!(svc.metadata.namespace.as_deref(), Some("isam"));
        assert_eq!(svc.metadata.owner_references, Some(vec![owner()]));
        let spec = svc.spec.as_ref().unwrap();
        assert_eq!(spec.selector, Some(names::selector("cache", "shim")));
        let port = &spec.ports.as_ref().unwrap()[0];
        assert_eq!(port.port, 8443);
        assert_eq!(port.name.as_deref(), Some("dsc"));
        assert_eq!(port.target_port, Some(IntOrString::String("dsc".into())));
    }

    #[test]
    fn a_disruption_budget_only_with_two_or_more_shims() {
        let objects = build(&plan("  {}"), &owner(), &Observed::default());
        let kinds: Vec<_> = objects.iter().map(|o| o.kind()).collect();
        assert_eq!(kinds, ["Deployment", "Service", "PodDisruptionBudget"]);
        let pdb = objects
            .iter()
            .find_map(|o| match o {
                Emitted::PodDisruptionBudget(p) => Some(p),
                _ => None,
            })
            .unwrap();
        assert_eq!(pdb.metadata.name.as_deref(), Some("cache-shim"));
        let spec = pdb.spec.as_ref().unwrap();
        assert_eq!(spec.max_unavailable, Some(IntOrString::Int(1)));
        assert!(spec.min_available.is_none());
        assert_eq!(
            spec.selector.as_ref().unwrap().match_labels,
            Some(names::selector("cache", "shim"))
        );

        let single = build(&plan("  shim: {replicas: 1}"), &owner(), &Observed::default());
        assert!(single.iter().all(|o| o.kind() != "PodDisruptionBudget"));
        assert_eq!(single.len(), 2);
    }

    #[test]
    fn emitted_objects_serialize_with_kind_and_api_version() {
        for o in build(&plan("  {}"), &owner(), &Observed::default()) {
            let json = o.to_json();
            assert_eq!(json["kind"], o.kind());
            assert_eq!(json["metadata"]["labels"]["app.kubernetes.io/component"], "shim");
        }
    }
}
