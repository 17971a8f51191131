//! A replicated SessionCache as the operator renders it, run as pods (tests/src/pods.rs):
//! three Redis pods and three Sentinels started by their rendered scripts, the shim by its
//! rendered Deployment. What an attacker on the pod network may try is refused; each Redis
//! user may do what its consumer needs and nothing more; a failover keeps the sessions and
//! the shim follows it.

use std::process::Command;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use k8s_openapi::jiff::Timestamp;
use redsess_operator::build::{self, Emitted, Observed};
use redsess_operator::redis_tls;
use redsess_operator::validate::validate;
use redsess_shim::client::{ClientOptions, DscClient};
use redsess_tests::pods::{Network, Pod};
use redsess_tests::{redis_cli, redis_cli_tls, shim_binary, until_success, wait_until, webseal_session, SUCCESS};

const CACHE: &str = "\
apiVersion: redsess.io/v1alpha1
kind: SessionCache
metadata: {name: cache, namespace: isam, uid: u1}
spec:
  redis: {replicas: 3}
  sentinel: {replicas: 3, quorum: 2, downAfter: 2s, failoverTimeout: 10s}
  shim: {encryption: {mode: Sealed}}
  clients: [{name: www, kind: WebSEALRedis}, {name: gw, kind: IAG}]
";

/// The same cache with TLS on Redis, replication and Sentinel.
const TLS_CACHE: &str = "\
apiVersion: redsess.io/v1alpha1
kind: SessionCache
metadata: {name: cache, namespace: isam, uid: u1}
spec:
  redis: {replicas: 3, tls: {enabled: true}}
  sentinel: {replicas: 3, quorum: 2, downAfter: 2s, failoverTimeout: 10s}
";

/// Every object of `cache`, generated Secrets (`generated-1-x7Qp`, … in emission order) and
/// TLS key material included, as the operator makes them for a new cache.
fn render(cache: &str) -> Vec<Emitted> {
    let plan = validate(&serde_yaml::from_str(cache).unwrap()).unwrap();
    let observed = Observed {
        redis_tls: redis_tls::prepare(&plan, &redis_tls::Found::default(), Timestamp::now()).unwrap(),
        ..Observed::default()
    };
    let owner = OwnerReference {
        api_version: "redsess.io/v1alpha1".into(),
        kind: "SessionCache".into(),
        name: "cache".into(),
        uid: "u1".into(),
        controller: Some(true),
        ..OwnerReference::default()
    };
    let mut n = 0;
    build::all(&plan, &owner, &observed, &mut || {
        n += 1;
        format!("generated-{n}-x7Qp")
    })
}

fn secret(objects: &[Emitted], name: &str, key: &str) -> String {
    objects
        .iter()
        .find_map(|o| match o {
            Emitted::Secret(s) if o.name() == name => {
                let text = s.string_data.as_ref().and_then(|d| d.get(key).cloned());
                let bytes = s.data.as_ref().and_then(|d| d.get(key));
                text.or_else(|| String::from_utf8(bytes?.0.clone()).ok())
            }
            _ => None,
        })
        .unwrap_or_else(|| panic!("no {name}/{key} rendered"))
}

/// The rendered pods, started and ready (three Redis, then three Sentinels, then the shim),
/// and a DSC client with the shim's Basic credentials. Fields drop in order: pods before the
/// network they run in.
struct Running {
    redis: Vec<Pod>,
    sentinels: Vec<Pod>,
    shim: Pod,
    client: DscClient,
    _network: Network,
}

/// Starts `objects` as pods; `None` (saying why) where this machine cannot run them and
/// REDSESS_REQUIRE_PODS is not set.
fn start(objects: &[Emitted], test: &str) -> Option<Running> {
    let network = match Network::create(objects.to_vec()) {
        Ok(n) => n,
        Err(why) if std::env::var_os("REDSESS_REQUIRE_PODS").is_none() => {
            eprintln!("SKIPPED cache_pods ({test}): {why}");
            return None;
        }
        Err(why) => panic!("REDSESS_REQUIRE_PODS is set, but: {why}"),
    };
    let redis: Vec<Pod> = (0..3).map(|i| network.start_stateful("cache-redis", i)).collect();
    for pod in &redis {
        pod.wait_ready(Duration::from_secs(30));
    }
    let sentinels: Vec<Pod> = (0..3).map(|i| network.start_stateful("cache-sentinel", i)).collect();
    for pod in &sentinels {
        pod.wait_ready(Duration::from_secs(60));
    }
    let shim = network.start_deployment("cache-shim", "cache-shim-0", &shim_binary());
    let client = DscClient::new(
        &format!("http://{}:8443", shim.ip),
        ClientOptions {
            basic_auth: Some((
                secret(objects, "cache-shim-auth", "username"),
                secret(objects, "cache-shim-auth", "password"),
            )),
            ..ClientOptions::default()
        },
    )
    .unwrap();
    Some(Running {
        redis,
        sentinels,
        shim,
        client,
        _network: network,
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn the_rendered_cache_runs_locked_down_and_survives_a_failover() {
    let objects = render(CACHE);
    let Some(Running {
        mut redis,
        sentinels,
        shim,
        client,
        _network,
    }) = start(&objects, "plain")
    else {
        return;
    };
    let shim_url = format!("http://{}:8443", shim.ip);
    let redis_password = secret(&objects, "cache-redis-auth", "password");
    let admin_password = secret(&objects, "cache-sentinel-auth", "password");
    let redis_auth = Some(("redsess", redis_password.as_str()));
    let admin_auth = Some(("redsess-sentinel", admin_password.as_str()));
    let items = webseal_session("pod-user");
    until_success(
        Duration::from_secs(30),
        "the shim does not serve",
        || shim.logs(),
        || client.create_session("web", "default", "S-pods", 0, &items),
    )
    .await;

    // The whole DSC lifecycle (join, create, get, change, updates, terminate) passes with
    // the shim's restricted user.
    let basic = secret(&objects, "cache-shim-auth", "password");
    let (ok, said) = redsess_tests::run_probe(
        &shim_url,
        &["--user", "webseal"],
        &[("REDSESS_PROBE_PASSWORD", basic.as_str())],
    );
    assert!(ok, "{said}\n{}", shim.logs());
    assert!(!shim.logs().contains("NOPERM"), "{}", shim.logs());
    // Its user may also look at Redis (INFO) for the metrics the alerts read.
    let metrics_at: std::net::SocketAddr = format!("{}:8443", shim.ip).parse().unwrap();
    redsess_tests::wait_until(Duration::from_secs(20), "the shim reports a primary", || {
        redsess_tests::http_get(metrics_at, "/metrics")
            .is_some_and(|(_, body)| body.contains("redsess_shim_redis_up 1"))
    });

    // Redis: nobody without the password, and not with a wrong one.
    let primary = redis[0].ip.clone();
    // The shim seals records with the generated key file it was given.
    let key_id = secret(&objects, "cache-record-keys", "keys")
        .lines()
        .find(|l| !l.starts_with('#'))
        .and_then(|l| l.split_whitespace().next())
        .unwrap()
        .to_string();
    let stored = redis_cli(
        &primary,
        6379,
        redis_auth,
        &["hget", "redsess:s:{7:default:S-pods}", "d"],
    );
    assert!(stored.starts_with(&format!("\u{3}\u{9}{key_id}")), "{stored:?}");
    assert!(redis_cli(&primary, 6379, None, &["get", "x"]).contains("NOAUTH"));
    assert!(redis_cli(&primary, 6379, Some(("redsess", "guess")), &["get", "x"]).contains("WRONGPASS"));
    assert!(redis_cli(&primary, 6379, Some(("default", "")), &["get", "x"]).contains("WRONGPASS"));
    // Each user keeps to its consumer's commands and keys.
    let www_password = secret(&objects, "cache-client-www-redis-auth", "password");
    let gw_password = secret(&objects, "cache-client-gw-redis-auth", "password");
    let www = Some(("client-www", www_password.as_str()));
    let gw = Some(("client-gw", gw_password.as_str()));
    let replication_password = secret(&objects, "cache-redis-replication-auth", "password");
    let replication = Some(("redsess-replication", replication_password.as_str()));
    let ok = |said: String| assert!(!said.contains("NOPERM") && !said.contains("ERR"), "{said}");
    let refused = |said: String| assert!(said.contains("NOPERM"), "not refused: {said}");
    ok(redis_cli(
        &primary,
        6379,
        www,
        &["hmset", "webseal-cache:session-x", "a", "1"],
    ));
    ok(redis_cli(&primary, 6379, www, &["client", "list"]));
    ok(redis_cli(
        &primary,
        6379,
        gw,
        &["hmset", "iag-cache:session-y", "a", "1"],
    ));
    refused(redis_cli(&primary, 6379, www, &["hgetall", "iag-cache:session-y"]));
    refused(redis_cli(&primary, 6379, gw, &["hgetall", "webseal-cache:session-x"]));
    for user in [www, gw] {
        refused(redis_cli(&primary, 6379, user, &["scan", "0"]));
        refused(redis_cli(
            &primary,
            6379,
            user,
            &["hgetall", "redsess:s:{7:default:S-pods}"],
        ));
    }
    for user in [redis_auth, www, replication] {
        refused(redis_cli(&primary, 6379, user, &["flushall"]));
        refused(redis_cli(&primary, 6379, user, &["config", "set", "appendonly", "no"]));
        refused(redis_cli(&primary, 6379, user, &["replicaof", "10.0.0.1", "6379"]));
    }
    // The shims announce key rotations on their own channel only.
    ok(redis_cli(
        &primary,
        6379,
        redis_auth,
        &["publish", "redsess:keys", "default"],
    ));
    refused(redis_cli(&primary, 6379, redis_auth, &["publish", "elsewhere", "x"]));
    let subscribed = Command::new("timeout")
        .args([
            "1",
            "redis-cli",
            "--user",
            "redsess",
            "-h",
            &primary,
            "subscribe",
            "redsess:keys",
        ])
        .env("REDISCLI_AUTH", &redis_password)
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&subscribed.stdout).contains("redsess:keys"),
        "{subscribed:?}"
    );
    refused(redis_cli(
        &primary,
        6379,
        redis_auth,
        &["hgetall", "webseal-cache:session-x"],
    ));
    refused(redis_cli(&primary, 6379, redis_auth, &["keys", "*"]));
    refused(redis_cli(&primary, 6379, replication, &["get", "redsess:sets"]));

    // Sentinel: nobody reconfigures it but the Sentinels, not even with the Redis password.
    let sentinel = sentinels[0].ip.clone();
    for auth in [None, redis_auth] {
        for command in [
            &["sentinel", "set", "redsess", "quorum", "1"][..],
            &["sentinel", "remove", "redsess"],
            &["sentinel", "monitor", "evil", "10.0.0.1", "6379", "1"],
            &["sentinel", "failover", "redsess"],
        ] {
            let said = redis_cli(&sentinel, 26379, auth, command);
            assert!(
                said.contains("NOAUTH") || said.contains("NOPERM"),
                "{command:?} as {auth:?}: {said}"
            );
        }
    }
    let named = redis_cli(
        &sentinel,
        26379,
        redis_auth,
        &["sentinel", "get-master-addr-by-name", "redsess"],
    );
    assert!(named.starts_with("cache-redis-0."), "{named}");
    // The Sentinels found each other with their administrator's credentials.
    wait_until(Duration::from_secs(30), "every Sentinel knows the other two", || {
        redis_cli(&sentinel, 26379, admin_auth, &["sentinel", "master", "redsess"])
            .lines()
            .collect::<Vec<_>>()
            .windows(2)
            .any(|w| w[0] == "num-other-sentinels" && w[1] == "2")
    });

    // The session reached both replicas before the primary goes.
    wait_until(Duration::from_secs(10), "the replicas have the session", || {
        redis[1..]
            .iter()
            .all(|r| redis_cli(&r.ip, 6379, redis_auth, &["dbsize"]).trim() != "0")
    });
    let cli = |host: &str, port: u16, args: &[&str]| redis_cli(host, port, redis_auth, args);
    failover_resumes(&mut redis, &sentinel, cli, &client, &shim, "S-pods", &items).await;
    assert!(!shim.logs().contains("NOPERM"), "{}", shim.logs());
}

#[tokio::test(flavor = "multi_thread")]
async fn with_tls_only_clients_that_trust_the_ca_get_in_and_a_failover_resumes() {
    let objects = render(TLS_CACHE);
    let Some(Running {
        mut redis,
        sentinels,
        shim,
        client,
        _network,
    }) = start(&objects, "TLS")
    else {
        return;
    };
    // What the clients are given (the CA alone), and a CA of somebody else's.
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.crt");
    std::fs::write(&ca, secret(&objects, "cache-redis-ca", "ca.crt")).unwrap();
    let other_ca = dir.path().join("other-ca.crt");
    std::fs::write(&other_ca, redsess_tests::pki::new_ca("not the cache's CA").0.pem()).unwrap();
    let redis_password = secret(&objects, "cache-redis-auth", "password");
    let admin_password = secret(&objects, "cache-sentinel-auth", "password");
    let redis_auth = Some(("redsess", redis_password.as_str()));
    let admin_auth = Some(("redsess-sentinel", admin_password.as_str()));
    let tls = Some(ca.as_path());
    let items = webseal_session("tls-user");
    until_success(
        Duration::from_secs(30),
        "the shim does not serve over TLS to Redis",
        || shim.logs(),
        || client.create_session("web", "default", "S-tls", 0, &items),
    )
    .await;

    // Redis and Sentinel: TLS only, and only for a client that trusts the cache's CA.
    let primary = redis[0].ip.clone();
    let sentinel = sentinels[0].ip.clone();
    for (host, port, auth) in [(&primary, 6379, redis_auth), (&sentinel, 26379, admin_auth)] {
        let plain = redis_cli(host, port, auth, &["ping"]);
        assert!(!plain.contains("PONG"), "plain text answered on {port}: {plain}");
        let stranger = redis_cli_tls(host, port, Some(&other_ca), auth, &["ping"]);
        assert!(
            !stranger.contains("PONG"),
            "a client without the CA got in on {port}: {stranger}"
        );
        assert!(stranger.contains("certificate verify failed"), "{stranger}");
        assert_eq!(redis_cli_tls(host, port, tls, auth, &["ping"]).trim(), "PONG");
    }
    let guess = redis_cli_tls(&primary, 6379, tls, Some(("redsess", "guess")), &["ping"]);
    assert!(guess.contains("WRONGPASS"), "{guess}");
    for command in [
        &["sentinel", "set", "redsess", "quorum", "1"][..],
        &["sentinel", "remove", "redsess"],
        &["sentinel", "monitor", "evil", "10.0.0.1", "6379", "1"],
    ] {
        for auth in [None, redis_auth] {
            let said = redis_cli_tls(&sentinel, 26379, tls, auth, command);
            assert!(
                said.contains("NOAUTH") || said.contains("NOPERM"),
                "{command:?} as {auth:?}: {said}"
            );
        }
    }
    // Replication and the Sentinels' own connections run over TLS too.
    wait_until(Duration::from_secs(30), "both replicas sync over TLS", || {
        redis_cli_tls(&primary, 6379, tls, redis_auth, &["dbsize"]).trim() != "0"
            && redis[1..]
                .iter()
                .all(|r| redis_cli_tls(&r.ip, 6379, tls, redis_auth, &["dbsize"]).trim() != "0")
    });
    wait_until(Duration::from_secs(30), "every Sentinel knows the other two", || {
        redis_cli_tls(&sentinel, 26379, tls, admin_auth, &["sentinel", "master", "redsess"])
            .lines()
            .collect::<Vec<_>>()
            .windows(2)
            .any(|w| w[0] == "num-other-sentinels" && w[1] == "2")
    });

    let cli = |host: &str, port: u16, args: &[&str]| redis_cli_tls(host, port, tls, redis_auth, args);
    failover_resumes(&mut redis, &sentinel, cli, &client, &shim, "S-tls", &items).await;
}

/// Kills the primary (pod 0) and checks what follows: Sentinel promotes a replica, the shim
/// keeps session `id` and writes reach the new primary, and the old primary comes back as a
/// replica of the new one, as its start script asks Sentinel. `cli(host, port, args)` asks as
/// the shim's Redis user (over TLS when the cache speaks it).
async fn failover_resumes(
    redis: &mut [Pod],
    sentinel: &str,
    cli: impl Fn(&str, u16, &[&str]) -> String,
    client: &DscClient,
    shim: &Pod,
    id: &str,
    items: &[redsess_shim::dsc::DataItem],
) {
    let primary = redis[0].ip.clone();
    redis[0].kill();
    wait_until(Duration::from_secs(60), "Sentinel promotes a replica", || {
        let now = cli(sentinel, 26379, &["sentinel", "get-master-addr-by-name", "redsess"]);
        now.starts_with("cache-redis-1.") || now.starts_with("cache-redis-2.")
    });
    let r = until_success(
        Duration::from_secs(30),
        "the shim did not follow the failover",
        || shim.logs(),
        || client.get_session("web", "default", id),
    )
    .await;
    assert_eq!(r.data(), items);
    let after = client
        .create_session("web", "default", &format!("{id}-after"), 0, items)
        .await
        .unwrap();
    assert_eq!(after.result(), SUCCESS, "writes reach the new primary");
    redis[0].run();
    redis[0].wait_ready(Duration::from_secs(60));
    wait_until(Duration::from_secs(30), "the old primary follows the new one", || {
        cli(&primary, 6379, &["role"]).starts_with("slave")
    });
    assert!(redis[0].logs().contains("starts as a replica"), "{}", redis[0].logs());
}
