//! `redsess-shim admin URL <command>`: the real binary, run as a process against a running
//! shim, on both stores, with table and JSON output.

use std::process::Command;

use redsess_tests::{shim_binary, webseal_session, RedisServer, Shim, SUCCESS};

const RS: &str = "default";

/// Runs `redsess-shim admin <url> <args>`; its exit success, stdout and stderr.
fn admin(url: &str, args: &[&str], env: &[(&str, &str)]) -> (bool, String, String) {
    let out = Command::new(shim_binary())
        .arg("admin")
        .arg(url)
        .args(args)
        .envs(env.iter().copied())
        .output()
        .expect("redsess-shim admin runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn json(url: &str, args: &[&str]) -> serde_json::Value {
    let (ok, out, err) = admin(url, &[args, &["--output", "json"]].concat(), &[]);
    assert!(ok, "admin {args:?}: {err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("admin {args:?} printed no JSON ({e}): {out}"))
}

async fn the_admin_commands(shim: &Shim) {
    let client = shim.client();
    for replica in ["webseald-a", "webseald-b"] {
        let joined = client
            .join_replica_set(replica, &format!("0a1b:{replica}"), 15, RS)
            .await
            .unwrap();
        assert_eq!(joined.result(), SUCCESS);
    }
    for (id, user) in [("a-1", "alice"), ("a-2", "alice"), ("b-1", "albert"), ("c-1", "carol")] {
        let r = client
            .create_session("webseald-a", RS, id, 0, &webseal_session(user))
            .await
            .unwrap();
        assert_eq!(r.result(), SUCCESS, "{id}");
    }
    let url = shim.url();

    let (ok, table, err) = admin(&url, &["cluster", "show"], &[]);
    assert!(ok, "{err}");
    assert!(table.starts_with("realm: ISAM-Distributed-Session-Cache\n"), "{table}");
    assert!(table.contains("REPLICA SET") && table.contains("\ndefault "), "{table}");
    let cluster = json(&url, &["cluster", "show"]);
    assert_eq!(cluster["realm"], "ISAM-Distributed-Session-Cache");
    assert_eq!(cluster["replicaSets"][0]["name"], "default");
    assert_eq!(cluster["replicaSets"][0]["keyId"], 0);

    let (ok, table, err) = admin(&url, &["replica", "list", RS], &[]);
    assert!(ok, "{err}");
    assert!(table.contains("webseald-a") && table.contains("webseald-b"), "{table}");
    let replicas = json(&url, &["replica", "list", RS]);
    assert_eq!(replicas.as_array().map(Vec::len), Some(2), "{replicas}");
    assert!(
        replicas[0]["joined"].as_i64().is_some_and(|t| t > 1_700_000_000),
        "{replicas}"
    );

    let (ok, table, err) = admin(&url, &["session", "list", RS, "al*"], &[]);
    assert!(ok, "{err}");
    assert!(
        table.lines().next().is_some_and(|h| h.starts_with("SESSION ID")),
        "{table}"
    );
    assert!(table.ends_with("3 of 3 sessions\n"), "{table}");
    let listed = json(&url, &["session", "list", RS, "*", "--max", "2"]);
    assert_eq!(
        (listed["total"].as_i64(), listed["returned"].as_i64()),
        (Some(4), Some(2)),
        "{listed}"
    );
    let alice = json(&url, &["session", "list", RS, "alice"]);
    let mut ids: Vec<&str> = alice["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["sessionId"].as_str().unwrap())
        .collect();
    ids.sort();
    assert_eq!(ids, ["a-1", "a-2"]);
    assert_eq!(alice["sessions"][0]["user"], "alice");

    let (ok, out, err) = admin(&url, &["session", "terminate", "session", RS, "c-1"], &[]);
    assert!(ok, "{err}");
    assert_eq!(out, "terminated session c-1\n");
    let (ok, _, err) = admin(&url, &["session", "terminate", "session", RS, "c-1"], &[]);
    assert!(!ok, "a second terminate finds nothing");
    assert!(err.contains("session_not_found"), "{err}");
    let ended = json(&url, &["session", "terminate", "all_sessions", RS, "alice"]);
    assert_eq!(ended["terminated"], 2);
    let gone = client.get_session("webseald-a", RS, "a-1").await.unwrap();
    assert_ne!(gone.result(), SUCCESS, "alice's sessions are gone");
    assert_eq!(json(&url, &["session", "list", RS, "*"])["total"], 1);
}

#[tokio::test]
async fn admin_commands_against_the_embedded_store() {
    let shim = Shim::start(&[], &[]);
    the_admin_commands(&shim).await;
}

#[tokio::test]
async fn admin_commands_against_redis() {
    let redis = RedisServer::start();
    let shim = Shim::start(&[], &[("REDSESS_REDIS_URL", &redis.url())]);
    the_admin_commands(&shim).await;
}

/// With Basic authentication, the password comes from the environment, never the command line.
#[tokio::test]
async fn admin_authenticates_with_basic() {
    let shim = Shim::start(
        &["--basic-auth-user", "dscadmin"],
        &[("REDSESS_BASIC_AUTH_PASSWORD", "adm1n-pass")],
    );
    let url = shim.url();
    let (ok, _, err) = admin(&url, &["cluster", "show"], &[]);
    assert!(!ok && err.contains("401"), "{err}");
    let (ok, _, err) = admin(&url, &["cluster", "show", "--user", "dscadmin"], &[]);
    assert!(!ok && err.contains("REDSESS_ADMIN_PASSWORD"), "{err}");
    let (ok, out, err) = admin(
        &url,
        &["cluster", "show", "--user", "dscadmin"],
        &[("REDSESS_ADMIN_PASSWORD", "adm1n-pass")],
    );
    assert!(ok, "{err}");
    assert!(out.starts_with("realm: "), "{out}");
}
