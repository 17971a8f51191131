//! The injected shim, run as the webhook would inject it: the container comes from the same
//! builder (`redsess_operator::build::sidecar`), its environment is passed as it stands, its
//! Secret volumes become files with the same names under a temporary root, and its probe
//! command is run as the kubelet would. Only what a pod provides and a test process cannot is
//! rebased: the mount paths (under the temporary root), the Redis Service's address (a real
//! `redis-server` on a free port), and the port (one free port per sidecar, where pods would
//! each have their own loopback).

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use k8s_openapi::api::core::v1::Container;
use redsess_operator::build::sidecar::{sidecar, Placement};
use redsess_operator::validate::validate;
use redsess_tests::{expect, free_port, run_probe, webseal_session, ClientOptions, RedisServer, Shim, SUCCESS};

const REDIS_PASSWORD: &str = "redis-secret-value";
const BASIC_PASSWORD: &str = "basic-secret-value";

/// The injected container of a Sidecar-mode cache whose shim listens on `port`.
fn injected(port: u16) -> (Container, Vec<k8s_openapi::api::core::v1::Volume>) {
    let sc = serde_yaml::from_str(&format!(
        "apiVersion: redsess.io/v1alpha1\nkind: SessionCache\nmetadata: {{name: sessions, namespace: isam, uid: u1}}\n\
         spec: {{shim: {{mode: Sidecar, sidecar: {{port: {port}}}}}}}"
    ))
    .unwrap();
    let shim = sidecar(&validate(&sc).unwrap(), Placement::Native);
    (shim.container, shim.volumes)
}

/// The Secrets of the namespace, as the kubelet would read them.
fn secret(name: &str, key: &str) -> String {
    match (name, key) {
        ("sessions-redis-auth", "password") => REDIS_PASSWORD.into(),
        ("sessions-shim-auth", "password") => BASIC_PASSWORD.into(),
        ("sessions-shim-auth", "username") => "webseal".into(),
        _ => panic!("the sidecar refers to Secret {name} key {key}, which the operator does not make"),
    }
}

/// Starts the container as a process: its volumes written under `root`, its environment as
/// given (paths rebased to `root`, the Redis address to `redis`).
fn start(
    container: &Container,
    volumes: &[k8s_openapi::api::core::v1::Volume],
    root: &Path,
    redis: &RedisServer,
) -> Shim {
    let mut mounted = BTreeMap::new();
    for mount in container.volume_mounts.iter().flatten() {
        let volume = volumes
            .iter()
            .find(|v| v.name == mount.name)
            .expect("every mount has its volume");
        let source = volume.secret.as_ref().expect("the sidecar mounts Secrets only");
        let dir = root.join(mount.mount_path.trim_start_matches('/'));
        std::fs::create_dir_all(&dir).unwrap();
        for item in source.items.iter().flatten() {
            let value = secret(source.secret_name.as_deref().unwrap(), &item.key);
            std::fs::write(dir.join(&item.path), value).unwrap();
        }
        mounted.insert(mount.mount_path.clone(), dir);
    }
    let mut env: Vec<(String, String)> = Vec::new();
    for var in container.env.iter().flatten() {
        let value = match (&var.value, &var.value_from) {
            (Some(value), None) => value.clone(),
            (None, Some(from)) => {
                let reference = from.secret_key_ref.as_ref().expect("only Secret references");
                secret(&reference.name, &reference.key)
            }
            other => panic!("{}: unexpected {other:?}", var.name),
        };
        let value = mounted
            .iter()
            .find_map(|(path, dir)| {
                value
                    .strip_prefix(path.as_str())
                    .map(|rest| format!("{}{rest}", dir.display()))
            })
            .unwrap_or(value);
        let value = if var.name == "REDSESS_REDIS_URL" {
            assert_eq!(
                value, "redis://redsess@sessions-redis.isam.svc:6379",
                "the cache's Redis, as ACL user redsess"
            );
            format!("redis://redsess@127.0.0.1:{}", redis.port)
        } else {
            value
        };
        env.push((var.name.clone(), value));
    }
    let listen = env.iter().find(|(k, _)| k == "REDSESS_LISTEN").unwrap().1.clone();
    assert!(listen.starts_with("127.0.0.1:"), "loopback only: {listen}");
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    Shim::start(&["--listen", &listen], &env)
}

/// Runs the container's readiness probe as the kubelet would: its exec command.
fn probe_passes(container: &Container) -> bool {
    let command = container
        .readiness_probe
        .as_ref()
        .unwrap()
        .exec
        .as_ref()
        .unwrap()
        .command
        .clone()
        .unwrap();
    assert_eq!(
        command[0], "/usr/local/bin/redsess-shim",
        "the binary of the shim image"
    );
    Command::new(redsess_tests::shim_binary())
        .args(&command[1..])
        .status()
        .is_ok_and(|s| s.success())
}

fn redis_with_acl() -> RedisServer {
    RedisServer::start_with(&[
        "--user",
        "default",
        "off",
        "--user",
        "redsess",
        "on",
        &format!(">{REDIS_PASSWORD}"),
        "~*",
        "&*",
        "+@all",
    ])
}

#[tokio::test]
async fn the_injected_shim_serves_a_webseal_lifecycle_and_two_share_sessions() {
    let redis = redis_with_acl();
    let root = tempfile::tempdir().unwrap();
    let (port_a, port_b) = (free_port(), free_port());
    let (container_a, volumes_a) = injected(port_a);
    let (container_b, volumes_b) = injected(port_b);
    assert_eq!(container_a.env, {
        let mut env = container_b.env.clone();
        for var in env.iter_mut().flatten() {
            if var.name == "REDSESS_LISTEN" {
                var.value = Some(format!("127.0.0.1:{port_a}"));
            }
        }
        env
    });
    let a = start(&container_a, &volumes_a, &root.path().join("a"), &redis);
    let b = start(&container_b, &volumes_b, &root.path().join("b"), &redis);
    assert!(
        probe_passes(&container_a),
        "the readiness probe of sidecar a:\n{}",
        a.logs()
    );
    assert!(
        probe_passes(&container_b),
        "the readiness probe of sidecar b:\n{}",
        b.logs()
    );

    let (ok, output) = run_probe(
        &format!("http://127.0.0.1:{port_a}"),
        &["--user", "webseal"],
        &[("REDSESS_PROBE_PASSWORD", BASIC_PASSWORD)],
    );
    assert!(ok, "redsess-shim probe against the sidecar:\n{output}\n{}", a.logs());

    // A session stored through one pod's shim is read through the other's.
    let auth = || ClientOptions {
        basic_auth: Some(("webseal".into(), BASIC_PASSWORD.into())),
        ..ClientOptions::default()
    };
    let (ca, cb) = (a.client_with(auth()), b.client_with(auth()));
    expect(
        ca.join_replica_set("web-a", "uuid-a:web-a", 15, "default").await,
        SUCCESS,
        "join a",
    );
    expect(
        cb.join_replica_set("web-b", "uuid-b:web-b", 15, "default").await,
        SUCCESS,
        "join b",
    );
    let items = webseal_session("alice");
    expect(
        ca.create_session("web-a", "default", "sid-sidecar-1", 0, &items).await,
        SUCCESS,
        "create via a",
    );
    let got = expect(
        cb.get_session("web-b", "default", "sid-sidecar-1").await,
        SUCCESS,
        "get via b",
    );
    assert_eq!(got.data(), items, "the session as stored through a");

    // Without the Basic password the sidecar refuses, as the Deployment's shim does.
    let anonymous = a.client_with(ClientOptions::default());
    assert!(
        anonymous.ping().await.is_err(),
        "a client without the password is refused"
    );
}
