//! Sentinel failover with real processes: a primary, a replica and a Sentinel
//! (`redis-server --sentinel`); the shim asks Sentinel for the primary and follows a failover
//! without losing the sessions that had reached the replica.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use redsess_tests::{free_port, webseal_session, RedisServer, Shim, SUCCESS};

/// A Sentinel process monitoring `primary_port` as `redsess`, quorum 1, down after 1 s.
struct Sentinel {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Sentinel {
    fn start(primary_port: u16) -> Sentinel {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let conf = dir.path().join("sentinel.conf");
        std::fs::write(
            &conf,
            format!(
                "port {port}\nbind 127.0.0.1\ndir {}\nsentinel monitor redsess 127.0.0.1 {primary_port} 1\n\
                 sentinel down-after-milliseconds redsess 1000\nsentinel failover-timeout redsess 5000\n\
                 sentinel parallel-syncs redsess 1\n",
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
        let sentinel = Sentinel { child, port, _dir: dir };
        wait_until(Duration::from_secs(10), "Sentinel answers", || {
            sentinel.primary_port() == Some(primary_port)
        });
        sentinel
    }

    /// The primary's port as Sentinel names it now.
    fn primary_port(&self) -> Option<u16> {
        let out = Command::new("redis-cli")
            .args([
                "-p",
                &self.port.to_string(),
                "sentinel",
                "get-master-addr-by-name",
                "redsess",
            ])
            .output()
            .ok()?;
        String::from_utf8_lossy(&out.stdout).lines().nth(1)?.trim().parse().ok()
    }
}

impl Drop for Sentinel {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wait_until(limit: Duration, what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(100));
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
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        match c.get_session("web", "default", "S-before").await {
            Ok(r) if r.result() == SUCCESS => {
                assert_eq!(r.data(), items);
                break;
            }
            other => {
                assert!(
                    Instant::now() < deadline,
                    "the shim did not follow the failover: {:?}\n{}",
                    other.map(|r| r.result()),
                    shim.logs()
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    let after = c.create_session("web", "default", "S-after", 0, &items).await.unwrap();
    assert_eq!(after.result(), SUCCESS, "writes go to the new primary");
}
