//! Sentinel failover with real processes: a primary, a replica and a Sentinel
//! (`redis-server --sentinel`); the shim asks Sentinel for the primary and follows a failover
//! without losing the sessions that had reached the replica.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use redsess_tests::{free_port, redis_cli, until_success, wait_until, webseal_session, RedisServer, Shim, SUCCESS};

/// A Sentinel process monitoring `primary_port` as `redsess`, quorum 1, down after 1 s.
struct Sentinel {
    child: Child,
    port: u16,
    /// Authenticate as `admin` (see [`sentinel_acl`]).
    admin: bool,
    _dir: tempfile::TempDir,
}

/// Sentinel ACL users as the operator writes them: the default user off, an administrator
/// the Sentinels use among themselves, and `redsess` for the shims with the operator's
/// client rules, which may only ask.
fn sentinel_acl() -> String {
    format!(
        "user default off\nuser admin on >admin-pass ~* &* +@all\nuser redsess on >shim-pass {}\n\
         sentinel sentinel-user admin\nsentinel sentinel-pass admin-pass\n",
        redsess_operator::build::sentinel::CLIENT_RULES
    )
}

impl Sentinel {
    fn start(primary_port: u16) -> Sentinel {
        Self::start_with(primary_port, "")
    }

    /// With `extra` appended to sentinel.conf (ACL users, say); the `admin` user asks, if any.
    fn start_with(primary_port: u16, extra: &str) -> Sentinel {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let conf = dir.path().join("sentinel.conf");
        std::fs::write(
            &conf,
            format!(
                "port {port}\nbind 127.0.0.1\ndir {}\nsentinel monitor redsess 127.0.0.1 {primary_port} 1\n\
                 sentinel down-after-milliseconds redsess 1000\nsentinel failover-timeout redsess 5000\n\
                 sentinel parallel-syncs redsess 1\n{extra}",
                dir.path().display()
            ),
        )
        .unwrap();
        let child = Command::new("redis-server")
            .arg(&conf)
            .arg("--sentinel")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server --sentinel");
        let sentinel = Sentinel {
            child,
            port,
            admin: extra.contains("user admin"),
            _dir: dir,
        };
        wait_until(Duration::from_secs(10), "Sentinel answers", || {
            sentinel.primary_port() == Some(primary_port)
        });
        sentinel
    }

    /// The primary's port as Sentinel names it now.
    fn primary_port(&self) -> Option<u16> {
        let auth = self.admin.then_some(("admin", "admin-pass"));
        let said = redis_cli(
            "127.0.0.1",
            self.port,
            auth,
            &["sentinel", "get-master-addr-by-name", "redsess"],
        );
        said.lines().nth(1)?.trim().parse().ok()
    }
}

impl Drop for Sentinel {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_shim_follows_a_sentinel_failover() {
    let mut primary = RedisServer::start();
    let replica = RedisServer::start_with(&["--replicaof", "127.0.0.1", &primary.port.to_string()]);
    wait_until(Duration::from_secs(10), "the replica is in sync", || {
        replica
            .command("INFO replication")
            .is_some_and(|i| i.contains("master_link_status:up"))
    });
    let sentinel = Sentinel::start(primary.port);
    // The URL's host is not used with Sentinel; it carries the credentials (none here).
    let shim = Shim::start(
        &["--request-timeout", "1s"],
        &[
            ("REDSESS_REDIS_URL", "redis://127.0.0.1:1"),
            ("REDSESS_REDIS_SENTINELS", &format!("127.0.0.1:{}", sentinel.port)),
            ("REDSESS_REDIS_SENTINEL_PRIMARY", "redsess"),
        ],
    );
    let c = shim.client();
    let items = webseal_session("failover-user");
    let created = c.create_session("web", "default", "S-before", 0, &items).await.unwrap();
    assert_eq!(created.result(), SUCCESS);
    wait_until(Duration::from_secs(5), "the session reached the replica", || {
        replica.command("DBSIZE").is_some_and(|r| r.trim() != ":0")
    });

    primary.stop();
    let old_primary = primary.port;
    wait_until(Duration::from_secs(30), "Sentinel promotes the replica", || {
        sentinel.primary_port() == Some(replica.port)
    });
    assert_ne!(old_primary, replica.port);

    // The first calls may fail while the shim notices; within seconds it follows Sentinel.
    let r = until_success(
        Duration::from_secs(15),
        "the shim did not follow the failover",
        || shim.logs(),
        || c.get_session("web", "default", "S-before"),
    )
    .await;
    assert_eq!(r.data(), items);
    let after = c.create_session("web", "default", "S-after", 0, &items).await.unwrap();
    assert_eq!(after.result(), SUCCESS, "writes go to the new primary");
}

#[tokio::test(flavor = "multi_thread")]
async fn with_sentinel_acls_the_shim_authenticates_and_only_reads() {
    let primary = RedisServer::start();
    let sentinel = Sentinel::start_with(primary.port, &sentinel_acl());
    let sentinels = format!("127.0.0.1:{}", sentinel.port);
    let password_file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(password_file.path(), "shim-pass\n").unwrap();
    let shim = Shim::start(
        &["--request-timeout", "1s"],
        &[
            ("REDSESS_REDIS_URL", "redis://127.0.0.1:1"),
            ("REDSESS_REDIS_SENTINELS", &sentinels),
            ("REDSESS_REDIS_SENTINEL_USER", "redsess"),
            (
                "REDSESS_REDIS_SENTINEL_PASSWORD_FILE",
                password_file.path().to_str().unwrap(),
            ),
        ],
    );
    let items = webseal_session("acl-user");
    let created = shim
        .client()
        .create_session("web", "default", "S-acl", 0, &items)
        .await
        .unwrap();
    assert_eq!(created.result(), SUCCESS, "{}", shim.logs());

    // Without credentials Sentinel names no primary, and the shim says why.
    let anonymous = Shim::start(
        &["--request-timeout", "1s"],
        &[
            ("REDSESS_REDIS_URL", "redis://127.0.0.1:1"),
            ("REDSESS_REDIS_SENTINELS", &sentinels),
        ],
    );
    let refused = anonymous.client().get_session("web", "default", "S-acl").await;
    assert!(!matches!(&refused, Ok(r) if r.result() == SUCCESS));
    let (status, body) = anonymous.http_get("/readyz").expect("/readyz answers");
    assert_eq!(status, 503, "{body}");
    assert!(
        body.contains("NOAUTH") || anonymous.logs().contains("NOAUTH"),
        "the reason is named: {body}\n{}",
        anonymous.logs()
    );

    // Nobody reconfigures Sentinel without the administrator's password: not anonymously,
    // and not with the shim's.
    let port = sentinel.port;
    let primary_port = primary.port.to_string();
    for auth in [None, Some(("redsess", "shim-pass"))] {
        for command in [
            &["sentinel", "set", "redsess", "quorum", "5"][..],
            &["sentinel", "remove", "redsess"],
            &["sentinel", "monitor", "evil", "127.0.0.1", &primary_port, "1"],
        ] {
            let said = redis_cli("127.0.0.1", port, auth, command);
            assert!(
                said.contains("NOAUTH") || said.contains("NOPERM"),
                "{command:?} as {auth:?} was not refused: {said}"
            );
        }
    }
    assert_eq!(sentinel.primary_port(), Some(primary.port), "the monitor is unchanged");
}
