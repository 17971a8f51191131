//! What only the Redis store does, with real processes: several shims on one Redis are one
//! cache, a restart of the shim loses nothing, a Redis outage is a fast 503 (and is survived),
//! the per-user index keeps only live sessions, and sessions carry a TTL.
//!
//! The Redis keys inspected here are the layout documented in `shim/src/store/redis.rs`
//! (default prefix `redsess:`): `s:{<n>:<rs>:<id>}` sessions, `u:{<n>:<rs>:<user>}` user indexes.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use redsess_tests::code::{
    CAPABILITY_MISMATCH, ID_IN_USE, INSTANCE_TAKEN, LIMIT_REACHED, NOT_FOUND, STALE_VERSION, SUCCESS,
};
use redsess_tests::expect;
use redsess_tests::{
    item, now, resp_integer, resp_strings, start_of_second, webseal_session, ClientError, DataItem, RedisServer, Reply,
    Shim, Traced,
};

const RS: &str = "default";
const USER_NAME: &str = "com.tivoli.am.eb.user-name";
const EXPIRY: &str = "com.tivoli.am.eb.expiry";

fn shim_on(redis: &RedisServer, args: &[&str]) -> Traced {
    Traced(Shim::start(args, &[("REDSESS_REDIS_URL", &redis.url())]))
}

fn session_key(id: &str) -> String {
    format!("redsess:s:{{{}:{RS}:{id}}}", RS.len())
}

fn user_key(user: &str) -> String {
    format!("redsess:u:{{{}:{RS}:{user}}}", RS.len())
}

/// The IDs in a user's index, as Redis holds them.
fn index_of(redis: &RedisServer, user: &str) -> BTreeSet<String> {
    let answer = redis
        .command(&format!("ZRANGE {} 0 -1", user_key(user)))
        .expect("ZRANGE");
    resp_strings(&answer).into_iter().collect()
}

fn pttl(redis: &RedisServer, key: &str) -> i64 {
    let answer = redis.command(&format!("PTTL {key}")).expect("PTTL");
    resp_integer(&answer).unwrap_or_else(|| panic!("PTTL {key}: {answer:?}"))
}

fn set(ids: &[&str]) -> BTreeSet<String> {
    ids.iter().map(|s| s.to_string()).collect()
}

fn replicas(r: &Reply) -> BTreeSet<String> {
    r.groups()
        .iter()
        .flat_map(|g| g.iter().filter(|(n, _)| n == "Replica").map(|(_, v)| v.clone()))
        .collect()
}

fn user(name: &str) -> DataItem {
    item(USER_NAME, "sms", Some(name))
}

#[tokio::test]
async fn two_shims_serve_the_same_sessions() {
    let redis = RedisServer::start();
    let (a, b) = (shim_on(&redis, &[]), shim_on(&redis, &[]));
    let (ca, cb) = (a.client(), b.client());
    let items = webseal_session("alice");
    expect(
        ca.create_session("web-a", RS, "s-1", 0, &items).await,
        SUCCESS,
        "create on A",
    );
    expect(
        cb.create_session("web-b", RS, "s-1", 0, &items).await,
        ID_IN_USE,
        "the same ID on B",
    );
    let got = expect(cb.get_session("web-b", RS, "s-1").await, SUCCESS, "get on B");
    assert_eq!(got.data(), items);
    assert_eq!(got.number("version"), Some(0));

    let change = [item("com.tivoli.am.webseal.lifetime-extended", "webseal", Some("true"))];
    let r = expect(
        cb.change_session("web-b", RS, "s-1", 0, &change).await,
        SUCCESS,
        "change on B",
    );
    assert_eq!(r.number("version"), Some(1));
    expect(
        ca.change_session("web-a", RS, "s-1", 0, &change).await,
        STALE_VERSION,
        "A with the version B replaced",
    );
    let got = expect(ca.get_session("web-a", RS, "s-1").await, SUCCESS, "get on A");
    assert_eq!(got.number("version"), Some(1));
    let mut merged = items.clone();
    merged.extend(change.iter().cloned());
    assert_eq!(got.data(), merged);

    // The concurrent-session limit counts sessions made through either shim.
    expect(
        cb.create_session("web-b", RS, "s-2", 1, &webseal_session("alice"))
            .await,
        LIMIT_REACHED,
        "alice's second session through B with limit 1",
    );

    expect(
        cb.terminate_session("web-b", RS, "s-1").await,
        SUCCESS,
        "terminate on B",
    );
    expect(
        ca.get_session("web-a", RS, "s-1").await,
        NOT_FOUND,
        "get on A after terminate",
    );
    expect(
        cb.get_session("web-b", RS, "s-1").await,
        NOT_FOUND,
        "get on B after terminate",
    );
    expect(
        ca.create_session("web-a", RS, "s-2", 1, &webseal_session("alice"))
            .await,
        SUCCESS,
        "alice's slot is free on A after B terminated",
    );
}

#[tokio::test]
async fn two_shims_share_keys_and_members() {
    let redis = RedisServer::start();
    let (a, b) = (shim_on(&redis, &[]), shim_on(&redis, &[]));
    let (ca, cb) = (a.client(), b.client());
    let ja = expect(
        ca.join_replica_set("web-a", "uuid-a:web-a", 15, RS).await,
        SUCCESS,
        "join on A",
    );
    let jb = expect(
        cb.join_replica_set("web-b", "uuid-b:web-b", 15, RS).await,
        SUCCESS,
        "join on B",
    );
    assert!(ja.text("currentKey").is_some_and(|k| k.len() >= 16), "{:?}", ja.ret);
    assert_eq!(ja.text("currentKey"), jb.text("currentKey"), "A and B hand out one key");
    assert_eq!(ja.number("currentKeyID"), jb.number("currentKeyID"));

    let info = expect(
        cb.execute("getReplicaSetInfo", &[("ReplicaSet", RS)]).await,
        SUCCESS,
        "getReplicaSetInfo on B",
    );
    assert_eq!(replicas(&info), set(&["web-a", "web-b"]), "{:?}", info.groups());

    // Membership rules hold across shims.
    expect(
        cb.join_replica_set("web-c", "uuid-c:web-c", 7, RS).await,
        CAPABILITY_MISMATCH,
        "another mask on B",
    );
    expect(
        cb.join_replica_set("web-d", "uuid-a:web-a", 15, RS).await,
        INSTANCE_TAKEN,
        "A's replica's instance on B",
    );

    expect(
        cb.replica_shutdown("web-a").await,
        SUCCESS,
        "web-a shuts down through B",
    );
    let info = expect(
        ca.execute("getReplicaSetInfo", &[("ReplicaSet", RS)]).await,
        SUCCESS,
        "getReplicaSetInfo on A",
    );
    assert_eq!(replicas(&info), set(&["web-b"]), "{:?}", info.groups());
}

#[tokio::test]
async fn a_rotation_on_one_shim_wakes_a_poll_on_the_other() {
    // Only A rotates: B's poll can only learn of it through Redis.
    let redis = RedisServer::start();
    let a = shim_on(&redis, &["--key-rotation", "2s"]);
    let b = shim_on(&redis, &[]);
    let joined = expect(
        a.client().join_replica_set("web-a", "uuid-a:web-a", 15, RS).await,
        SUCCESS,
        "join on A",
    );
    let started = Instant::now();
    let r = expect(
        b.client().get_updates("web-a", "uuid-a:web-a", Some(RS), 30).await,
        SUCCESS,
        "getUpdates on B",
    );
    let held = started.elapsed();
    assert!(held < Duration::from_secs(6), "B answered only after {held:?}");
    assert_ne!(r.number("newKeyID"), joined.number("currentKeyID"), "{:?}", r.ret);
    assert_ne!(r.text("newKey"), joined.text("currentKey"), "{:?}", r.ret);
    let again = expect(
        b.client().join_replica_set("web-b", "uuid-b:web-b", 15, RS).await,
        SUCCESS,
        "join on B",
    );
    assert!(again.number("currentKeyID") >= r.number("newKeyID"), "{:?}", again.ret);
}

#[tokio::test]
async fn both_shims_rotating_wake_polls_on_either() {
    let redis = RedisServer::start();
    let a = shim_on(&redis, &["--key-rotation", "2s"]);
    let b = shim_on(&redis, &["--key-rotation", "2s"]);
    let joined = expect(
        a.client().join_replica_set("web-a", "uuid-a:web-a", 15, RS).await,
        SUCCESS,
        "join on A",
    );
    let (ca, cb) = (a.client(), b.client());
    let started = Instant::now();
    let (on_a, on_b) = tokio::join!(
        ca.get_updates("web-a", "uuid-a:web-a", Some(RS), 30),
        cb.get_updates("web-a", "uuid-a:web-a", Some(RS), 30)
    );
    assert!(started.elapsed() < Duration::from_secs(6), "{:?}", started.elapsed());
    let (on_a, on_b) = (expect(on_a, SUCCESS, "poll on A"), expect(on_b, SUCCESS, "poll on B"));
    for r in [&on_a, &on_b] {
        assert_ne!(r.number("newKeyID"), joined.number("currentKeyID"), "{:?}", r.ret);
    }
    // One rotation for the cache, not one per shim: the key IDs advance by one per interval.
    let id0 = joined.number("currentKeyID").unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let later = expect(
        cb.join_replica_set("web-b", "uuid-b:web-b", 15, RS).await,
        SUCCESS,
        "join on B",
    );
    let rotations = later.number("currentKeyID").unwrap() - id0;
    let elapsed = started.elapsed().as_secs() as i64 + 1;
    assert!(
        (1..=elapsed / 2 + 1).contains(&rotations),
        "{rotations} rotations in about {elapsed} s with a 2 s interval"
    );
}

#[tokio::test]
async fn a_shim_restart_loses_nothing() {
    let redis = RedisServer::start();
    let mut first = shim_on(&redis, &[]);
    let c = first.client();
    let joined = expect(
        c.join_replica_set("web-a", "uuid-a:web-a", 15, RS).await,
        SUCCESS,
        "join",
    );
    let items = webseal_session("alice");
    expect(c.create_session("web-a", RS, "s-1", 0, &items).await, SUCCESS, "create");
    let change = [item("com.tivoli.am.webseal.lifetime-extended", "webseal", Some("true"))];
    expect(
        c.change_session("web-a", RS, "s-1", 0, &change).await,
        SUCCESS,
        "change",
    );
    let before = expect(c.get_session("web-a", RS, "s-1").await, SUCCESS, "get before");
    drop(c);
    let status = first
        .terminate(Duration::from_secs(10))
        .expect("the shim did not exit on SIGTERM");
    assert!(status.success(), "{status:?}");

    let second = shim_on(&redis, &[]);
    let c = second.client();
    let after = expect(
        c.get_session("web-a", RS, "s-1").await,
        SUCCESS,
        "get after the restart",
    );
    assert_eq!(after.number("version"), Some(1));
    assert_eq!(after.data(), before.data());
    let rejoined = expect(
        c.join_replica_set("web-a", "uuid-a:web-a", 15, RS).await,
        SUCCESS,
        "join",
    );
    assert_eq!(
        rejoined.text("currentKey"),
        joined.text("currentKey"),
        "the key outlives the shim"
    );
    let info = expect(
        c.execute("getReplicaSetInfo", &[("ReplicaSet", RS)]).await,
        SUCCESS,
        "getReplicaSetInfo",
    );
    assert_eq!(replicas(&info), set(&["web-a"]));
}

/// The HTTP status of a fault, or a panic naming what came instead.
fn fault_status(what: &str, r: Result<Reply, ClientError>) -> u16 {
    match r {
        Err(ClientError::Fault { status, .. }) => status,
        Err(e) => panic!("{what}: expected a SOAP fault, got {e}"),
        Ok(r) => panic!("{what}: expected a SOAP fault, got an answer {:?}", r.ret),
    }
}

#[tokio::test]
async fn a_redis_outage_is_a_fast_503_and_is_survived() {
    let mut redis = RedisServer::start();
    let mut shim = shim_on(&redis, &["--request-timeout", "1s"]);
    let c = shim.client();
    let items = webseal_session("alice");
    expect(c.create_session("web-a", RS, "s-1", 0, &items).await, SUCCESS, "create");
    assert_eq!(shim.http_get("/readyz").map(|r| r.0), Some(200));

    redis.stop();
    for (what, call) in [
        ("getSession", c.get_session("web-a", RS, "s-1").await),
        (
            "createSession",
            c.create_session("web-a", RS, "s-2", 0, &webseal_session("bob")).await,
        ),
    ] {
        assert_eq!(fault_status(what, call), 503, "{what} while Redis is down");
    }
    let started = Instant::now();
    let r = c.get_session("web-a", RS, "s-1").await;
    let took = started.elapsed();
    assert_eq!(fault_status("getSession", r), 503);
    assert!(
        took < Duration::from_secs(3),
        "the fault took {took:?} with --request-timeout 1s"
    );

    let started = Instant::now();
    let (status, body) = shim.http_get("/readyz").expect("GET /readyz");
    assert_eq!(status, 503, "/readyz while Redis is down: {body}");
    assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());
    assert_eq!(
        shim.http_get("/healthz").map(|r| r.0),
        Some(200),
        "the process itself is alive"
    );
    // A shim started during the outage starts, unready.
    let late = shim_on(&redis, &["--request-timeout", "1s"]);
    assert_eq!(late.http_get("/readyz").map(|r| r.0), Some(503));
    assert!(shim.is_running(), "the shim must survive the outage");

    redis.restart();
    let deadline = Instant::now() + Duration::from_secs(10);
    let found = loop {
        match c.get_session("web-a", RS, "s-1").await {
            Ok(r) if r.result() == SUCCESS => break r,
            other => {
                assert!(
                    Instant::now() < deadline,
                    "no success within 10 s of Redis coming back: {other:?}"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    assert_eq!(
        found.data(),
        items,
        "the session written before the outage survived (AOF)"
    );
    assert_eq!(shim.http_get("/readyz").map(|r| r.0), Some(200));
    let r = expect(
        late.client().get_session("web-b", RS, "s-1").await,
        SUCCESS,
        "the shim started during the outage serves once Redis is back",
    );
    assert_eq!(r.data(), items);
    expect(
        c.create_session("web-a", RS, "s-2", 0, &webseal_session("bob")).await,
        SUCCESS,
        "create after the outage",
    );
}

/// Creates a long-lived session `x-0` of `carol` (which keeps her index alive) and two that end
/// after 1 s (with `--clock-skew 0s`), waits until Redis dropped those on their TTL, and checks
/// that their keys are gone.
async fn sessions_that_ended(redis: &RedisServer, shim: &Shim) {
    let c = shim.client();
    start_of_second();
    expect(
        c.create_session("web-a", RS, "x-0", 0, &long_lived("carol")).await,
        SUCCESS,
        "x-0",
    );
    let short = vec![user("carol"), item(EXPIRY, "sms", Some(&format!("{:#x}", now() + 1)))];
    for id in ["x-1", "x-2"] {
        expect(c.create_session("web-a", RS, id, 0, &short).await, SUCCESS, id);
    }
    assert_eq!(index_of(redis, "carol"), set(&["x-0", "x-1", "x-2"]));
    tokio::time::sleep(Duration::from_millis(2500)).await;
    for id in ["x-1", "x-2"] {
        assert_eq!(
            redis.command(&format!("EXISTS {}", session_key(id))).as_deref(),
            Some(":0\r\n"),
            "{id} must have vanished on its TTL"
        );
    }
}

fn long_lived(name: &str) -> Vec<DataItem> {
    vec![user(name), item(EXPIRY, "sms", Some(&format!("{:#x}", now() + 3600)))]
}

#[tokio::test]
async fn the_user_index_keeps_only_live_sessions() {
    let redis = RedisServer::start();
    let shim = shim_on(&redis, &["--clock-skew", "0s"]);
    let c = shim.client();
    sessions_that_ended(&redis, &shim).await;
    // WebSEAL with max-concurrent-web-sessions set sends a limit.
    expect(
        c.create_session("web-a", RS, "x-4", 5, &long_lived("carol")).await,
        SUCCESS,
        "x-4",
    );
    assert_eq!(
        index_of(&redis, "carol"),
        set(&["x-0", "x-4"]),
        "after a create the index names only live sessions"
    );
    let ttl = pttl(&redis, &user_key("carol"));
    assert!(
        ttl > 0 && ttl <= 3600 * 1000,
        "the index expires with its sessions: PTTL {ttl}"
    );

    expect(
        c.create_session("web-a", RS, "x-5", 0, &long_lived("carol")).await,
        SUCCESS,
        "x-5",
    );
    expect(c.terminate_session("web-a", RS, "x-5").await, SUCCESS, "terminate x-5");
    assert_eq!(
        index_of(&redis, "carol"),
        set(&["x-0", "x-4"]),
        "terminate leaves the index"
    );
    expect(
        c.execute(
            "terminateAllSessions",
            &[("SessionDataValue", "carol"), ("ReplicaSet", RS)],
        )
        .await,
        SUCCESS,
        "terminateAllSessions carol",
    );
    assert!(
        index_of(&redis, "carol").is_empty(),
        "terminateAllSessions empties the index"
    );

    // A session whose user changes moves between indexes.
    expect(
        c.create_session("web-a", RS, "y-1", 0, &long_lived("dave")).await,
        SUCCESS,
        "y-1",
    );
    expect(
        c.change_session("web-a", RS, "y-1", 0, &[user("erin")]).await,
        SUCCESS,
        "y-1 becomes erin's",
    );
    assert!(index_of(&redis, "dave").is_empty(), "dave's index must not keep y-1");
    assert_eq!(index_of(&redis, "erin"), set(&["y-1"]));

    // Displacement removes what it ends.
    for id in ["z-1", "z-2", "z-3"] {
        expect(
            c.create_session("web-a", RS, id, -2, &long_lived("fay")).await,
            SUCCESS,
            id,
        );
    }
    assert_eq!(index_of(&redis, "fay"), set(&["z-2", "z-3"]));
    assert_eq!(
        redis.command(&format!("EXISTS {}", session_key("z-1"))).as_deref(),
        Some(":0\r\n")
    );
}

#[tokio::test]
async fn a_create_without_a_limit_also_prunes_the_user_index() {
    let redis = RedisServer::start();
    let shim = shim_on(&redis, &["--clock-skew", "0s"]);
    sessions_that_ended(&redis, &shim).await;
    // WebSEAL's default max-concurrent-web-sessions (unset) sends limit 0.
    expect(
        shim.client()
            .create_session("web-a", RS, "x-4", 0, &long_lived("carol"))
            .await,
        SUCCESS,
        "x-4",
    );
    assert_eq!(
        index_of(&redis, "carol"),
        set(&["x-0", "x-4"]),
        "after a create the index names only live sessions"
    );
}

#[tokio::test]
async fn a_shorter_max_lifetime_on_one_shim_keeps_the_others_sessions_indexed() {
    let redis = RedisServer::start();
    let long = shim_on(&redis, &[]);
    let short = shim_on(&redis, &["--max-lifetime", "1m", "--clock-skew", "0s"]);
    expect(
        long.client()
            .create_session("web-a", RS, "old", 0, &webseal_session("alice"))
            .await,
        SUCCESS,
        "create through the 24 h shim",
    );
    // Age it by two minutes as Redis would hold it (its creation time); it is alive: 24 h
    // lifetime, 600 s inactivity, just read.
    let two_minutes_ago = now() - 120;
    redis.command(&format!("HSET {} c {two_minutes_ago}", session_key("old")));
    expect(
        long.client().get_session("web-a", RS, "old").await,
        SUCCESS,
        "old is alive",
    );
    expect(
        short
            .client()
            .create_session("web-b", RS, "new", 0, &webseal_session("alice"))
            .await,
        SUCCESS,
        "create through the 1 min shim",
    );
    assert_eq!(
        index_of(&redis, "alice"),
        set(&["old", "new"]),
        "a live session lost its index entry"
    );
    expect(
        long.client()
            .create_session("web-a", RS, "third", 2, &webseal_session("alice"))
            .await,
        LIMIT_REACHED,
        "alice has two live sessions: limit 2 must refuse a third",
    );
}

#[tokio::test]
async fn sessions_carry_a_ttl_no_longer_than_their_life() {
    let redis = RedisServer::start();
    // Default skew (3 min): inactivity 600 s + 180 s is earlier than expiry 3600 s + 180 s.
    let shim = shim_on(&redis, &[]);
    let c = shim.client();
    expect(
        c.create_session("web-a", RS, "idle", 0, &webseal_session("alice"))
            .await,
        SUCCESS,
        "create",
    );
    let ttl = pttl(&redis, &session_key("idle"));
    assert!(
        (775_000..=780_000).contains(&ttl),
        "PTTL {ttl}, expected just under 780 s"
    );
    expect(c.get_session("web-a", RS, "idle").await, SUCCESS, "get");
    let ttl = pttl(&redis, &session_key("idle"));
    assert!((775_000..=780_000).contains(&ttl), "PTTL {ttl} after a read");

    // An expiry item alone (no inactivity timeout): its lifetime plus skew.
    let expiry = [user("bob"), item(EXPIRY, "sms", Some(&format!("{:#x}", now() + 100)))];
    expect(
        c.create_session("web-a", RS, "lifetime", 0, &expiry).await,
        SUCCESS,
        "create",
    );
    let ttl = pttl(&redis, &session_key("lifetime"));
    assert!((270_000..=280_000).contains(&ttl), "PTTL {ttl}, expected about 280 s");

    // --max-lifetime 1m caps a far expiry, and a session with no expiry at all.
    let capped = shim_on(&redis, &["--max-lifetime", "1m", "--clock-skew", "0s"]);
    let c = capped.client();
    let far = [
        user("carol"),
        item(EXPIRY, "sms", Some(&format!("{:#x}", now() + 30 * 86400))),
    ];
    expect(
        c.create_session("web-a", RS, "far", 0, &far).await,
        SUCCESS,
        "create far",
    );
    expect(
        c.create_session("web-a", RS, "none", 0, &[user("dave")]).await,
        SUCCESS,
        "create none",
    );
    for id in ["far", "none"] {
        let ttl = pttl(&redis, &session_key(id));
        assert!(ttl > 0 && ttl <= 60_000, "{id}: PTTL {ttl}, expected at most 60 s");
    }
}

/// Lifetime items at the ends of the integer range are clamped into the session's bounds:
/// the shim answers each create, overflows nothing, and the TTLs stay sane.
#[tokio::test]
async fn lifetime_items_at_the_ends_of_the_integer_range_are_clamped() {
    let redis = RedisServer::start();
    let mut shim = shim_on(&redis, &["--max-lifetime", "1h", "--clock-skew", "1m"]);
    let c = shim.client();
    let timeout = "com.tivoli.am.webseal.inactivity-timeout";
    let cases: [(&str, DataItem); 4] = [
        ("past", item(EXPIRY, "sms", Some("-0x7fffffffffffffff"))),
        ("future", item(EXPIRY, "sms", Some("0x7fffffffffffffff"))),
        ("idle-forever", item(timeout, "webseal", Some("0x7fffffffffffffff"))),
        ("idle-negative", item(timeout, "webseal", Some("-0x7fffffffffffffff"))),
    ];
    for (id, hostile) in &cases {
        expect(
            c.create_session("web-a", RS, id, 0, &[user(id), hostile.clone()]).await,
            SUCCESS,
            &format!("create {id}"),
        );
    }
    // An expiry long past counts as the creation: the session lives out the 1m skew.
    expect(c.get_session("web-a", RS, "past").await, SUCCESS, "get past");
    let ttl = pttl(&redis, &session_key("past"));
    assert!(
        (55_000..=60_000).contains(&ttl),
        "past: PTTL {ttl}, expected the 1m skew"
    );
    // The others live at most the 1h cap plus the skew.
    for id in ["future", "idle-forever", "idle-negative"] {
        expect(c.get_session("web-a", RS, id).await, SUCCESS, &format!("get {id}"));
        let ttl = pttl(&redis, &session_key(id));
        assert!(
            (3_600_000..=3_660_000).contains(&ttl),
            "{id}: PTTL {ttl}, expected the 1h cap plus the 1m skew"
        );
    }
    assert!(shim.is_running(), "the shim exited:\n{}", shim.logs());
}

/// The shim reports Redis as it sees it (`redsess_shim_redis_*`, which the chart's alerts
/// read): a primary, its streaming replicas, its memory and bound; and no primary once Redis
/// is gone.
#[tokio::test]
async fn the_shim_reports_the_health_of_redis() {
    let mut primary = RedisServer::start_with(&["--maxmemory", "64mb"]);
    let replica = RedisServer::start_with(&["--replicaof", "127.0.0.1", &primary.port.to_string()]);
    let shim = shim_on(&primary, &[]);
    redsess_tests::wait_until(
        Duration::from_secs(20),
        "the shim sees a primary with one replica",
        || shim.metric("redsess_shim_redis_up") == 1 && shim.metric("redsess_shim_redis_connected_replicas") == 1,
    );
    assert_eq!(shim.metric("redsess_shim_redis_max_memory_bytes"), 64 * 1024 * 1024);
    assert!(shim.metric("redsess_shim_redis_used_memory_bytes") > 0);
    drop(replica);
    primary.stop();
    redsess_tests::wait_until(Duration::from_secs(25), "the shim reports no primary", || {
        shim.metric("redsess_shim_redis_up") == 0
    });
}
