//! The shim to Redis and Sentinel over TLS, with a CA of the test's own and Debian's
//! `redis-server` (built with TLS) on TLS ports: sessions flow with the right CA and host
//! name, and are refused without the CA, with another CA, or with a certificate for another
//! host; through Sentinel over TLS too.

use std::path::Path;
use std::time::{Duration, Instant};

use rcgen::ExtendedKeyUsagePurpose;
use redsess_tests::pki::{leaf, new_ca};
use redsess_tests::{free_port, until_success, webseal_session, RedisServer, Shim, SUCCESS};

/// The CA (PEM) and, in `dir`, `redis.crt`/`redis.key` for `names` signed by it.
fn certificates(dir: &Path, names: &[&str]) -> String {
    let (ca, ca_key) = new_ca("redsess redis test CA");
    let (server, key) = leaf(
        names.iter().map(|n| n.to_string()).collect(),
        names[0],
        ExtendedKeyUsagePurpose::ServerAuth,
        &ca,
        &ca_key,
    );
    std::fs::write(dir.join("redis.crt"), server.pem()).unwrap();
    std::fs::write(dir.join("redis.key"), key.serialize_pem()).unwrap();
    std::fs::write(dir.join("ca.crt"), ca.pem()).unwrap();
    ca.pem()
}

fn tls_args(dir: &Path, tls_port: u16) -> Vec<String> {
    let file = |f: &str| dir.join(f).display().to_string();
    vec![
        "--tls-port".into(),
        tls_port.to_string(),
        "--tls-cert-file".into(),
        file("redis.crt"),
        "--tls-key-file".into(),
        file("redis.key"),
        "--tls-ca-cert-file".into(),
        file("ca.crt"),
        "--tls-auth-clients".into(),
        "no".into(),
    ]
}

/// A Redis with a TLS port beside its plain one (which the harness uses). Debian's
/// redis-server is built with TLS; one without fails to start here, loudly.
fn tls_redis(dir: &Path) -> (RedisServer, u16) {
    let tls_port = free_port();
    let args = tls_args(dir, tls_port);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    (RedisServer::start_with(&args), tls_port)
}

fn shim(env: &[(&str, &str)]) -> Shim {
    Shim::start(&["--request-timeout", "2s"], env)
}

async fn creates(shim: &Shim, id: &str) -> bool {
    let reply = shim
        .client()
        .create_session("web", "default", id, 0, &webseal_session("tls-user"))
        .await;
    matches!(reply, Ok(r) if r.result() == SUCCESS)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_shim_verifies_redis_by_its_ca_and_host_name() {
    let dir = tempfile::tempdir().unwrap();
    certificates(dir.path(), &["localhost"]);
    let (_redis, tls_port) = tls_redis(dir.path());
    let ca = dir.path().join("ca.crt").display().to_string();
    let url = format!("rediss://localhost:{tls_port}");

    let good = shim(&[("REDSESS_REDIS_URL", &url), ("REDSESS_REDIS_TLS_CA_FILE", &ca)]);
    assert!(creates(&good, "S1").await, "{}", good.logs());

    // Without the CA (web PKI roots only), with another CA, and by a name the certificate
    // does not carry: no session, and the reason in the log.
    let other = tempfile::tempdir().unwrap();
    certificates(other.path(), &["localhost"]);
    let other_ca = other.path().join("ca.crt").display().to_string();
    let by_ip = format!("rediss://127.0.0.1:{tls_port}");
    for (what, env) in [
        ("no CA", vec![("REDSESS_REDIS_URL", url.as_str())]),
        (
            "another CA",
            vec![
                ("REDSESS_REDIS_URL", url.as_str()),
                ("REDSESS_REDIS_TLS_CA_FILE", &other_ca),
            ],
        ),
        (
            "another host name",
            vec![
                ("REDSESS_REDIS_URL", by_ip.as_str()),
                ("REDSESS_REDIS_TLS_CA_FILE", &ca),
            ],
        ),
    ] {
        let refused = shim(&env);
        assert!(!creates(&refused, "S2").await, "{what}: a session was stored");
        let deadline = Instant::now() + Duration::from_secs(5);
        while !refused.logs().to_lowercase().contains("certificate") {
            assert!(
                Instant::now() < deadline,
                "{what}: no reason logged:\n{}",
                refused.logs()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn through_sentinel_over_tls() {
    let dir = tempfile::tempdir().unwrap();
    certificates(dir.path(), &["localhost"]);
    let (_redis, tls_port) = tls_redis(dir.path());
    // A Sentinel on a TLS port only, monitoring the primary's TLS port by name.
    let sentinel_port = free_port();
    let conf = dir.path().join("sentinel.conf");
    let file = |f: &str| dir.path().join(f).display().to_string();
    std::fs::write(
        &conf,
        format!(
            "port 0\ntls-port {sentinel_port}\nbind 127.0.0.1\ndir {}\ntls-cert-file {}\ntls-key-file {}\n\
             tls-ca-cert-file {}\ntls-auth-clients no\ntls-replication yes\n\
             sentinel resolve-hostnames yes\nsentinel announce-hostnames yes\n\
             sentinel monitor redsess localhost {tls_port} 1\nsentinel down-after-milliseconds redsess 1000\n",
            dir.path().display(),
            file("redis.crt"),
            file("redis.key"),
            file("ca.crt"),
        ),
    )
    .unwrap();
    let mut sentinel = std::process::Command::new("redis-server")
        .arg(&conf)
        .arg("--sentinel")
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let ca = file("ca.crt");
    let sentinels = format!("localhost:{sentinel_port}");
    let through = shim(&[
        ("REDSESS_REDIS_URL", "rediss://localhost:1"),
        ("REDSESS_REDIS_SENTINELS", &sentinels),
        ("REDSESS_REDIS_SENTINEL_TLS", "true"),
        ("REDSESS_REDIS_TLS_CA_FILE", &ca),
    ]);
    let client = through.client();
    let items = webseal_session("tls-user");
    until_success(
        Duration::from_secs(20),
        "no session through Sentinel over TLS",
        || through.logs(),
        || client.create_session("web", "default", "S-sentinel", 0, &items),
    )
    .await;
    // Plain TCP to the Sentinel's TLS port: refused.
    let plain = shim(&[
        ("REDSESS_REDIS_URL", "rediss://localhost:1"),
        ("REDSESS_REDIS_SENTINELS", &sentinels),
        ("REDSESS_REDIS_TLS_CA_FILE", &ca),
    ]);
    assert!(!creates(&plain, "S-plain").await);
    let _ = sentinel.kill();
    let _ = sentinel.wait();
}

#[test]
fn tls_settings_are_checked_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let not_pem = dir.path().join("ca.crt");
    std::fs::write(&not_pem, "not a certificate\n").unwrap();
    let not_pem = not_pem.display().to_string();
    for (env, expected) in [
        (
            vec![
                ("REDSESS_REDIS_URL", "redis://r:6379"),
                ("REDSESS_REDIS_TLS_CA_FILE", not_pem.as_str()),
            ],
            "nothing uses TLS",
        ),
        (
            vec![
                ("REDSESS_REDIS_URL", "rediss://r:6379"),
                ("REDSESS_REDIS_TLS_CA_FILE", not_pem.as_str()),
            ],
            "holds no certificate",
        ),
        (
            vec![
                ("REDSESS_REDIS_URL", "rediss://r:6379"),
                ("REDSESS_REDIS_TLS_CA_FILE", "/nonexistent/ca.crt"),
            ],
            "cannot read /nonexistent/ca.crt",
        ),
        (
            vec![
                ("REDSESS_REDIS_URL", "rediss://r:6379"),
                ("REDSESS_REDIS_SENTINEL_TLS", "true"),
            ],
            "--redis-sentinel-tls (REDSESS_REDIS_SENTINEL_TLS): is set, but there are no --redis-sentinels",
        ),
    ] {
        let (status, stderr) = Shim::refuse(&[], &env);
        assert!(!status.success(), "{env:?}");
        assert!(stderr.contains(expected), "{env:?}: {stderr}");
    }
}
