//! One behavioural suite, run against both stores: the embedded memory store and a real
//! `redis-server` started on a free port. Every behaviour the session rules rely on is here.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use redsess_shim::dsc::{AnswerItems, DataItem, Response, ResultCode};
use redsess_shim::items::class;
use redsess_shim::store::memory::MemoryStore;
use redsess_shim::store::redis::{RedisSettings, RedisStore};
use redsess_shim::store::sealing::{new_key_line, Mode};
use redsess_shim::store::{
    CreateOutcome, ItemUpdate, JoinOutcome, Lifetime, Member, ReplaceOutcome, Replacement, Session, SessionLimit,
    Store, StoreError, Touch, UpdateOutcome,
};
use redsess_tests::{item, now, redis_cli, RedisServer};

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
            wait_replicas: 0,
            wait_timeout: Duration::from_secs(1),
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
        incarnation: next_incarnation(),
        creator: "web".into(),
    }
}

/// Each test session is a new one (the shim draws them at random).
fn next_incarnation() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// The change of `s` (read at `version`) to `next`, with no limit.
fn change(version: u64, previous_user: Option<&str>, next: &Session) -> Replacement {
    change_limited(version, previous_user, next, NO_LIMIT)
}

fn change_limited(version: u64, previous_user: Option<&str>, next: &Session, limit: SessionLimit) -> Replacement {
    Replacement {
        expected_version: version,
        previous_user: previous_user.map(Into::into),
        session: next.clone(),
        limit,
        now: now(),
    }
}

async fn users_sessions(store: &dyn Store, user: &str) -> Vec<String> {
    store.user_sessions("default", user, now()).await.unwrap()
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
    let got = store
        .get_session("default", "S1", Touch::ALWAYS, now())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.items, s.items);
    assert_eq!(got.version, 0);
    assert_eq!(got.user.as_deref(), Some("alice"));
    assert_eq!(got.lifetime, s.lifetime);
    assert_eq!(created(&*store, "S1", &s, &NO_LIMIT).await, CreateOutcome::IdInUse);
    assert!(store
        .get_session("default", "nope", Touch::ALWAYS, now())
        .await
        .unwrap()
        .is_none());
    // Replica sets partition sessions.
    assert!(store
        .get_session("other", "S1", Touch::ALWAYS, now())
        .await
        .unwrap()
        .is_none());
}

async fn replace_checks_the_version(store: Arc<dyn Store>) {
    let s = session(Some("alice"), items(), 3600, 600);
    created(&*store, "S1", &s, &NO_LIMIT).await;
    let mut next = s.clone();
    next.version = 1;
    next.items.push(item("added", "sms", Some("1")));
    let outcome = store
        .replace_session("default", "S1", &change(0, Some("alice"), &next))
        .await
        .unwrap();
    assert_eq!(outcome, ReplaceOutcome::Replaced { displaced: vec![] });
    let stale = store
        .replace_session("default", "S1", &change(0, Some("alice"), &next))
        .await
        .unwrap();
    assert_eq!(stale, ReplaceOutcome::VersionMismatch { stored: 1 });
    let missing = store
        .replace_session("default", "S9", &change(0, None, &next))
        .await
        .unwrap();
    assert_eq!(missing, ReplaceOutcome::NotFound);
    let got = store
        .get_session("default", "S1", Touch::No, now())
        .await
        .unwrap()
        .unwrap();
    assert_eq!((got.version, got.items.len()), (1, 5));
}

async fn replace_moves_the_user_index(store: Arc<dyn Store>) {
    let s = session(Some("alice"), items(), 3600, 600);
    created(&*store, "S1", &s, &NO_LIMIT).await;
    let mut next = s.clone();
    next.version = 1;
    next.user = Some("bob".into());
    store
        .replace_session("default", "S1", &change(0, Some("alice"), &next))
        .await
        .unwrap();
    assert!(users_sessions(&*store, "alice").await.is_empty());
    assert_eq!(users_sessions(&*store, "bob").await, ["S1"]);
}

async fn delete_removes_session_and_index_entry(store: Arc<dyn Store>) {
    let s = session(Some("alice"), items(), 3600, 600);
    created(&*store, "S1", &s, &NO_LIMIT).await;
    created(&*store, "S2", &s, &NO_LIMIT).await;
    assert_eq!(users_sessions(&*store, "alice").await, ["S1", "S2"]);
    assert!(store.delete_session("default", "S1").await.unwrap());
    assert!(!store.delete_session("default", "S1").await.unwrap());
    assert_eq!(users_sessions(&*store, "alice").await, ["S2"]);
    assert!(store
        .get_session("default", "S1", Touch::ALWAYS, now())
        .await
        .unwrap()
        .is_none());
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
    assert!(store
        .get_session("default", "C", Touch::No, now())
        .await
        .unwrap()
        .is_none());
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
    assert!(store
        .get_session("default", "Z", Touch::No, now())
        .await
        .unwrap()
        .is_none());
    assert_eq!(users_sessions(&*store, "alice").await, ["Y", "X"]);
}

async fn sessions_expire_at_their_lifetime_end(store: Arc<dyn Store>) {
    // Two seconds, not one: times are whole seconds, and a loaded machine can pass a second's
    // end between the create and the first read.
    let s = session(Some("alice"), items(), 2, 0);
    created(&*store, "short", &s, &NO_LIMIT).await;
    let long = session(Some("alice"), items(), 3600, 0);
    created(&*store, "long", &long, &NO_LIMIT).await;
    assert!(store
        .get_session("default", "short", Touch::No, now())
        .await
        .unwrap()
        .is_some());
    tokio::time::sleep(Duration::from_millis(3100)).await;
    assert!(store
        .get_session("default", "short", Touch::ALWAYS, now())
        .await
        .unwrap()
        .is_none());
    assert!(store
        .get_session("default", "long", Touch::ALWAYS, now())
        .await
        .unwrap()
        .is_some());
    assert_eq!(users_sessions(&*store, "alice").await, ["long"]);
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
            .get_session("default", "busy", Touch::ALWAYS, now())
            .await
            .unwrap()
            .is_some());
    }
    assert!(store
        .get_session("default", "idle", Touch::ALWAYS, now())
        .await
        .unwrap()
        .is_none());
    let busy = store
        .get_session("default", "busy", Touch::No, now())
        .await
        .unwrap()
        .unwrap();
    assert!(now() - busy.touched <= 1, "touch recorded");
}

/// getSession's touch (`Touch::UnlessWithin`) records activity only once the last recorded
/// is that old; a plain look (`Touch::No`) never does, and `Touch::ALWAYS` always does.
async fn a_read_touches_only_past_its_granularity(store: Arc<dyn Store>) {
    let s = session(None, items(), 3600, 600);
    let t0 = s.touched;
    created(&*store, "coarse", &s, &NO_LIMIT).await;
    let touched = |at: i64| {
        let store = store.clone();
        async move {
            let found = store.get_session("default", "coarse", Touch::No, at).await.unwrap();
            found.expect("the session is live").touched
        }
    };
    let read = |touch: Touch, at: i64| {
        let store = store.clone();
        async move {
            assert!(store
                .get_session("default", "coarse", touch, at)
                .await
                .unwrap()
                .is_some())
        }
    };
    read(Touch::UnlessWithin(45), t0 + 44).await;
    assert_eq!(
        touched(t0 + 44).await,
        t0,
        "a read within the granularity records nothing"
    );
    read(Touch::UnlessWithin(45), t0 + 45).await;
    assert_eq!(touched(t0 + 45).await, t0 + 45, "a read past it records activity");
    read(Touch::No, t0 + 50).await;
    assert_eq!(touched(t0 + 50).await, t0 + 45);
    read(Touch::ALWAYS, t0 + 51).await;
    assert_eq!(touched(t0 + 51).await, t0 + 51);
    // The idle end follows the recorded activity: 600 s after t0 + 51, not after t0.
    assert!(store
        .get_session("default", "coarse", Touch::No, t0 + 640)
        .await
        .unwrap()
        .is_some());
    assert!(store
        .get_session("default", "coarse", Touch::No, t0 + 651)
        .await
        .unwrap()
        .is_none());
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
    assert_eq!(users_sessions(&*store, "carol").await, ["new"]);
}

async fn a_create_without_a_limit_drops_ended_entries(store: Arc<dyn Store>) {
    let short = session(Some("dave"), items(), 1, 0);
    created(&*store, "short", &short, &NO_LIMIT).await;
    let idle = session(Some("dave"), items(), 3600, 1);
    created(&*store, "idle", &idle, &NO_LIMIT).await;
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let long = session(Some("dave"), items(), 3600, 0);
    created(&*store, "late", &long, &NO_LIMIT).await;
    assert_eq!(users_sessions(&*store, "dave").await, ["late"]);
}

async fn scan_sessions_walks_one_replica_set(store: Arc<dyn Store>) {
    let s = session(Some("alice"), items(), 3600, 0);
    created(&*store, "A", &s, &NO_LIMIT).await;
    created(&*store, "B", &s, &NO_LIMIT).await;
    store.create_session("other", "C", &s, &NO_LIMIT, now()).await.unwrap();
    let mut ids = Vec::new();
    store
        .scan_sessions("default", now(), &mut |id, session| {
            assert_eq!(session.items, s.items);
            ids.push(id.to_string());
        })
        .await
        .unwrap();
    ids.sort();
    assert_eq!(ids, ["A", "B"]);
}

async fn scan_users_walks_the_index_by_pattern(store: Arc<dyn Store>) {
    for (id, user) in [
        ("A1", "alice"),
        ("A2", "alice"),
        ("B1", "albert"),
        ("C1", "bob"),
        ("D1", "a*b?[c]"),
    ] {
        created(&*store, id, &session(Some(user), items(), 3600, 0), &NO_LIMIT).await;
    }
    store
        .create_session(
            "other",
            "X",
            &session(Some("alfred"), items(), 3600, 0),
            &NO_LIMIT,
            now(),
        )
        .await
        .unwrap();
    let walk = |pattern: &'static str| {
        let store = store.clone();
        async move {
            let mut found = Vec::new();
            store
                .scan_users("default", pattern, now(), &mut |user, ids| {
                    found.push(format!("{user}={}", ids.join(",")));
                })
                .await
                .unwrap();
            found.sort();
            found
        }
    };
    assert_eq!(walk("al*").await, ["albert=B1", "alice=A1,A2"]);
    assert_eq!(walk("*").await.len(), 4);
    // Only `*` is a wildcard: the other glob characters of a name are themselves.
    assert_eq!(walk("a*b?[c]").await, ["a*b?[c]=D1"]);
    assert!(walk("a?ice").await.is_empty());
}

/// A store must not show a session past its end, whether or not it has dropped it yet (the
/// memory store's sweep has not run here; Redis's TTL is hours away by its own clock).
async fn ended_sessions_are_invisible_before_any_sweep(store: Arc<dyn Store>) {
    let s = session(Some("erin"), items(), 60, 0);
    created(&*store, "S", &s, &NO_LIMIT).await;
    let later = now() + 61;
    assert!(store
        .get_session("default", "S", Touch::No, later)
        .await
        .unwrap()
        .is_none());
    assert!(store.user_sessions("default", "erin", later).await.unwrap().is_empty());
    let mut seen = 0;
    store
        .scan_sessions("default", later, &mut |_, _| seen += 1)
        .await
        .unwrap();
    assert_eq!(seen, 0);
    store
        .scan_users("default", "*", later, &mut |_, _| seen += 1)
        .await
        .unwrap();
    assert_eq!(seen, 0);
    // Nor is its ID in use; and a read with touch cannot bring it back.
    assert!(store
        .get_session("default", "S", Touch::ALWAYS, later)
        .await
        .unwrap()
        .is_none());
    let again = Session {
        created: later,
        touched: later,
        lifetime: Lifetime {
            ends_at: later + 60,
            idle_secs: 0,
        },
        ..session(Some("erin"), items(), 60, 0)
    };
    assert_eq!(
        store
            .create_session("default", "S", &again, &NO_LIMIT, later)
            .await
            .unwrap(),
        CreateOutcome::Created { displaced: vec![] }
    );
}

/// "Oldest" is the same on both stores: the earliest creation second, then arrival order
/// within it (whatever the IDs), then the ID.
async fn oldest_means_first_created_then_first_arrived(store: Arc<dyn Store>) {
    let t = now();
    let at = |created: i64| Session {
        created,
        touched: created,
        ..session(Some("fay"), items(), 3600, 0)
    };
    for (id, created_at) in [("Z", t + 1), ("M", t), ("Y", t + 1), ("X", t + 1)] {
        store
            .create_session("default", id, &at(created_at), &NO_LIMIT, t + 1)
            .await
            .unwrap();
    }
    assert_eq!(users_sessions(&*store, "fay").await, ["M", "Z", "Y", "X"]);
    let limit = SessionLimit { max: 3, displace: true };
    assert_eq!(
        store
            .create_session("default", "A", &at(t + 2), &limit, t + 2)
            .await
            .unwrap(),
        CreateOutcome::Created {
            displaced: vec!["M".into(), "Z".into()]
        }
    );
    assert_eq!(users_sessions(&*store, "fay").await, ["Y", "X", "A"]);
}

/// A change read from a session that was ended and created again under the same ID (same
/// version 0) must not land on the new one.
async fn a_stale_change_cannot_overwrite_a_recreated_session(store: Arc<dyn Store>) {
    let first = session(Some("gus"), items(), 3600, 0);
    created(&*store, "S", &first, &NO_LIMIT).await;
    let read = store
        .get_session("default", "S", Touch::No, now())
        .await
        .unwrap()
        .unwrap();
    assert!(store.delete_session("default", "S").await.unwrap());
    let second = session(Some("gus"), vec![item("fresh", "sms", Some("yes"))], 3600, 0);
    created(&*store, "S", &second, &NO_LIMIT).await;
    let mut stale = read.clone();
    stale.version = 1;
    stale.items.push(item("from-the-old-session", "sms", Some("1")));
    assert_eq!(
        store
            .replace_session("default", "S", &change(0, Some("gus"), &stale))
            .await
            .unwrap(),
        ReplaceOutcome::VersionMismatch { stored: 0 }
    );
    let stored = store
        .get_session("default", "S", Touch::No, now())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.items, second.items);
}

async fn updated(store: &dyn Store, id: &str, expected_version: u64, items: &[DataItem]) -> UpdateOutcome {
    let update = ItemUpdate {
        expected_version,
        items,
        now: now(),
    };
    store.update_items("default", id, &update).await.unwrap()
}

/// The session as `get_session` reads it, checked against getSession's own read, which the
/// Redis store writes into the answer from the record without decoding it.
async fn read(store: &dyn Store, id: &str) -> Option<Session> {
    let session = store.get_session("default", id, Touch::No, now()).await.unwrap();
    let answer = |version, data| {
        Response::GetSession {
            result: ResultCode::Success,
            version,
            data,
        }
        .to_xml()
    };
    let read_for_answer = store.session_answer("default", id, Touch::No, now()).await.unwrap();
    assert_eq!(
        read_for_answer.map(|(version, data)| answer(version, data)),
        session
            .as_ref()
            .map(|s| answer(s.version, AnswerItems::Items(s.items.clone()))),
        "getSession's read disagrees with get_session"
    );
    session
}

fn last_access(at: i64) -> DataItem {
    item(class::LAST_ACCESS, "sms", Some(&format!("{at:#x}")))
}

/// An item update merges into the session in one step, on the version it was based on, and
/// leaves its lifetime and user; one naming the user's key item goes the replacing way.
async fn item_updates_merge_without_a_read(store: Arc<dyn Store>) {
    let mut first = items();
    first.insert(1, last_access(1));
    first.push(item(class::USER_NAME, "sms", Some("alice")));
    let s = session(Some("alice"), first, 3600, 600);
    created(&*store, "S", &s, &NO_LIMIT).await;
    let added = item("added", "webseal", Some("1"));
    assert_eq!(
        updated(&*store, "S", 0, &[last_access(2), added.clone()]).await,
        UpdateOutcome::Updated { version: 1 }
    );
    assert_eq!(
        updated(&*store, "S", 0, &[last_access(9)]).await,
        UpdateOutcome::VersionMismatch { stored: 1 }
    );
    assert_eq!(
        updated(&*store, "S", 1, &[last_access(3)]).await,
        UpdateOutcome::Updated { version: 2 }
    );
    assert_eq!(
        updated(&*store, "nope", 0, &[last_access(3)]).await,
        UpdateOutcome::NotFound
    );
    let mut expected = s.items.clone();
    expected[1] = last_access(3);
    expected.push(added);
    let got = read(&*store, "S").await.unwrap();
    assert_eq!((got.version, &got.items), (2, &expected));
    assert_eq!((got.lifetime, got.user.as_deref()), (s.lifetime, Some("alice")));
    assert!(got.touched >= s.touched);

    assert_eq!(
        updated(&*store, "S", 2, &[item(class::USER_NAME, "sms", Some("bob"))]).await,
        UpdateOutcome::NeedsReplacement
    );
    assert_eq!(read(&*store, "S").await.unwrap().version, 2, "nothing changed");
    assert_eq!(users_sessions(&*store, "alice").await, ["S"]);

    // A replacement writes the items whole; updates go on from it.
    let mut next = got.clone();
    next.version = 3;
    next.items.push(item("replaced", "sms", None));
    assert_eq!(
        store
            .replace_session("default", "S", &change(2, Some("alice"), &next))
            .await
            .unwrap(),
        ReplaceOutcome::Replaced { displaced: vec![] }
    );
    assert_eq!(read(&*store, "S").await.unwrap().items, next.items);
    assert_eq!(
        updated(&*store, "S", 3, &[last_access(4)]).await,
        UpdateOutcome::Updated { version: 4 }
    );
    let mut seen = Vec::new();
    store
        .scan_sessions("default", now(), &mut |id, s| {
            seen.push((id.to_string(), s.items[1].clone()))
        })
        .await
        .unwrap();
    assert_eq!(seen, [("S".to_string(), last_access(4))], "listings see updates too");
}

/// A change that moves a session to another user counts it against that user's limit, in the
/// same atomic step.
async fn a_change_of_user_applies_the_limit(store: Arc<dyn Store>) {
    let limit = SessionLimit {
        max: 2,
        displace: false,
    };
    for id in ["H1", "H2"] {
        created(&*store, id, &session(Some("hal"), items(), 3600, 0), &limit).await;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let ivy = session(Some("ivy"), items(), 3600, 0);
    created(&*store, "I1", &ivy, &limit).await;
    let mut to_hal = ivy.clone();
    to_hal.version = 1;
    to_hal.user = Some("hal".into());
    assert_eq!(
        store
            .replace_session("default", "I1", &change_limited(0, Some("ivy"), &to_hal, limit))
            .await
            .unwrap(),
        ReplaceOutcome::LimitReached
    );
    assert_eq!(
        users_sessions(&*store, "ivy").await,
        ["I1"],
        "the refused change changed nothing"
    );
    let displacing = SessionLimit { max: 2, displace: true };
    assert_eq!(
        store
            .replace_session("default", "I1", &change_limited(0, Some("ivy"), &to_hal, displacing))
            .await
            .unwrap(),
        ReplaceOutcome::Replaced {
            displaced: vec!["H1".into()]
        }
    );
    assert!(store
        .get_session("default", "H1", Touch::No, now())
        .await
        .unwrap()
        .is_none());
    assert_eq!(users_sessions(&*store, "hal").await, ["H2", "I1"]);
    assert!(users_sessions(&*store, "ivy").await.is_empty());
}

/// The idle decision's delete lands only on the session as read: a touch in between (through
/// any shim) keeps it, and so does a re-creation under the same ID.
async fn an_idle_end_spares_a_session_touched_in_between(store: Arc<dyn Store>) {
    let s = session(Some("jo"), items(), 3600, 600);
    created(&*store, "S", &s, &NO_LIMIT).await;
    let read = store
        .get_session("default", "S", Touch::No, now())
        .await
        .unwrap()
        .unwrap();
    store
        .get_session("default", "S", Touch::ALWAYS, now() + 5)
        .await
        .unwrap()
        .unwrap();
    assert!(!store.end_if_unchanged("default", "S", &read).await.unwrap());
    let read = store
        .get_session("default", "S", Touch::No, now())
        .await
        .unwrap()
        .unwrap();
    assert!(store.end_if_unchanged("default", "S", &read).await.unwrap());
    assert!(store
        .get_session("default", "S", Touch::No, now())
        .await
        .unwrap()
        .is_none());
    assert!(users_sessions(&*store, "jo").await.is_empty(), "and its index entry");
    created(&*store, "S", &session(Some("jo"), items(), 3600, 600), &NO_LIMIT).await;
    assert!(!store.end_if_unchanged("default", "S", &read).await.unwrap());
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
        async move { store.join("default", &m, caps, stale_before, 0).await.unwrap() }
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

/// A set takes at most `max_members` live members; a stale one's place (and instance) is
/// free again, and a rejoin with a new instance gives the old one up.
async fn joins_are_bounded_and_free_stale_places(store: Arc<dyn Store>) {
    let t = now();
    let join = |m: Member, stale_before: i64| {
        let store = store.clone();
        async move { store.join("default", &m, 15, stale_before, 2).await.unwrap() }
    };
    assert_eq!(join(member("w1", "u1:w1", t - 700), t - 800).await, JoinOutcome::Joined);
    assert_eq!(join(member("w2", "u2:w2", t), t - 800).await, JoinOutcome::Joined);
    assert_eq!(
        join(member("w3", "u3:w3", t), t - 800).await,
        JoinOutcome::Full { max: 2 }
    );
    assert_eq!(
        join(member("w2", "u2b:w2", t), t - 800).await,
        JoinOutcome::Joined,
        "a member rejoins whatever the bound"
    );
    // w1 was last seen at t - 700: once that is stale, its place and its instance are free.
    assert_eq!(join(member("w3", "u1:w1", t), t - 600).await, JoinOutcome::Joined);
    assert_eq!(
        join(member("w4", "u2:w2", t), t - 600).await,
        JoinOutcome::Full { max: 2 },
        "full again; w2's old instance is no longer w2's"
    );
    store.leave("w3").await.unwrap();
    assert_eq!(join(member("w4", "u2:w2", t), t - 600).await, JoinOutcome::Joined);
    assert_eq!(
        join(member("w5", "u2b:w2", t), t - 600).await,
        JoinOutcome::InstanceOwnedBy { replica: "w2".into() }
    );
    let names: Vec<String> = store
        .members("default", t - 600)
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.replica)
        .collect();
    assert_eq!(names, ["w2", "w4"]);
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
    a_read_touches_only_past_its_granularity,
    ended_sessions_leave_no_index_entries_behind,
    a_create_without_a_limit_drops_ended_entries,
    scan_sessions_walks_one_replica_set,
    scan_users_walks_the_index_by_pattern,
    ended_sessions_are_invisible_before_any_sweep,
    oldest_means_first_created_then_first_arrived,
    a_stale_change_cannot_overwrite_a_recreated_session,
    a_change_of_user_applies_the_limit,
    item_updates_merge_without_a_read,
    an_idle_end_spares_a_session_touched_in_between,
    membership_rules,
    joins_are_bounded_and_free_stale_places,
    key_material_is_shared_and_rotates_once,
);

/// The Redis store's change log (see `store::redis`) stays within its bound, is dropped once a
/// shim that knows no log has replaced the record, and is not used for a record that does
/// not name its user's key item (an earlier shim's).
#[tokio::test]
async fn the_change_log_stays_short_and_gives_way_to_earlier_shims() {
    let server = RedisServer::start();
    let store = redis_store(&server, "test:");
    let key = "test:s:{7:default:S}";
    let cli = |args: &[&str]| redis_cli("127.0.0.1", server.port, None, args);
    let mut base = items();
    base.push(last_access(1));
    created(&*store, "S", &session(None, base.clone(), 3600, 0), &NO_LIMIT).await;

    let mut version = 0;
    while let UpdateOutcome::Updated { version: next } =
        updated(&*store, "S", version, &[last_access(100 + version as i64)]).await
    {
        version = next;
        assert!(version < 100, "the log has no bound");
    }
    assert!(version >= 8, "only {version} updates were logged");
    let logged: usize = cli(&["HSTRLEN", key, "x"]).trim().parse().unwrap();
    assert!((1..=256).contains(&logged), "a log of {logged} bytes");
    let got = read(&*store, "S").await.unwrap();
    assert_eq!(got.items.last(), Some(&last_access(100 + version as i64 - 1)));

    // An earlier shim's replacement moves the version and leaves the log: it no longer counts.
    cli(&["HINCRBY", key, "v", "1"]);
    let got = read(&*store, "S").await.unwrap();
    assert_eq!((got.version, &got.items), (version + 1, &base));
    assert_eq!(
        updated(&*store, "S", version + 1, &[item("after", "sms", Some("1"))]).await,
        UpdateOutcome::Updated { version: version + 2 }
    );
    let mut expected = base.clone();
    expected.push(item("after", "sms", Some("1")));
    assert_eq!(read(&*store, "S").await.unwrap().items, expected, "the log began again");

    cli(&["HDEL", key, "k"]);
    assert_eq!(
        updated(&*store, "S", version + 2, &[last_access(7)]).await,
        UpdateOutcome::NeedsReplacement
    );
}

/// Each logged change is sealed like the record, to its own session: copied into another
/// session's record, it does not open there.
#[tokio::test]
async fn logged_changes_are_sealed_to_their_session() {
    let subject = redis_sealed();
    let store = subject.store.clone();
    let port = subject._redis.as_ref().unwrap().port;
    let cli = |args: &[&str]| redis_cli("127.0.0.1", port, None, args);
    for id in ["S", "T"] {
        created(&*store, id, &session(None, items(), 3600, 0), &NO_LIMIT).await;
    }
    let secret = item("secret", "webseal", Some("s3cret-value"));
    assert_eq!(
        updated(&*store, "S", 0, std::slice::from_ref(&secret)).await,
        UpdateOutcome::Updated { version: 1 }
    );
    let (s, t) = ("test:s:{7:default:S}", "test:s:{7:default:T}");
    assert_ne!(cli(&["HSTRLEN", s, "x"]).trim(), "0");
    assert!(!cli(&["HGET", s, "x"]).contains("s3cret"), "the change is sealed");
    assert_eq!(read(&*store, "S").await.unwrap().items.last(), Some(&secret));
    cli(&[
        "EVAL",
        "for _, f in ipairs({'v', 'xv', 'x'}) do redis.call('HSET', KEYS[2], f, redis.call('HGET', KEYS[1], f)) end",
        "2",
        s,
        t,
    ]);
    assert!(
        read(&*store, "T").await.is_none(),
        "a change moved to another session opens"
    );
}

/// The embedded store past `--max-sessions` ends the least recently used session: a read with
/// touch or a change counts as a use, and the user index forgets what was ended.
#[tokio::test]
async fn a_bounded_memory_store_ends_the_least_recently_used() {
    let store = MemoryStore::bounded(3);
    let evicted = redsess_shim::store::memory::EVICTED.get();
    for id in ["A", "B", "C"] {
        created(&store, id, &session(Some("kim"), items(), 3600, 0), &NO_LIMIT).await;
    }
    store
        .get_session("default", "A", Touch::ALWAYS, now())
        .await
        .unwrap()
        .unwrap();
    // A read without touch (the shim's own, before a change) is no use.
    store
        .get_session("default", "B", Touch::No, now())
        .await
        .unwrap()
        .unwrap();
    created(&store, "D", &session(Some("kim"), items(), 3600, 0), &NO_LIMIT).await;
    assert!(
        store
            .get_session("default", "B", Touch::No, now())
            .await
            .unwrap()
            .is_none(),
        "B was used least recently"
    );
    let c = store
        .get_session("default", "C", Touch::No, now())
        .await
        .unwrap()
        .unwrap();
    let mut next = c.clone();
    next.version = 1;
    store
        .replace_session("default", "C", &change(0, Some("kim"), &next))
        .await
        .unwrap();
    created(&store, "E", &session(Some("kim"), items(), 3600, 0), &NO_LIMIT).await;
    // A was read before D was made, and C changed after: A is the least recently used now.
    assert!(store
        .get_session("default", "A", Touch::No, now())
        .await
        .unwrap()
        .is_none());
    assert_eq!(users_sessions(&store, "kim").await, ["C", "D", "E"]);
    assert!(redsess_shim::store::memory::EVICTED.get() >= evicted + 2);
}

/// Member expiry decides and removes in one step: a heartbeat that lands while another shim
/// lists the members (and drops the stale ones) keeps its member.
async fn heartbeats_survive_a_concurrent_member_expiry(a: Arc<dyn Store>, b: Arc<dyn Store>) {
    let t = now();
    for round in 0..150 {
        let replica = format!("web-{round}");
        let stale = member(&replica, &format!("u:{replica}"), t - 1000);
        assert_eq!(
            a.join("default", &stale, 15, t - 2000, 0).await.unwrap(),
            JoinOutcome::Joined
        );
        let (listed, heard) = tokio::join!(a.members("default", t - 600), b.heartbeat("default", &replica, t));
        listed.unwrap();
        if heard.unwrap() {
            let members = a.members("default", t - 600).await.unwrap();
            assert!(
                members.iter().any(|m| m.replica == replica),
                "round {round}: {replica} was heard from at {t} yet left as stale"
            );
        }
        a.leave(&replica).await.unwrap();
    }
}

#[tokio::test]
async fn heartbeats_survive_a_concurrent_member_expiry_in_memory() {
    let store = memory().store;
    heartbeats_survive_a_concurrent_member_expiry(store.clone(), store).await;
}

#[tokio::test]
async fn heartbeats_survive_a_concurrent_member_expiry_through_two_redis_stores() {
    let server = RedisServer::start();
    let (a, b) = (redis_store(&server, "race:"), redis_store(&server, "race:"));
    heartbeats_survive_a_concurrent_member_expiry(a, b).await;
}

#[tokio::test]
async fn two_redis_stores_share_sessions_keys_and_rotations() {
    let server = RedisServer::start();
    let a = redis_store(&server, "shared:");
    let b = redis_store(&server, "shared:");
    let s = session(Some("alice"), items(), 3600, 0);
    a.create_session("default", "S", &s, &NO_LIMIT, now()).await.unwrap();
    assert_eq!(
        b.get_session("default", "S", Touch::ALWAYS, now())
            .await
            .unwrap()
            .unwrap()
            .items,
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
    assert!(c
        .get_session("default", "S", Touch::ALWAYS, now())
        .await
        .unwrap()
        .is_none());
}

#[tokio::test]
async fn a_redis_that_is_down_is_an_error_not_a_hang() {
    let mut server = RedisServer::start();
    let store = redis_store(&server, "down:");
    store.ping().await.unwrap();
    server.stop();
    let started = std::time::Instant::now();
    let err = store
        .get_session("default", "S", Touch::ALWAYS, now())
        .await
        .unwrap_err();
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
        wait_replicas: 0,
        wait_timeout: Duration::from_millis(100),
    })
    .unwrap();
    assert!(store.ping().await.is_err());
}
