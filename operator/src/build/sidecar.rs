//! Sidecar mode: the shim as a container of each selected reverse-proxy pod, listening on
//! 127.0.0.1 only, so a proxy's session traffic never leaves its pod and the shim scales with
//! the proxies. Pure: the admission webhook (`webhook`) patches pods with what this builds.
//!
//! - A native sidecar (an init container with `restartPolicy: Always`) where the API server is
//!   1.29 or newer: it is ready before WebSEAL starts and stops after it. A plain container on
//!   older servers.
//! - Secrets come from Secret volumes (the Redis password) or references (the Basic user), never
//!   as values in the pod spec.
//! - Probes run `redsess-shim ready` in the container: the kubelet cannot reach 127.0.0.1 of
//!   the pod over HTTP.

use k8s_openapi::api::core::v1::{Container, ExecAction, Probe, Volume};
use sha2::{Digest, Sha256};

use super::{pod_security, shim};
use crate::validate::Plan;

/// The injected container's name.
pub const CONTAINER: &str = "redsess-shim";
/// Pod annotation that asks for the shim of the named SessionCache (IBM's operators can set
/// pod annotations, not labels).
pub const INJECT_ANNOTATION: &str = "redsess.io/inject";
/// Pod annotation: the SHA-256 of what was injected, to find pods whose sidecar is out of date.
pub const HASH_ANNOTATION: &str = "redsess.io/sidecar-sha256";
/// Pod label set at injection, with the cache's name: the Redis NetworkPolicy admits these
/// pods, and the status counts them.
pub const SIDECAR_LABEL: &str = "redsess.io/sidecar";
/// The namespace label (Istio's convention) that lets the webhook see a namespace's pods.
pub const NAMESPACE_LABEL: &str = "redsess.io/injection";
pub const NAMESPACE_LABEL_VALUE: &str = "enabled";
/// The shim binary in its image.
const BINARY: &str = "/usr/local/bin/redsess-shim";
/// Volume names, prefixed so they cannot clash with the proxy's own.
const REDIS_PASSWORD_VOLUME: &str = "redsess-redis-password";
const BASIC_AUTH_VOLUME: &str = "redsess-basic-auth";
const RECORD_KEYS_VOLUME: &str = "redsess-record-keys";
const REDIS_CA_VOLUME: &str = "redsess-redis-ca";

/// Where the injected shim goes in the pod spec.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// `initContainers` with `restartPolicy: Always` (Kubernetes 1.29+).
    Native,
    /// `containers`, beside the proxy.
    Plain,
}

impl Placement {
    /// Native sidecars from Kubernetes 1.29 on (beta and on by default there).
    pub fn for_server(major: u32, minor: u32) -> Placement {
        if (major, minor) >= (1, 29) {
            Placement::Native
        } else {
            Placement::Plain
        }
    }

    /// From a version as the API server reports it (`major` "1", `minor` "29" or "29+" on
    /// some distributions); `None` when it is not a number.
    pub fn for_version(major: &str, minor: &str) -> Option<Placement> {
        let number = |s: &str| s.trim_end_matches(|c: char| !c.is_ascii_digit()).parse().ok();
        Some(Placement::for_server(number(major)?, number(minor)?))
    }
}

/// What the webhook adds to a pod.
#[derive(Debug, Clone, PartialEq)]
pub struct Sidecar {
    pub container: Container,
    pub volumes: Vec<Volume>,
    pub placement: Placement,
    /// SHA-256 of the container and volumes: changes with the spec or the image.
    pub hash: String,
}

/// The shim for the pods of `plan` (which must be in Sidecar mode).
pub fn sidecar(plan: &Plan, placement: Placement) -> Sidecar {
    let port = plan
        .shim
        .sidecar
        .as_ref()
        .map(|s| s.port)
        .expect("a plan in Sidecar mode");
    let ready = |period: i32, failures: i32| Probe {
        exec: Some(ExecAction {
            command: Some(vec![BINARY.into(), "ready".into(), format!("127.0.0.1:{port}")]),
        }),
        period_seconds: Some(period),
        timeout_seconds: Some(3),
        failure_threshold: Some(failures),
        ..Probe::default()
    };
    let mut volumes = vec![
        shim::secret_volume(REDIS_PASSWORD_VOLUME, &plan.redis.password_secret, &["password"]),
        shim::secret_volume(BASIC_AUTH_VOLUME, &plan.shim.basic_auth_secret, &["password"]),
    ];
    let mut mounts = vec![
        shim::mount(REDIS_PASSWORD_VOLUME, shim::REDIS_PASSWORD_DIR),
        shim::mount(BASIC_AUTH_VOLUME, shim::BASIC_AUTH_DIR),
    ];
    if let Some(encryption) = &plan.shim.encryption {
        volumes.push(shim::secret_volume(
            RECORD_KEYS_VOLUME,
            &encryption.keys_secret,
            &["keys"],
        ));
        mounts.push(shim::mount(RECORD_KEYS_VOLUME, shim::RECORD_KEYS_DIR));
    }
    if let Some((volume, mount)) = shim::redis_ca_volume(plan, REDIS_CA_VOLUME) {
        volumes.push(volume);
        mounts.push(mount);
    }
    let container = Container {
        name: CONTAINER.into(),
        image: Some(plan.shim.image.clone()),
        env: Some(shim::env(plan)),
        volume_mounts: Some(mounts),
        // Up to 30 s to reach Redis before the proxy is started (native) or marked unready.
        startup_probe: Some(ready(1, 30)),
        readiness_probe: Some(ready(5, 3)),
        resources: Some(shim::resources(plan)),
        security_context: Some(pod_security::container(true)),
        termination_message_policy: Some("FallbackToLogsOnError".into()),
        restart_policy: (placement == Placement::Native).then(|| "Always".into()),
        ..Container::default()
    };
    let hash = hex_sha256(&serde_json::to_vec(&(&container, &volumes)).expect("Kubernetes objects serialize"));
    Sidecar {
        container,
        volumes,
        placement,
        hash,
    }
}

fn hex_sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::redis::tests::plan;

    fn env(c: &Container, name: &str) -> Option<String> {
        c.env
            .iter()
            .flatten()
            .find(|e| e.name == name)
            .and_then(|e| e.value.clone())
    }

    #[test]
    fn the_shim_listens_on_loopback_and_reads_secrets_from_files() {
        let p = plan("  redis: {replicas: 3}\n  shim: {mode: Sidecar, sidecar: {port: 18500}}");
        let s = sidecar(&p, Placement::Plain);
        let c = &s.container;
        assert_eq!(c.name, CONTAINER);
        assert_eq!(env(c, "REDSESS_LISTEN").as_deref(), Some("127.0.0.1:18500"));
        assert_eq!(
            env(c, "REDSESS_REDIS_SENTINELS").as_deref(),
            Some("cache-sentinel.isam.svc:26379"),
            "through Sentinel when there is one"
        );
        assert_eq!(
            env(c, "REDSESS_REDIS_PASSWORD_FILE").as_deref(),
            Some("/etc/redsess/redis/password")
        );
        // No secret value anywhere in the container: only files and references.
        for e in c.env.iter().flatten() {
            assert!(!e.name.ends_with("PASSWORD"), "{} holds a password", e.name);
            if let Some(from) = &e.value_from {
                assert!(
                    from.secret_key_ref.as_ref().is_some_and(|r| r.key == "username"),
                    "{e:?}"
                );
            }
        }
        assert_eq!(
            s.volumes.iter().map(|v| v.name.as_str()).collect::<Vec<_>>(),
            [REDIS_PASSWORD_VOLUME, BASIC_AUTH_VOLUME]
        );
        let probe = c.readiness_probe.as_ref().unwrap().exec.as_ref().unwrap();
        assert_eq!(probe.command.as_deref().unwrap(), [BINARY, "ready", "127.0.0.1:18500"]);
        assert!(c.startup_probe.is_some());
        assert!(c.ports.is_none(), "nothing is exposed on the pod's address");
        assert_eq!(c.restart_policy, None);
        let security = c.security_context.as_ref().unwrap();
        assert_eq!(security.run_as_non_root, Some(true));
        assert_eq!(security.run_as_user, None, "OpenShift assigns the UID");
    }

    #[test]
    fn a_native_sidecar_from_1_29() {
        assert_eq!(Placement::for_server(1, 20), Placement::Plain);
        assert_eq!(Placement::for_server(1, 28), Placement::Plain);
        assert_eq!(Placement::for_server(1, 29), Placement::Native);
        assert_eq!(Placement::for_server(2, 0), Placement::Native);
        assert_eq!(Placement::for_version("1", "29+"), Some(Placement::Native));
        assert_eq!(Placement::for_version("1", "20"), Some(Placement::Plain));
        assert_eq!(Placement::for_version("1", "x"), None);
        let p = plan("  shim: {mode: Sidecar}");
        let native = sidecar(&p, Placement::Native);
        assert_eq!(native.container.restart_policy.as_deref(), Some("Always"));
        assert_ne!(native.hash, sidecar(&p, Placement::Plain).hash);
    }

    #[test]
    fn the_hash_moves_with_the_image() {
        let a = sidecar(&plan("  shim: {mode: Sidecar}"), Placement::Plain);
        let b = sidecar(
            &plan("  shim: {mode: Sidecar, image: 'example/redsess-shim:0.2.0'}"),
            Placement::Plain,
        );
        assert_eq!(a.hash.len(), 64);
        assert_ne!(a.hash, b.hash);
        assert_eq!(a.hash, sidecar(&plan("  shim: {mode: Sidecar}"), Placement::Plain).hash);
    }
}
