//! One behavioural suite, run against both stores: the embedded memory store and a real
//! `redis-server` started on a free port. Every behaviour the session rules rely on is here.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use redsess_shim::dsc::DataItem;
use redsess_shim::store::memory::MemoryStore;
use redsess_shim::store::redis::{RedisSettings, RedisStore};
use redsess_shim::store::sealing::{new_key_line, Mode};
use redsess_shim::store::{
    CreateOutcome, JoinOutcome, Lifetime, Member, ReplaceOutcome, Session, SessionLimit, Store, StoreError,
};
use redsess_tests::{item, now, RedisServer};

/// A store under test; holds the Redis server (if any) alive for the test's duration.
struct Subject {
    store: Arc<dyn Store>,
    _redis: Option<RedisServer>,
}

fn memory() -> Subject {
    Subject {
        store: Arc::new(MemoryStore::new()),
        _redis: None,
    }
}

fn redis_store(redis: &RedisServer, prefix: &str) -> Arc<RedisStore> {
    redis_store_with(redis, prefix, Mode::Plain, None)
}

fn redis_store_with(redis: &RedisServer, prefix: &str, mode: Mode, keys: Option<PathBuf>) -> Arc<RedisStore> {
    let store = Arc::new(
        RedisStore::new(RedisSettings {
            url: redis.url(),
            password: None,
            key_prefix: prefix.into(),
            sentinels: vec![],
            sentinel_primary: "redsess".into(),
            sentinel_auth: None,
            sentinel_tls: false,
            tls_ca: None,
            record_encryption: mode,
            record_keys_file: keys,
            record_keys_check: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(2),
            response_timeout: Duration::from_secs(2),
        })
        .expect("redis store"),
    );
    store.spawn_rotation_listener();
    store
}

fn redis() -> Subject {
    let server = RedisServer::start();
    Subject {
        store: redis_store(&server, "test:"),
        _redis: Some(server),
    }
}

/// Redis with every record sealed: the rules must not notice.
fn redis_sealed() -> Subject {
    let server = RedisServer::start();
    let keys = server.dir().join("record-keys");
    std::fs::write(&keys, format!("{}\n", new_key_line(Some("suite")))).unwrap();
    Subject {
        store: redis_store_with(&server, "test:", Mode::Sealed, Some(keys)),
        _redis: Some(server),
    }
}

const NO_LIMIT: SessionLimit = SessionLimit {
    max: 0,
    displace: false,
};

fn session(user: Option<&str>, items: Vec<DataItem>, lifetime_secs: i64, idle_secs: i64) -> Session {
    let t = now();
    Session {
        version: 0,
        items,
        lifetime: Lifetime {
            ends_at: t + lifetime_secs,
            idle_secs,
        },
        touched: t,
        created: t,
        user: user.map(Into::into),
    }
}

fn items() -> Vec<DataItem> {
    vec![
        item("com.tivoli.am.eb.credential", "sms", Some(&"Q".repeat(1500))),
        item("nil", "webseal", None),
        item("empty", "webseal", Some("")),
        item("text", "sms", Some("a <b> & \"c\" é")),
    ]
}

async fn created(store: &dyn Store, id: &str, s: &Session, limit: &SessionLimit) -> CreateOutcome {
    store.create_session("default", id, s, limit, now()).await.unwrap()
}

async fn create_then_get_round_trips(store: Arc<dyn Store>) {
    let s = session(Some("alice"), items(), 3600, 600);
    assert_eq!(
        created(&*store, "S1", &s, &NO_LIMIT).await,
        CreateOutcome::Created { displaced: vec![] }
    );
    let got = store.get_session("default", "S1", true, now()).await.unwrap().unwrap();
    assert_eq!(got.items, s.items);
    assert_eq!(got.version, 0);
    assert_eq!(got.user.as_deref(), Some("alice"));
    assert_eq!(got.lifetime, s.lifetime);
    assert_eq!(created(&*store, "S1", &s, &NO_LIMIT).await, CreateOutcome::IdInUse);
    assert!(store
        .get_session("default", "nope", true, now())
        .await
        .unwrap()
        .is_none());
    // Replica sets partition sessions.
    assert!(store.get_session("other", "S1", true, now()).await.unwrap().is_none());
}

async fn replace_checks_the_version(store: Arc<dyn Store>) {
    let s = session(Some("alice"), items(), 3600, 600);
    created(&*store, "S1", &s, &NO_LIMIT).await;
    let mut next = s.clone();
    next.version = 1;
    next.items.push(item("added", "sms", Some("1")));
    let outcome = store
        .replace_session("default", "S1", 0, Some("alice"), &next)
        .await
        .unwrap();
    assert_eq!(outcome, ReplaceOutcome::Replaced);
    let stale = store
        .replace_session("default", "S1", 0, Some("alice"), &next)
        .await
        .unwrap();
    assert_eq!(stale, ReplaceOutcome::VersionMismatch { stored: 1 });
    let missing = store.replace_session("default", "S9", 0, None, &next).await.unwrap();
    assert_eq!(missing, ReplaceOutcome::NotFound);
    let got = store.get_session("default", "S1", false, now()).await.unwrap().unwrap();
    assert_eq!((got.version, got.items.len()), (1, 5));
}

async fn replace_moves_the_user_index(store: Arc<dyn Store>) {
    let s = session(Some("alice"), items(), 3600, 600);
    created(&*store, "S1", &s, &NO_LIMIT).await;
    let mut next = s.clone();
    next.version = 1;
    next.user = Some("bob".into());
    store
        .replace_session("default", "S1", 0, Some("alice"), &next)
        .await
        .unwrap();
    assert!(store.user_sessions("default", "alice").await.unwrap().is_empty());
    assert_eq!(store.user_sessions("default", "bob").await.unwrap(), ["S1"]);
}

async fn delete_removes_session_and_index_entry(store: Arc<dyn Store>) {
    let s = session(Some("alice"), items(), 3600, 600);
    created(&*store, "S1", &s, &NO_LIMIT).await;
    created(&*store, "S2", &s, &NO_LIMIT).await;
    assert_eq!(store.user_sessions("default", "alice").await.unwrap(), ["S1", "S2"]);
    assert!(store.delete_session("default", "S1").await.unwrap());
    assert!(!store.delete_session("default", "S1").await.unwrap());
    assert_eq!(store.user_sessions("default", "alice").await.unwrap(), ["S2"]);
    assert!(store.get_session("default", "S1", true, now()).await.unwrap().is_none());
}

async fn limit_refuses_past_the_maximum(store: Arc<dyn Store>) {
    let limit = SessionLimit {
        max: 2,
        displace: false,
    };
    let s = session(Some("alice"), items(), 3600, 600);
    for id in ["A", "B"] {
        assert!(matches!(
            created(&*store, id, &s, &limit).await,
            CreateOutcome::Created { .. }
        ));
    }
    assert_eq!(created(&*store, "C", &s, &limit).await, CreateOutcome::LimitReached);
    assert!(store.get_session("default", "C", false, now()).await.unwrap().is_none());
    // Another user is not affected.
    let bob = session(Some("bob"), items(), 3600, 600);
    assert!(matches!(
        created(&*store, "D", &bob, &limit).await,
        CreateOutcome::Created { .. }
    ));
}

async fn limit_displaces_the_oldest(store: Arc<dyn Store>) {
    let limit = SessionLimit { max: 2, displace: true };
    let s = session(Some("alice"), items(), 3600, 600);
    // Names in reverse order, so that only creation time can put "Z" first.
    for id in ["Z", "Y"] {
        created(&*store, id, &s, &limit).await;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(
        created(&*store, "X", &s, &limit).await,
        CreateOutcome::Created {
            displaced: vec!["Z".into()]
        }
    );
    assert!(store.get_session("default", "Z", false, now()).await.unwrap().is_none());
    assert_eq!(store.user_sessions("default", "alice").await.unwrap(), ["Y", "X"]);
}

async fn sessions_expire_at_their_lifetime_end(store: Arc<dyn Store>) {
    let s = session(Some("alice"), items(), 1, 0);
    created(&*store, "short", &s, &NO_LIMIT).await;
    let long = session(Some("alice"), items(), 3600, 0);
    created(&*store, "long", &long, &NO_LIMIT).await;
    assert!(store
        .get_session("default", "short", false, now())
        .await
        .unwrap()
        .is_some());
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert!(store
        .get_session("default", "short", true, now())
        .await
        .unwrap()
        .is_none());
    assert!(store
        .get_session("default", "long", true, now())
        .await
        .unwrap()
        .is_some());
    assert_eq!(store.user_sessions("default", "alice").await.unwrap(), ["long"]);
}

async fn activity_extends_an_idle_timeout(store: Arc<dyn Store>) {
    // Times are whole seconds, so a 3 s timeout touched every second keeps a margin of at
    // least one second however the touches fall within a second.
    let s = session(None, items(), 3600, 3);
    created(&*store, "idle", &s, &NO_LIMIT).await;
    created(&*store, "busy", &s, &NO_LIMIT).await;
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(1000)).await;
        assert!(store
            .get_session("default", "busy", true, now())
            .await
            .unwrap()
            .is_some());
    }
    assert!(store
        .get_session("default", "idle", true, now())
        .await
        .unwrap()
        .is_none());
    let busy = store
        .get_session("default", "busy", false, now())
        .await
        .unwrap()
        .unwrap();
    assert!(now() - busy.touched <= 1, "touch recorded");
}

async fn ended_sessions_leave_no_index_entries_behind(store: Arc<dyn Store>) {
    let limit = SessionLimit {
        max: 1,
        displace: false,
    };
    let short = session(Some("carol"), items(), 1, 0);
    created(&*store, "old", &short, &limit).await;
    tokio::time::sleep(Duration::from_millis(2100)).await;
    // The expired session does not count against the limit, and the index forgets it.
    let fresh = session(Some("carol"), items(), 3600, 0);
    assert!(matches!(
        created(&*store, "new", &fresh, &limit).await,
        CreateOutcome::Created { .. }
    ));
    assert_eq!(store.user_sessions("default", "carol").await.unwrap(), ["new"]);
}

async fn a_create_without_a_limit_drops_ended_entries(store: Arc<dyn Store>) {
    let short = session(Some("dave"), items(), 1, 0);
    created(&*store, "short", &short, &NO_LIMIT).await;
    let idle = session(Some("dave"), items(), 3600, 1);
    created(&*store, "idle", &idle, &NO_LIMIT).await;
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let long = session(Some("dave"), items(), 3600, 0);
    created(&*store, "late", &long, &NO_LIMIT).await;
    assert_eq!(store.user_sessions("default", "dave").await.unwrap(), ["late"]);
}

async fn all_sessions_lists_one_replica_set(store: Arc<dyn Store>) {
    let s = session(Some("alice"), items(), 3600, 0);
    created(&*store, "A", &s, &NO_LIMIT).await;
    created(&*store, "B", &s, &NO_LIMIT).await;
    store.create_session("other", "C", &s, &NO_LIMIT, now()).await.unwrap();
    let ids: Vec<String> = store
        .all_sessions("default")
        .await
        .unwrap()
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    assert_eq!(ids, ["A", "B"]);
}

fn member(replica: &str, instance: &str, at: i64) -> Member {
    Member {
        replica: replica.into(),
        instance: instance.into(),
        joined: at,
        last_seen: at,
    }
}

async fn membership_rules(store: Arc<dyn Store>) {
    let t = now();
    let stale_before = t - 600;
    let join = |m: Member, caps: u64| {
        let store = store.clone();
        async move { store.join("default", &m, caps, stale_before).await.unwrap() }
    };
    assert_eq!(join(member("web1", "u1:web1", t), 15).await, JoinOutcome::Joined);
    assert_eq!(
        join(member("web2", "u2:web2", t), 7).await,
        JoinOutcome::CapabilityMismatch { expected: 15 }
    );
    assert_eq!(
        join(member("web2", "u1:web1", t), 15).await,
        JoinOutcome::InstanceOwnedBy { replica: "web1".into() }
    );
    assert_eq!(join(member("web2", "u2:web2", t), 15).await, JoinOutcome::Joined);
    // A rejoin by the same replica with a new instance ID is fine.
    assert_eq!(join(member("web1", "u3:web1", t), 15).await, JoinOutcome::Joined);
    let names: Vec<String> = store
        .members("default", stale_before)
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.replica)
        .collect();
    assert_eq!(names, ["web1", "web2"]);
    assert!(store.heartbeat("default", "web1", t + 5).await.unwrap());
    assert!(!store.heartbeat("default", "ghost", t + 5).await.unwrap());
    let web1 = store
        .members("default", stale_before)
        .await
        .unwrap()
        .into_iter()
        .find(|m| m.replica == "web1")
        .unwrap();
    assert_eq!((web1.instance.as_str(), web1.last_seen), ("u3:web1", t + 5));
    // web2 was last seen at t: it leaves once t is too long ago.
    let names: Vec<String> = store
        .members("default", t + 1)
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.replica)
        .collect();
    assert_eq!(names, ["web1"]);
    assert_eq!(store.leave("web1").await.unwrap(), ["default"]);
    assert!(store.members("default", stale_before).await.unwrap().is_empty());
    // With every member gone, a new capability mask starts the set afresh.
    assert_eq!(join(member("web3", "u4:web3", t), 7).await, JoinOutcome::Joined);
    assert_eq!(store.replica_sets().await.unwrap(), ["default"]);
}

async fn key_material_is_shared_and_rotates_once(store: Arc<dyn Store>) {
    let t = now();
    let mut rotations = store.rotations();
    let first = store
        .key_material("default", "candidate-one-xxxxxxxx", t)
        .await
        .unwrap();
    assert_eq!(first.current, "candidate-one-xxxxxxxx");
    let again = store
        .key_material("default", "candidate-two-xxxxxxxx", t)
        .await
        .unwrap();
    assert_eq!(again, first, "the first key stays");
    assert!(store.rotate_key("default", "k3", t + 5, 10).await.unwrap().is_none());
    let rotated = store.rotate_key("default", "k4", t + 10, 10).await.unwrap().unwrap();
    assert_eq!(
        (
            rotated.current.as_str(),
            rotated.current_id,
            rotated.previous.as_str(),
            rotated.previous_id
        ),
        ("k4", 1, "candidate-one-xxxxxxxx", 0)
    );
    // A second shim racing for the same rotation loses.
    assert!(store.rotate_key("default", "k5", t + 10, 10).await.unwrap().is_none());
    let heard = tokio::time::timeout(Duration::from_secs(3), async {
        loop {
            if let Ok(Some(set)) = rotations.recv().await {
                return set;
            }
        }
    })
    .await
    .expect("the rotation is announced");
    assert_eq!(heard, "default");
}

macro_rules! store_suite {
    ($($name:ident),* $(,)?) => {
        mod memory_store {
            $(#[tokio::test] async fn $name() { super::$name(super::memory().store).await })*
        }
        mod redis_store {
            $(#[tokio::test] async fn $name() {
                let subject = super::redis();
                super::$name(subject.store.clone()).await
            })*
        }
        mod sealed_redis_store {
            $(#[tokio::test] async fn $name() {
                let subject = super::redis_sealed();
                super::$name(subject.store.clone()).await
            })*
        }
    };
}

store_suite!(
    create_then_get_round_trips,
    replace_checks_the_version,
    replace_moves_the_user_index,
    delete_removes_session_and_index_entry,
    limit_refuses_past_the_maximum,
    limit_displaces_the_oldest,
    sessions_expire_at_their_lifetime_end,
    activity_extends_an_idle_timeout,
    ended_sessions_leave_no_index_entries_behind,
    a_create_without_a_limit_drops_ended_entries,
    all_sessions_lists_one_replica_set,
    membership_rules,
    key_material_is_shared_and_rotates_once,
);

#[tokio::test]
async fn two_redis_stores_share_sessions_keys_and_rotations() {
    let server = RedisServer::start();
    let a = redis_store(&server, "shared:");
    let b = redis_store(&server, "shared:");
    let s = session(Some("alice"), items(), 3600, 0);
    a.create_session("default", "S", &s, &NO_LIMIT, now()).await.unwrap();
    assert_eq!(
        b.get_session("default", "S", true, now()).await.unwrap().unwrap().items,
        s.items
    );
    let ka = a.key_material("default", "key-from-a", now()).await.unwrap();
    let kb = b.key_material("default", "key-from-b", now()).await.unwrap();
    assert_eq!(ka, kb);
    // Give both subscriptions time to be in place, then rotate through A and hear it on B.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut heard_on_b = b.rotations();
    a.rotate_key("default", "rotated", now() + 1, 0).await.unwrap().unwrap();
    let heard = tokio::time::timeout(Duration::from_secs(3), async {
        loop {
            if let Ok(Some(set)) = heard_on_b.recv().await {
                return set;
            }
        }
    })
    .await
    .expect("B hears A's rotation");
    assert_eq!(heard, "default");
    // A different key prefix is a different cache on the same Redis.
    let c = redis_store(&server, "other:");
    assert!(c.get_session("default", "S", true, now()).await.unwrap().is_none());
}

#[tokio::test]
async fn a_redis_that_is_down_is_an_error_not_a_hang() {
    let mut server = RedisServer::start();
    let store = redis_store(&server, "down:");
    store.ping().await.unwrap();
    server.stop();
    let started = std::time::Instant::now();
    let err = store.get_session("default", "S", true, now()).await.unwrap_err();
    assert!(matches!(err, StoreError::Unavailable(_)), "{err}");
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
    server.restart();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while store.ping().await.is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "the store reconnects after Redis returns"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_redis_store_starts_while_redis_is_down() {
    let port = redsess_tests::free_port();
    let store = RedisStore::new(RedisSettings {
        url: format!("redis://127.0.0.1:{port}"),
        password: None,
        key_prefix: "late:".into(),
        sentinels: vec![],
        sentinel_primary: "redsess".into(),
        sentinel_auth: None,
        sentinel_tls: false,
        tls_ca: None,
        record_encryption: redsess_shim::store::sealing::Mode::Plain,
        record_keys_file: None,
        record_keys_check: Duration::from_secs(10),
        connect_timeout: Duration::from_millis(500),
        response_timeout: Duration::from_millis(500),
    })
    .unwrap();
    assert!(store.ping().await.is_err());
}
