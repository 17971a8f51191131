//! Every DSC operation and result code, end to end: the real `redsess-shim` binary driven with
//! `DscClient`. Each scenario runs twice, once on the embedded memory store and once on a
//! real `redis-server` (see `on_both_stores!` at the end).
//!
//! Result codes are written out in decimal as PROTOCOL.md lists them, not taken from the
//! shim's own enum, so that a wrong code in the shim cannot agree with itself.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use redsess_tests::code::{
    CAPABILITY_MISMATCH, ID_IN_USE, INSTANCE_TAKEN, INVALID_PARAMETER, LIMIT_REACHED, NOT_FOUND, NOT_REGISTERED,
    SET_NOT_CONFIGURED, SET_NOT_JOINED, STALE_VERSION, SUCCESS,
};
use redsess_tests::expect;
use redsess_tests::{item, now, start_of_second, webseal_session, DataItem, Reply, Shim};

const RS: &str = "default";
const USER_NAME: &str = "com.tivoli.am.eb.user-name";
const EXPIRY: &str = "com.tivoli.am.eb.expiry";
const INACTIVITY: &str = "com.tivoli.am.webseal.inactivity-timeout";
const LAST_ACCESS: &str = "com.tivoli.am.eb.last-access";

/// The value of the first attribute `name` of an admin group.
fn attr<'a>(group: &'a [(String, String)], name: &str) -> Option<&'a str> {
    group.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
}

fn user(name: &str) -> DataItem {
    item(USER_NAME, "sms", Some(name))
}

/// A small session of `name` with only the user-name item and `extra`.
fn session_of(name: &str, extra: &[DataItem]) -> Vec<DataItem> {
    let mut items = vec![user(name)];
    items.extend_from_slice(extra);
    items
}

async fn exists(shim: &Shim, id: &str) -> bool {
    let r = shim
        .client()
        .get_session("web-a", RS, id)
        .await
        .unwrap_or_else(|e| panic!("getSession {id}: {e}"));
    match r.result() {
        SUCCESS => true,
        NOT_FOUND => false,
        other => panic!("getSession {id}: unexpected result {other}"),
    }
}

async fn list(shim: &Shim, pattern: &str, max_results: &str) -> (Reply, BTreeSet<String>) {
    list_by(shim, USER_NAME, pattern, max_results).await
}

/// listSessions matching the item of `data_class` (instance `sms`).
async fn list_by(shim: &Shim, data_class: &str, pattern: &str, max_results: &str) -> (Reply, BTreeSet<String>) {
    let r = expect(
        shim.client()
            .execute(
                "listSessions",
                &[
                    ("SessionDataClass", data_class),
                    ("SessionDataInstance", "sms"),
                    ("ReplicaSet", RS),
                    ("SessionDataValue", pattern),
                    ("MaxResults", max_results),
                ],
            )
            .await,
        SUCCESS,
        &format!("listSessions {pattern}"),
    );
    let ids = r
        .groups()
        .iter()
        .filter_map(|g| attr(g, "SessionID").map(str::to_string))
        .collect();
    (r, ids)
}

fn counts(r: &Reply) -> (Option<String>, Option<String>) {
    let groups = r.groups();
    let first = groups.first().cloned().unwrap_or_default();
    (
        attr(&first, "NumResults").map(str::to_string),
        attr(&first, "ReturnedResults").map(str::to_string),
    )
}

fn set(ids: &[&str]) -> BTreeSet<String> {
    ids.iter().map(|s| s.to_string()).collect()
}

// ---------------------------------------------------------------- membership and keys

async fn join_hands_out_one_key_per_replica_set(shim: &mut Shim) {
    let c = shim.client();
    let a = expect(
        c.join_replica_set("web-a", "uuid-a:web-a", 15, RS).await,
        SUCCESS,
        "join web-a",
    );
    let key = a.text("currentKey").unwrap_or_default();
    assert!(key.len() >= 16, "currentKey {key:?} is shorter than 16 characters");
    assert!(
        key.chars().all(|c| c.is_ascii_graphic()),
        "currentKey {key:?} is not printable"
    );
    assert_eq!(
        a.number("currentKeyAge"),
        Some(-1),
        "no rotation configured: {:?}",
        a.ret
    );
    assert!(a.number("currentKeyID").is_some(), "{:?}", a.ret);
    assert!(a.number("oldKeyID").is_some(), "{:?}", a.ret);
    assert!(a.text("oldKey").is_some(), "{:?}", a.ret);

    let b = expect(
        c.join_replica_set("web-b", "uuid-b:web-b", 15, RS).await,
        SUCCESS,
        "join web-b",
    );
    assert_eq!(
        b.text("currentKey").as_deref(),
        Some(key.as_str()),
        "same set, same key"
    );
    assert_eq!(b.number("currentKeyID"), a.number("currentKeyID"));
    // A restarted WebSEAL joins again under its own name and instance.
    expect(
        c.join_replica_set("web-a", "uuid-a:web-a", 15, RS).await,
        SUCCESS,
        "join web-a again",
    );
    let other = expect(
        c.join_replica_set("web-a", "uuid-a:web-a", 15, "other").await,
        SUCCESS,
        "join another set",
    );
    assert_ne!(
        other.text("currentKey").as_deref(),
        Some(key.as_str()),
        "each set has its own key"
    );
}

async fn join_refuses_a_different_capability_mask(shim: &mut Shim) {
    let c = shim.client();
    expect(
        c.join_replica_set("web-a", "uuid-a:web-a", 15, RS).await,
        SUCCESS,
        "join web-a",
    );
    let refused = expect(
        c.join_replica_set("web-b", "uuid-b:web-b", 7, RS).await,
        CAPABILITY_MISMATCH,
        "join web-b with another mask",
    );
    assert!(
        refused.text("currentKey").unwrap_or_default().is_empty(),
        "a refused join must not hand out the key: {:?}",
        refused.ret
    );
    expect(
        c.join_replica_set("web-b", "uuid-b:web-b", 15, RS).await,
        SUCCESS,
        "join web-b with the set's mask",
    );
    // Once no live replica holds the old mask, a new one may set it.
    expect(c.replica_shutdown("web-a").await, SUCCESS, "shutdown web-a");
    expect(c.replica_shutdown("web-b").await, SUCCESS, "shutdown web-b");
    expect(
        c.join_replica_set("web-c", "uuid-c:web-c", 7, RS).await,
        SUCCESS,
        "join web-c with a new mask into an empty set",
    );
}

async fn join_refuses_an_instance_owned_by_another_replica(shim: &mut Shim) {
    let c = shim.client();
    expect(
        c.join_replica_set("web-a", "uuid-1:web-a", 15, RS).await,
        SUCCESS,
        "join web-a",
    );
    let refused = expect(
        c.join_replica_set("web-b", "uuid-1:web-a", 15, RS).await,
        INSTANCE_TAKEN,
        "join web-b with web-a's instance",
    );
    assert!(
        refused.text("currentKey").unwrap_or_default().is_empty(),
        "a refused join must not hand out the key: {:?}",
        refused.ret
    );
    expect(
        c.join_replica_set("web-b", "uuid-2:web-b", 15, RS).await,
        SUCCESS,
        "join web-b with its own instance",
    );
    expect(c.replica_shutdown("web-a").await, SUCCESS, "shutdown web-a");
    expect(
        c.join_replica_set("web-c", "uuid-1:web-a", 15, RS).await,
        SUCCESS,
        "the instance is free once its owner left",
    );
}

async fn realm_is_the_configured_one(shim: &mut Shim) {
    let r = expect(shim.client().get_realm_name("web-a", RS).await, SUCCESS, "getRealmName");
    assert_eq!(r.text("realm").as_deref(), Some("Test-Realm-7"), "{:?}", r.ret);
}

async fn realm_defaults_to_isam(shim: &mut Shim) {
    let r = expect(shim.client().get_realm_name("web-a", RS).await, SUCCESS, "getRealmName");
    assert_eq!(
        r.text("realm").as_deref(),
        Some("ISAM-Distributed-Session-Cache"),
        "{:?}",
        r.ret
    );
}

async fn ping_answers_success(shim: &mut Shim) {
    let r = expect(shim.client().ping().await, SUCCESS, "ping");
    assert_eq!(r.ret.name, "pingReturn");
}

// ---------------------------------------------------------------- sessions

async fn create_session_and_id_in_use(shim: &mut Shim) {
    let c = shim.client();
    let items = webseal_session("alice");
    let r = expect(
        c.create_session("web-a", RS, "sess-1", 0, &items).await,
        SUCCESS,
        "createSession",
    );
    assert_eq!(r.number("version"), Some(0), "{:?}", r.ret);
    assert_eq!(r.number("stackDepth"), Some(1), "{:?}", r.ret);
    assert_eq!(
        r.text("clearOnReadDataPresent").as_deref(),
        Some("false"),
        "{:?}",
        r.ret
    );

    let other = session_of("mallory", &[item("x.y", "sms", Some("z"))]);
    expect(
        c.create_session("web-b", RS, "sess-1", 0, &other).await,
        ID_IN_USE,
        "createSession with the same ID",
    );
    let got = expect(c.get_session("web-a", RS, "sess-1").await, SUCCESS, "getSession");
    assert_eq!(got.data(), items, "a refused create must not overwrite the session");
    // The same ID in another replica set is another session.
    expect(
        c.create_session("web-a", "other", "sess-1", 0, &other).await,
        SUCCESS,
        "same ID, other set",
    );
}

async fn get_session_keeps_order_nil_and_empty(shim: &mut Shim) {
    let c = shim.client();
    let mut items = vec![
        item("z.first", "sms", Some("1")),
        item("a.nil", "webseal", None),
        item("m.empty", "sms", Some("")),
        item("a.nil", "sms", Some("same class, other instance")),
        item("b.markup", "webseal", Some("<a href=\"x\">&amp; é ✓</a>")),
        item("c.spaces", "webseal", Some("  padded  ")),
    ];
    items.extend(webseal_session("alice"));
    items.push(item("y.last-nil", "sms", None));
    expect(
        c.create_session("web-a", RS, "sess-order", 0, &items).await,
        SUCCESS,
        "createSession",
    );
    let r = expect(c.get_session("web-b", RS, "sess-order").await, SUCCESS, "getSession");
    assert_eq!(r.number("version"), Some(0), "{:?}", r.ret);
    assert_eq!(r.number("stackDepth"), Some(1), "{:?}", r.ret);
    assert_eq!(
        r.data(),
        items,
        "items must come back in first-stored order, nil and empty kept apart"
    );

    let missing = expect(
        c.get_session("web-a", RS, "no-such-session").await,
        NOT_FOUND,
        "getSession of an unknown ID",
    );
    assert_eq!(missing.number("version"), Some(0), "{:?}", missing.ret);
    assert_eq!(missing.number("stackDepth"), Some(1), "{:?}", missing.ret);
    assert!(missing.data().is_empty(), "{:?}", missing.ret);
}

/// A createSession retried by its replica after a timeout, when the first attempt was stored,
/// succeeds; anything else under that ID is still "ID in use".
async fn a_repeated_create_is_not_id_in_use(shim: &mut Shim) {
    let c = shim.client();
    let items = webseal_session("alice");
    expect(
        c.create_session("web-a", RS, "sess-r", 0, &items).await,
        SUCCESS,
        "create",
    );
    expect(
        c.create_session("web-a", RS, "sess-r", 0, &items).await,
        SUCCESS,
        "the same create again",
    );
    expect(
        c.create_session("web-b", RS, "sess-r", 0, &items).await,
        ID_IN_USE,
        "the same create from another replica",
    );
    let mut other = items.clone();
    other.push(item("x.y", "sms", Some("z")));
    expect(
        c.create_session("web-a", RS, "sess-r", 0, &other).await,
        ID_IN_USE,
        "other items",
    );
    expect(
        c.change_session("web-a", RS, "sess-r", 0, &[item("x.y", "sms", Some("z"))])
            .await,
        SUCCESS,
        "change",
    );
    expect(
        c.create_session("web-a", RS, "sess-r", 0, &items).await,
        ID_IN_USE,
        "the create again once the session has changed",
    );
}

/// A changeSession that moves a session to another user counts it against that user.
async fn a_change_to_a_user_at_the_limit_is_refused(shim: &mut Shim) {
    // --max-sessions-per-user 1
    let c = shim.client();
    expect(
        c.create_session("web-a", RS, "a-1", 0, &session_of("alice", &[])).await,
        SUCCESS,
        "alice",
    );
    expect(
        c.create_session("web-a", RS, "b-1", 0, &session_of("bob", &[])).await,
        SUCCESS,
        "bob",
    );
    expect(
        c.change_session("web-a", RS, "b-1", 0, &[user("alice")]).await,
        LIMIT_REACHED,
        "bob's session becomes alice's second",
    );
    let got = expect(c.get_session("web-a", RS, "b-1").await, SUCCESS, "b-1 stays");
    assert_eq!(got.data(), session_of("bob", &[]), "the refused change changed nothing");
    expect(
        c.change_session("web-a", RS, "b-1", 0, &[user("carol")]).await,
        SUCCESS,
        "to a user with no session",
    );
}

async fn change_session_upserts_with_versions(shim: &mut Shim) {
    let c = shim.client();
    let items = vec![
        item("z.one", "sms", Some("1")),
        item("a.two", "webseal", None),
        item("m.three", "sms", Some("")),
        user("alice"),
    ];
    expect(
        c.create_session("web-a", RS, "sess-ch", 0, &items).await,
        SUCCESS,
        "createSession",
    );
    let changes = [
        item("a.two", "webseal", Some("2")),
        item("n.new", "sms", Some("new")),
        item("z.one", "sms", Some("")),
    ];
    let r = expect(
        c.change_session("web-a", RS, "sess-ch", 0, &changes).await,
        SUCCESS,
        "changeSession v0",
    );
    assert_eq!(r.number("version"), Some(1), "{:?}", r.ret);
    assert_eq!(r.number("stackDepth"), Some(1), "{:?}", r.ret);
    assert_eq!(
        r.text("clearOnReadDataPresent").as_deref(),
        Some("false"),
        "{:?}",
        r.ret
    );
    let merged = vec![
        item("z.one", "sms", Some("")),
        item("a.two", "webseal", Some("2")),
        item("m.three", "sms", Some("")),
        user("alice"),
        item("n.new", "sms", Some("new")),
    ];
    let got = expect(c.get_session("web-b", RS, "sess-ch").await, SUCCESS, "getSession v1");
    assert_eq!(got.number("version"), Some(1), "{:?}", got.ret);
    assert_eq!(got.data(), merged, "changed items keep their place, new ones go last");

    expect(
        c.change_session("web-b", RS, "sess-ch", 0, &[item("z.one", "sms", Some("lost"))])
            .await,
        STALE_VERSION,
        "changeSession with a stale version",
    );
    let got = expect(
        c.get_session("web-b", RS, "sess-ch").await,
        SUCCESS,
        "getSession after stale",
    );
    assert_eq!(got.number("version"), Some(1));
    assert_eq!(got.data(), merged, "a stale change must change nothing");

    let r = expect(
        c.change_session("web-b", RS, "sess-ch", 1, &[item("m.three", "sms", None)])
            .await,
        SUCCESS,
        "changeSession v1",
    );
    assert_eq!(r.number("version"), Some(2), "{:?}", r.ret);
    let got = expect(c.get_session("web-a", RS, "sess-ch").await, SUCCESS, "getSession v2");
    assert_eq!(got.number("version"), Some(2));
    assert_eq!(got.data()[2], item("m.three", "sms", None), "an item may become nil");
    assert_eq!(got.data().len(), merged.len());

    expect(
        c.change_session("web-a", RS, "sess-ch", 7, &changes).await,
        STALE_VERSION,
        "changeSession with a future version",
    );
    expect(
        c.change_session("web-a", RS, "no-such-session", 0, &changes).await,
        NOT_FOUND,
        "changeSession of an unknown ID",
    );
    assert!(
        !exists(shim, "no-such-session").await,
        "changeSession must not create sessions"
    );
}

async fn session_limit_refuses_past_the_limit(shim: &mut Shim) {
    let c = shim.client();
    for id in ["al-1", "al-2"] {
        expect(
            c.create_session("web-a", RS, id, 2, &session_of("alice", &[])).await,
            SUCCESS,
            id,
        );
    }
    expect(
        c.create_session("web-a", RS, "al-3", 2, &session_of("alice", &[]))
            .await,
        LIMIT_REACHED,
        "a third session with limit 2",
    );
    assert!(!exists(shim, "al-3").await, "a refused session must not exist");
    assert!(exists(shim, "al-1").await && exists(shim, "al-2").await);
    expect(
        c.create_session("web-a", RS, "bo-1", 2, &session_of("bob", &[])).await,
        SUCCESS,
        "another user is counted apart",
    );
    expect(
        c.terminate_session("web-a", RS, "al-1").await,
        SUCCESS,
        "terminate al-1",
    );
    expect(
        c.create_session("web-a", RS, "al-3", 2, &session_of("alice", &[]))
            .await,
        SUCCESS,
        "room again after a logout",
    );
}

async fn session_limit_displaces_the_oldest(shim: &mut Shim) {
    let c = shim.client();
    // Within one second and with IDs sorting against their age, so that "oldest" cannot be
    // confused with "first by ID".
    start_of_second();
    for id in ["s-c", "s-b", "s-a"] {
        expect(
            c.create_session("web-a", RS, id, -2, &session_of("alice", &[])).await,
            SUCCESS,
            &format!("create {id} with limit -2"),
        );
    }
    assert!(
        !exists(shim, "s-c").await,
        "the oldest session (s-c) must have been ended"
    );
    assert!(exists(shim, "s-b").await, "s-b (second oldest) must be kept");
    assert!(exists(shim, "s-a").await, "the new session must exist");
    let (r, ids) = list(shim, "alice", "0x10").await;
    assert_eq!(ids, set(&["s-a", "s-b"]), "{:?}", r.ret);
}

async fn shim_limit_with_displacement(shim: &mut Shim) {
    let c = shim.client();
    expect(
        c.create_session("web-a", RS, "u-1", 0, &session_of("alice", &[])).await,
        SUCCESS,
        "first session",
    );
    expect(
        c.create_session("web-a", RS, "u-2", 0, &session_of("alice", &[])).await,
        SUCCESS,
        "second session displaces the first",
    );
    assert!(
        !exists(shim, "u-1").await,
        "--max-sessions-per-user 1 --displace-sessions"
    );
    assert!(exists(shim, "u-2").await);
    expect(
        c.create_session("web-a", RS, "b-1", 0, &session_of("bob", &[])).await,
        SUCCESS,
        "bob",
    );
    assert!(
        exists(shim, "u-2").await,
        "another user's session must not displace alice's"
    );
}

async fn shim_limit_refuses_and_the_stricter_wins(shim: &mut Shim) {
    let c = shim.client();
    expect(
        c.create_session("web-a", RS, "u-1", 0, &session_of("alice", &[])).await,
        SUCCESS,
        "first session",
    );
    expect(
        c.create_session("web-a", RS, "u-2", 0, &session_of("alice", &[])).await,
        LIMIT_REACHED,
        "--max-sessions-per-user 1 without displacement",
    );
    expect(
        c.create_session("web-a", RS, "u-3", 5, &session_of("alice", &[])).await,
        LIMIT_REACHED,
        "WebSEAL's looser limit 5 does not lift the shim's 1",
    );
    assert!(exists(shim, "u-1").await && !exists(shim, "u-2").await && !exists(shim, "u-3").await);
}

async fn terminate_session_ends_it(shim: &mut Shim) {
    let c = shim.client();
    let items = webseal_session("alice");
    expect(
        c.create_session("web-a", RS, "sess-t", 0, &items).await,
        SUCCESS,
        "create",
    );
    let r = expect(c.terminate_session("web-b", RS, "sess-t").await, SUCCESS, "terminate");
    assert_eq!(r.number("version"), Some(0), "{:?}", r.ret);
    assert_eq!(r.number("stackDepth"), Some(0), "{:?}", r.ret);
    assert_eq!(
        r.text("clearOnReadDataPresent").as_deref(),
        Some("false"),
        "{:?}",
        r.ret
    );
    expect(
        c.get_session("web-a", RS, "sess-t").await,
        NOT_FOUND,
        "getSession after terminate",
    );
    expect(
        c.terminate_session("web-a", RS, "sess-t").await,
        NOT_FOUND,
        "terminate again",
    );
    expect(
        c.terminate_session("web-a", RS, "never-existed").await,
        NOT_FOUND,
        "terminate an unknown ID",
    );
    let (r, ids) = list(shim, "alice", "0x10").await;
    assert!(
        ids.is_empty(),
        "a terminated session must leave the user's index: {:?}",
        r.ret
    );
    expect(
        c.create_session("web-a", RS, "sess-t", 1, &items).await,
        SUCCESS,
        "the ID and the user's slot are free again",
    );
}

async fn idle_timeout_ends_only_idle_sessions(shim: &mut Shim) {
    // --clock-skew 0s; inactivity timeout 1 s.
    let c = shim.client();
    let items = session_of("alice", &[item(INACTIVITY, "webseal", Some("0x1"))]);
    start_of_second();
    expect(
        c.create_session("web-a", RS, "sess-idle", 0, &items).await,
        SUCCESS,
        "create",
    );
    expect(
        c.idle_timeout("web-a", RS, "sess-idle").await,
        SUCCESS,
        "idleTimeout right after create",
    );
    assert!(
        exists(shim, "sess-idle").await,
        "a session active a moment ago must survive idleTimeout"
    );
    tokio::time::sleep(Duration::from_millis(2200)).await;
    let r = c
        .idle_timeout("web-a", RS, "sess-idle")
        .await
        .unwrap_or_else(|e| panic!("idleTimeout after 2.2 s: {e}"));
    assert!(
        [SUCCESS, NOT_FOUND].contains(&r.result()),
        "idleTimeout after 2.2 s: {:?}",
        r.ret
    );
    expect(
        c.get_session("web-a", RS, "sess-idle").await,
        NOT_FOUND,
        "getSession after 2.2 s idle with a 1 s inactivity timeout",
    );
    expect(
        c.idle_timeout("web-a", RS, "never-existed").await,
        NOT_FOUND,
        "idleTimeout of an unknown ID",
    );
}

// ---------------------------------------------------------------- admin

async fn admin_get_cluster_info(shim: &mut Shim) {
    let c = shim.client();
    let before = now();
    let joined = expect(
        c.join_replica_set("web-a", "uuid-a:web-a", 15, RS).await,
        SUCCESS,
        "join",
    );
    expect(
        c.join_replica_set("web-a", "uuid-a:web-a", 15, "other").await,
        SUCCESS,
        "join other",
    );
    let r = expect(c.execute("getClusterInfo", &[]).await, SUCCESS, "getClusterInfo");
    let groups = r.groups();
    let first = groups.first().cloned().unwrap_or_default();
    assert_eq!(
        attr(&first, "SessionRealm"),
        Some("ISAM-Distributed-Session-Cache"),
        "{groups:?}"
    );
    let sets: BTreeSet<String> = first
        .iter()
        .filter(|(n, _)| n == "ReplicaSet")
        .map(|(_, v)| v.clone())
        .collect();
    assert_eq!(sets, set(&[RS, "other"]), "{groups:?}");
    let key_id = joined.number("currentKeyID").unwrap().to_string();
    let key_group = groups
        .iter()
        .skip(1)
        .find(|g| attr(g, "KeyId") == Some(key_id.as_str()))
        .unwrap_or_else(|| panic!("no key group with KeyId {key_id}: {groups:?}"));
    let created: i64 = attr(key_group, "KeyCreationTime").unwrap().parse().unwrap();
    assert!(
        (before - 2..=now() + 2).contains(&created),
        "KeyCreationTime {created} is not about now"
    );
    let expiry: i64 = attr(key_group, "KeyExpiryTime")
        .unwrap_or_else(|| panic!("no KeyExpiryTime: {key_group:?}"))
        .parse()
        .unwrap();
    assert!(expiry >= created, "{key_group:?}");
}

async fn admin_get_replica_set_info(shim: &mut Shim) {
    let c = shim.client();
    let before = now();
    expect(
        c.join_replica_set("web-a", "uuid-a:web-a", 15, RS).await,
        SUCCESS,
        "join a",
    );
    expect(
        c.join_replica_set("web-b", "uuid-b:web-b", 15, RS).await,
        SUCCESS,
        "join b",
    );
    expect(
        c.join_replica_set("web-z", "uuid-z:web-z", 15, "other").await,
        SUCCESS,
        "join z",
    );
    let info = || async {
        let r = expect(
            c.execute("getReplicaSetInfo", &[("ReplicaSet", RS)]).await,
            SUCCESS,
            "getReplicaSetInfo",
        );
        r.groups()
    };
    let groups = info().await;
    let replicas: BTreeSet<String> = groups
        .iter()
        .filter_map(|g| attr(g, "Replica").map(str::to_string))
        .collect();
    assert_eq!(replicas, set(&["web-a", "web-b"]), "{groups:?}");
    for g in &groups {
        let joined: i64 = attr(g, "Joined")
            .unwrap_or_else(|| panic!("no Joined: {g:?}"))
            .parse()
            .unwrap();
        assert!((before - 1..=now() + 1).contains(&joined), "Joined {joined}: {g:?}");
    }
    let r = expect(c.replica_shutdown("web-a").await, SUCCESS, "replicaShutdown");
    assert_eq!(r.ret.name, "replicaShutdownReturn");
    let groups = info().await;
    let replicas: BTreeSet<String> = groups
        .iter()
        .filter_map(|g| attr(g, "Replica").map(str::to_string))
        .collect();
    assert_eq!(replicas, set(&["web-b"]), "web-a shut down: {groups:?}");
}

async fn admin_list_sessions(shim: &mut Shim) {
    let c = shim.client();
    for (id, name) in [("a-1", "alice"), ("a-2", "alice"), ("b-1", "alan"), ("c-1", "bob")] {
        expect(
            c.create_session("web-a", RS, id, 0, &webseal_session(name)).await,
            SUCCESS,
            id,
        );
    }
    let (r, ids) = list(shim, "alice", "0x10").await;
    assert_eq!(counts(&r), (Some("2".into()), Some("2".into())), "{:?}", r.ret);
    assert_eq!(ids, set(&["a-1", "a-2"]));
    for g in r.groups().iter().filter(|g| attr(g, "SessionID").is_some()) {
        assert_eq!(attr(g, "SessionDataValue"), Some("alice"), "{g:?}");
    }
    let (r, ids) = list(shim, "alice", "0x1").await;
    assert_eq!(counts(&r), (Some("2".into()), Some("1".into())), "{:?}", r.ret);
    assert_eq!(ids.len(), 1);

    let (r, ids) = list(shim, "al*", "0x10").await;
    assert_eq!(counts(&r), (Some("3".into()), Some("3".into())), "{:?}", r.ret);
    assert_eq!(ids, set(&["a-1", "a-2", "b-1"]));
    let (r, ids) = list(shim, "*o*", "0x10").await;
    assert_eq!(ids, set(&["c-1"]), "{:?}", r.ret);
    let (r, ids) = list(shim, "a*e", "0x10").await;
    assert_eq!(ids, set(&["a-1", "a-2"]), "{:?}", r.ret);

    let (r, ids) = list(shim, "*", "0x2").await;
    assert_eq!(counts(&r), (Some("4".into()), Some("2".into())), "{:?}", r.ret);
    assert_eq!(ids.len(), 2, "MaxResults 2: {:?}", r.ret);
    assert!(ids.is_subset(&set(&["a-1", "a-2", "b-1", "c-1"])));

    let (r, ids) = list(shim, "nobody", "0x10").await;
    assert_eq!(counts(&r), (Some("0".into()), Some("0".into())), "{:?}", r.ret);
    assert!(ids.is_empty());
    let (r, ids) = list(shim, "x*", "0x10").await;
    assert_eq!(counts(&r), (Some("0".into()), Some("0".into())), "{:?}", r.ret);
    assert!(ids.is_empty());
}

async fn admin_terminate_session(shim: &mut Shim) {
    let c = shim.client();
    for id in ["a-1", "a-2"] {
        expect(
            c.create_session("web-a", RS, id, 0, &session_of("alice", &[])).await,
            SUCCESS,
            id,
        );
    }
    expect(
        c.execute("terminateSession", &[("SessionID", "a-1"), ("ReplicaSet", RS)])
            .await,
        SUCCESS,
        "admin terminateSession",
    );
    assert!(!exists(shim, "a-1").await, "a-1 was terminated");
    assert!(exists(shim, "a-2").await, "a-2 must be kept");
    let (r, ids) = list(shim, "alice", "0x10").await;
    assert_eq!(ids, set(&["a-2"]), "{:?}", r.ret);
    expect(
        c.execute("terminateSession", &[("SessionID", "a-1"), ("ReplicaSet", RS)])
            .await,
        NOT_FOUND,
        "admin terminateSession of an ended session",
    );
}

async fn admin_terminate_all_sessions(shim: &mut Shim) {
    let c = shim.client();
    for (id, name) in [("a-1", "alice"), ("a-2", "alice"), ("c-1", "bob"), ("d-1", "alice2")] {
        expect(
            c.create_session("web-a", RS, id, 0, &session_of(name, &[])).await,
            SUCCESS,
            id,
        );
    }
    expect(
        c.create_session("web-a", "other", "o-1", 0, &session_of("alice", &[]))
            .await,
        SUCCESS,
        "alice in another set",
    );
    expect(
        c.execute(
            "terminateAllSessions",
            &[("SessionDataValue", "alice"), ("ReplicaSet", RS)],
        )
        .await,
        SUCCESS,
        "terminateAllSessions alice",
    );
    assert!(
        !exists(shim, "a-1").await && !exists(shim, "a-2").await,
        "alice's sessions end"
    );
    assert!(exists(shim, "c-1").await, "bob's session is kept");
    assert!(exists(shim, "d-1").await, "alice2 is another user");
    expect(
        c.get_session("web-a", "other", "o-1").await,
        SUCCESS,
        "alice's session in another replica set is kept",
    );
    let (r, ids) = list(shim, "alice", "0x10").await;
    assert!(ids.is_empty(), "{:?}", r.ret);
    for id in ["a-3", "a-4"] {
        expect(
            c.create_session("web-a", RS, id, 2, &session_of("alice", &[])).await,
            SUCCESS,
            "alice's slots are free again",
        );
    }
}

async fn silent_replicas_leave_their_sets(shim: &mut Shim) {
    // --replica-timeout 10s: web-a falls silent, web-b long-polls, web-c reads sessions.
    let c = shim.client();
    for r in ["web-a", "web-b", "web-c"] {
        expect(
            c.join_replica_set(r, &format!("uuid:{r}"), 15, RS).await,
            SUCCESS,
            &format!("join {r}"),
        );
    }
    expect(
        c.create_session("web-c", RS, "s-1", 0, &session_of("alice", &[])).await,
        SUCCESS,
        "create",
    );
    let until = Instant::now() + Duration::from_millis(11_500);
    let polls = async {
        while Instant::now() < until {
            expect(
                c.get_updates("web-b", "uuid:web-b", None, 2).await,
                SUCCESS,
                "getUpdates web-b",
            );
        }
    };
    let reads = async {
        while Instant::now() < until {
            expect(c.get_session("web-c", RS, "s-1").await, SUCCESS, "getSession web-c");
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    };
    tokio::join!(polls, reads);
    let r = expect(
        c.execute("getReplicaSetInfo", &[("ReplicaSet", RS)]).await,
        SUCCESS,
        "getReplicaSetInfo",
    );
    let replicas: BTreeSet<String> = r
        .groups()
        .iter()
        .filter_map(|g| attr(g, "Replica").map(str::to_string))
        .collect();
    assert_eq!(
        replicas,
        set(&["web-b", "web-c"]),
        "web-a was silent for more than --replica-timeout 10s; polls and session reads are heartbeats"
    );
    // The silent replica's instance is free for another replica now.
    expect(
        c.join_replica_set("web-d", "uuid:web-a", 15, RS).await,
        SUCCESS,
        "join with the departed replica's instance",
    );
}

async fn list_sessions_by_user_name_matches_the_item(shim: &mut Shim) {
    // The concurrent-session identity of this session is `custom.uid`, not its user name:
    // listing by user name must still find it by its user-name item, as a wildcard does.
    let c = shim.client();
    let items = vec![
        user("alice"),
        item("custom.uid", "webseal", Some("u-17")),
        item(
            "com.tivoli.am.sms.concurrent-session-key-class",
            "sms",
            Some("custom.uid"),
        ),
        item(
            "com.tivoli.am.sms.concurrent-session-key-instance",
            "sms",
            Some("webseal"),
        ),
    ];
    expect(c.create_session("web-a", RS, "s-1", 0, &items).await, SUCCESS, "create");
    let (r, ids) = list(shim, "ali*", "0x10").await;
    assert_eq!(ids, set(&["s-1"]), "wildcard: {:?}", r.ret);
    let (r, ids) = list(shim, "alice", "0x10").await;
    assert_eq!(ids, set(&["s-1"]), "exact user name: {:?}", r.ret);
    let (r, ids) = list(shim, "u-17", "0x10").await;
    assert!(ids.is_empty(), "no user-name item holds u-17: {:?}", r.ret);
}

/// What `dscadmin session list` sends: the concurrent-session key class, matched against the
/// session's concurrent-session key (the user), not the item's literal value.
async fn list_sessions_by_the_concurrent_session_key_matches_the_user(shim: &mut Shim) {
    const KEY_CLASS: &str = "com.tivoli.am.sms.concurrent-session-key-class";
    let c = shim.client();
    let redirected = vec![
        user("alice"),
        item("custom.uid", "webseal", Some("u-17")),
        item(KEY_CLASS, "sms", Some("custom.uid")),
        item(
            "com.tivoli.am.sms.concurrent-session-key-instance",
            "sms",
            Some("webseal"),
        ),
    ];
    expect(
        c.create_session("web-a", RS, "s-1", 0, &redirected).await,
        SUCCESS,
        "s-1",
    );
    expect(
        c.create_session("web-a", RS, "a-1", 0, &webseal_session("alice")).await,
        SUCCESS,
        "a-1",
    );
    expect(
        c.create_session("web-a", RS, "a-2", 0, &webseal_session("alice")).await,
        SUCCESS,
        "a-2",
    );
    let (r, ids) = list_by(shim, KEY_CLASS, "u-17", "0x10").await;
    assert_eq!(ids, set(&["s-1"]), "{:?}", r.ret);
    let values: Vec<_> = r
        .groups()
        .iter()
        .filter_map(|g| attr(g, "SessionDataValue").map(str::to_string))
        .collect();
    assert_eq!(values, ["u-17"], "the value is the user, not the class name");
    let (r, ids) = list_by(shim, KEY_CLASS, "alice", "0x10").await;
    assert_eq!(ids, set(&["a-1", "a-2"]), "{:?}", r.ret);
    let (r, ids) = list_by(shim, KEY_CLASS, "u-*", "0x10").await;
    assert_eq!(ids, set(&["s-1"]), "{:?}", r.ret);
    let (r, ids) = list_by(shim, KEY_CLASS, "*", "0x2").await;
    assert_eq!(counts(&r), (Some("3".into()), Some("2".into())), "{:?}", r.ret);
    assert_eq!(ids.len(), 2);
    let (r, ids) = list_by(shim, KEY_CLASS, "custom.uid", "0x10").await;
    assert!(ids.is_empty(), "the literal item value is no user: {:?}", r.ret);
}

// ---------------------------------------------------------------- configuration

async fn unconfigured_replica_sets_are_refused(shim: &mut Shim) {
    // --replica-sets a,b
    let c = shim.client();
    let items = session_of("alice", &[]);
    expect(
        c.join_replica_set("web-a", "uuid-a:web-a", 15, "a").await,
        SUCCESS,
        "join a",
    );
    expect(
        c.join_replica_set("web-a", "uuid-a:web-a", 15, "b").await,
        SUCCESS,
        "join b",
    );
    expect(
        c.create_session("web-a", "a", "s-1", 0, &items).await,
        SUCCESS,
        "create in a",
    );

    let refused = expect(
        c.join_replica_set("web-a", "uuid-a:web-a", 15, "c").await,
        SET_NOT_CONFIGURED,
        "join c",
    );
    assert!(
        refused.text("currentKey").unwrap_or_default().is_empty(),
        "{:?}",
        refused.ret
    );
    expect(
        c.get_realm_name("web-a", "c").await,
        SET_NOT_CONFIGURED,
        "getRealmName c",
    );
    expect(
        c.create_session("web-a", "c", "s-1", 0, &items).await,
        SET_NOT_CONFIGURED,
        "createSession c",
    );
    expect(
        c.get_session("web-a", "c", "s-1").await,
        SET_NOT_CONFIGURED,
        "getSession c",
    );
    expect(
        c.change_session("web-a", "c", "s-1", 0, &items).await,
        SET_NOT_CONFIGURED,
        "changeSession c",
    );
    expect(
        c.idle_timeout("web-a", "c", "s-1").await,
        SET_NOT_CONFIGURED,
        "idleTimeout c",
    );
    expect(
        c.terminate_session("web-a", "c", "s-1").await,
        SET_NOT_CONFIGURED,
        "terminateSession c",
    );
    let started = Instant::now();
    expect(
        c.get_updates("web-a", "uuid-a:web-a", Some("c"), 3).await,
        SET_NOT_CONFIGURED,
        "getUpdates c",
    );
    assert!(started.elapsed() < Duration::from_secs(1), "a refusal is not held");
    for (request, attrs) in [
        ("getReplicaSetInfo", vec![("ReplicaSet", "c")]),
        (
            "listSessions",
            vec![
                ("SessionDataClass", USER_NAME),
                ("ReplicaSet", "c"),
                ("SessionDataValue", "*"),
            ],
        ),
        ("terminateSession", vec![("ReplicaSet", "c"), ("SessionID", "s-1")]),
        (
            "terminateAllSessions",
            vec![("ReplicaSet", "c"), ("SessionDataValue", "alice")],
        ),
    ] {
        expect(c.execute(request, &attrs).await, SET_NOT_CONFIGURED, request);
    }
    let r = expect(c.execute("getClusterInfo", &[]).await, SUCCESS, "getClusterInfo");
    let sets: BTreeSet<String> = r.groups()[0]
        .iter()
        .filter(|(n, _)| n == "ReplicaSet")
        .map(|(_, v)| v.clone())
        .collect();
    assert_eq!(sets, set(&["a", "b"]));
    expect(
        c.get_session("web-a", "a", "s-1").await,
        SUCCESS,
        "the session in a is untouched",
    );
}

async fn sessions_expire_without_client_help(shim: &mut Shim) {
    // --clock-skew 0s
    let c = shim.client();
    start_of_second();
    let short = session_of("alice", &[item(EXPIRY, "sms", Some(&format!("{:#x}", now() + 1)))]);
    let long = session_of("bob", &[item(EXPIRY, "sms", Some(&format!("{:#x}", now() + 3600)))]);
    expect(
        c.create_session("web-a", RS, "short", 0, &short).await,
        SUCCESS,
        "create short",
    );
    expect(
        c.create_session("web-a", RS, "long", 0, &long).await,
        SUCCESS,
        "create long",
    );
    expect(
        c.create_session("web-a", RS, "extended", 0, &session_of("carol", &short[1..]))
            .await,
        SUCCESS,
        "create extended",
    );
    assert!(exists(shim, "short").await, "the session exists until its expiry");
    // A change of other items leaves the end where it is; a change of the expiry moves it.
    let activity = [item(LAST_ACCESS, "sms", Some(&format!("{:#x}", now())))];
    expect(
        c.change_session("web-a", RS, "short", 0, &activity).await,
        SUCCESS,
        "short's activity",
    );
    let later = [item(EXPIRY, "sms", Some(&format!("{:#x}", now() + 3600)))];
    expect(
        c.change_session("web-a", RS, "extended", 0, &later).await,
        SUCCESS,
        "extend",
    );
    tokio::time::sleep(Duration::from_millis(2500)).await;
    // Ask the listing first: it must not show the ended session even though no client read
    // it since (no lazy clean-up on read can help).
    let (r, ids) = list(shim, "*", "0x10").await;
    assert_eq!(ids, set(&["long", "extended"]), "{:?}", r.ret);
    let (r, ids) = list(shim, "alice", "0x10").await;
    assert!(
        ids.is_empty(),
        "the user's index must not list an ended session: {:?}",
        r.ret
    );
    assert!(!exists(shim, "short").await, "expiry + 0s skew has passed");
    assert!(exists(shim, "long").await);
    assert!(exists(shim, "extended").await, "the changed expiry counts");
}

async fn max_lifetime_caps_far_expiry(shim: &mut Shim) {
    // --max-lifetime 1m: a far expiry is capped, not refused.
    let c = shim.client();
    let items = session_of(
        "alice",
        &[item(EXPIRY, "sms", Some(&format!("{:#x}", now() + 30 * 86400)))],
    );
    expect(c.create_session("web-a", RS, "far", 0, &items).await, SUCCESS, "create");
    let r = expect(c.get_session("web-a", RS, "far").await, SUCCESS, "getSession");
    assert_eq!(r.data(), items);
}

async fn strict_membership_refuses_strangers(shim: &mut Shim) {
    // --strict-membership
    let c = shim.client();
    let items = session_of("alice", &[]);
    expect(
        c.create_session("web-x", RS, "s-1", 0, &items).await,
        NOT_REGISTERED,
        "createSession from a replica that joined nothing",
    );
    expect(
        c.get_realm_name("web-x", RS).await,
        NOT_REGISTERED,
        "getRealmName from a replica that joined nothing",
    );
    expect(
        c.join_replica_set("web-a", "uuid-a:web-a", 15, "elsewhere").await,
        SUCCESS,
        "join elsewhere",
    );
    expect(
        c.create_session("web-a", RS, "s-1", 0, &items).await,
        SET_NOT_JOINED,
        "createSession in a set the replica did not join",
    );
    expect(
        c.join_replica_set("web-a", "uuid-a:web-a", 15, RS).await,
        SUCCESS,
        "join",
    );
    // Succeeds only if the refused creates above stored nothing.
    expect(
        c.create_session("web-a", RS, "s-1", 0, &items).await,
        SUCCESS,
        "createSession",
    );
    expect(c.get_session("web-a", RS, "s-1").await, SUCCESS, "getSession");
    expect(
        c.change_session("web-a", RS, "s-1", 0, &items).await,
        SUCCESS,
        "changeSession",
    );
    expect(
        c.get_session("web-b", RS, "s-1").await,
        NOT_REGISTERED,
        "getSession from a stranger",
    );
    expect(
        c.idle_timeout("web-b", RS, "s-1").await,
        NOT_REGISTERED,
        "idleTimeout from a stranger",
    );
    expect(
        c.terminate_session("web-b", RS, "s-1").await,
        NOT_REGISTERED,
        "terminateSession from a stranger",
    );
    expect(c.replica_shutdown("web-a").await, SUCCESS, "replicaShutdown");
    expect(
        c.get_session("web-a", RS, "s-1").await,
        NOT_REGISTERED,
        "getSession after the replica shut down",
    );
    expect(
        c.join_replica_set("web-b", "uuid-b:web-b", 15, RS).await,
        SUCCESS,
        "join b",
    );
    let r = expect(
        c.get_session("web-b", RS, "s-1").await,
        SUCCESS,
        "the session outlived web-a",
    );
    assert_eq!(r.number("version"), Some(1));
}

/// A request of `operation` with these child elements, raw.
fn raw(operation: &str, children: &str) -> String {
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?><SOAP-ENV:Envelope xmlns:SOAP-ENV="http://schemas.xmlsoap.org/soap/envelope/" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><SOAP-ENV:Body><ns1:{operation} xmlns:ns1="http://sms.am.tivoli.com">{children}</ns1:{operation}></SOAP-ENV:Body></SOAP-ENV:Envelope>"#
    )
}

async fn malformed_fields_are_invalid_parameters(shim: &mut Shim) {
    let c = shim.client();
    let cases = [
        (
            "createSession",
            "<ns1:replica>web-a</ns1:replica><ns1:replicaSet>default</ns1:replicaSet><ns1:sessionLimit>0</ns1:sessionLimit>",
        ),
        (
            "getSession",
            r#"<ns1:replica>web-a</ns1:replica><ns1:replicaSet>default</ns1:replicaSet><ns1:sessionID xsi:nil="true"/>"#,
        ),
        (
            "changeSession",
            "<ns1:replica>web-a</ns1:replica><ns1:replicaSet>default</ns1:replicaSet><ns1:sessionID>s-1</ns1:sessionID><ns1:version>x1</ns1:version>",
        ),
        (
            "joinReplicaSet",
            "<ns1:replica>web-a</ns1:replica><ns1:instance>i:web-a</ns1:instance><ns1:capabilities>-1</ns1:capabilities><ns1:replicaSet>default</ns1:replicaSet>",
        ),
        (
            "createSession",
            "<ns1:replica>web-a</ns1:replica><ns1:replicaSet>default</ns1:replicaSet><ns1:sessionID>s-1</ns1:sessionID><ns1:data><ns1:value>v</ns1:value><ns1:instance>sms</ns1:instance></ns1:data>",
        ),
    ];
    for (operation, children) in cases {
        let (status, body) = c
            .post_raw("/DSess/services/DSess", raw(operation, children))
            .await
            .unwrap_or_else(|e| panic!("{operation}: {e}"));
        assert_eq!(status, 200, "{operation} {children}: {body}");
        assert!(
            body.contains(&format!("{operation}Response"))
                && body.contains(&format!("<ns1:result>{INVALID_PARAMETER}</ns1:result>")),
            "{operation} {children}: {body}"
        );
    }
    assert!(!exists(shim, "s-1").await, "a refused request must change nothing");
}

// ---------------------------------------------------------------- long poll and process

async fn get_updates_is_held_until_just_before_response_by(shim: &mut Shim) {
    let c = shim.client();
    let joined = expect(
        c.join_replica_set("web-a", "uuid-a:web-a", 15, RS).await,
        SUCCESS,
        "join",
    );
    let started = Instant::now();
    let (named, nil) = tokio::join!(
        async {
            let r = c.get_updates("web-a", "uuid-a:web-a", Some(RS), 3).await;
            (r, started.elapsed())
        },
        async {
            let r = c.get_updates("web-a", "uuid-a:web-a", None, 3).await;
            (r, started.elapsed())
        }
    );
    for (what, (reply, held)) in [("replicaSet named", named), ("replicaSet nil", nil)] {
        let r = expect(reply, SUCCESS, &format!("getUpdates, {what}"));
        assert!(
            held >= Duration::from_millis(2000) && held < Duration::from_millis(3000),
            "getUpdates ({what}) with responseBy 3 was held {held:?}, not about 2.5 s"
        );
        assert_eq!(r.text("newKey"), joined.text("currentKey"), "{what}: {:?}", r.ret);
        assert_eq!(r.number("newKeyID"), joined.number("currentKeyID"), "{what}");
    }
}

async fn key_rotation_wakes_get_updates(shim: &mut Shim) {
    // --key-rotation 2s
    let c = shim.client();
    let joined = expect(
        c.join_replica_set("web-a", "uuid-a:web-a", 15, RS).await,
        SUCCESS,
        "join",
    );
    let age = joined.number("currentKeyAge").unwrap_or(-1);
    assert!(
        age >= 0,
        "with rotation on, currentKeyAge is the key's age: {:?}",
        joined.ret
    );
    let started = Instant::now();
    let r = expect(
        c.get_updates("web-a", "uuid-a:web-a", Some(RS), 30).await,
        SUCCESS,
        "getUpdates",
    );
    let held = started.elapsed();
    assert!(
        held < Duration::from_secs(5),
        "a rotation every 2 s answered only after {held:?}"
    );
    assert_ne!(r.number("newKeyID"), joined.number("currentKeyID"), "{:?}", r.ret);
    let new_key = r.text("newKey").unwrap_or_default();
    assert!(new_key.len() >= 16, "{:?}", r.ret);
    assert_ne!(Some(new_key), joined.text("currentKey"));
    let again = expect(
        c.join_replica_set("web-b", "uuid-b:web-b", 15, RS).await,
        SUCCESS,
        "join b",
    );
    assert!(again.number("currentKeyID") >= r.number("newKeyID"), "{:?}", again.ret);
    assert!(!again.text("oldKey").unwrap_or_default().is_empty());
}

async fn sigterm_answers_long_polls_and_exits(shim: &mut Shim) {
    let c = shim.client();
    expect(
        c.join_replica_set("web-a", "uuid-a:web-a", 15, RS).await,
        SUCCESS,
        "join",
    );
    let poller = shim.client();
    let poll = tokio::spawn(async move { poller.get_updates("web-a", "uuid-a:web-a", Some(RS), 60).await });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!poll.is_finished(), "getUpdates with responseBy 60 must be held");
    let signalled = Instant::now();
    shim.signal_term();
    let answer = tokio::time::timeout(Duration::from_secs(3), poll)
        .await
        .expect("the waiting getUpdates was not answered within 3 s of SIGTERM")
        .expect("poll task");
    expect(answer, SUCCESS, "getUpdates answered at shutdown");
    let status = shim
        .wait_exit(Duration::from_secs(5))
        .unwrap_or_else(|| panic!("the shim did not exit within 5 s of SIGTERM"));
    assert!(status.success(), "exit status {status:?}");
    assert!(
        signalled.elapsed() < Duration::from_secs(6),
        "shutdown took {:?}",
        signalled.elapsed()
    );
}

async fn health_and_readiness(shim: &mut Shim) {
    let (status, body) = shim.http_get("/healthz").expect("GET /healthz");
    assert_eq!(status, 200, "/healthz: {body}");
    let (status, body) = shim.http_get("/readyz").expect("GET /readyz");
    assert_eq!(status, 200, "/readyz: {body}");
}

/// The one scenario that must wait out the shortest replica timeout (10 s): both stores at
/// once, so that it holds one test thread for 11 s rather than two.
#[tokio::test]
async fn silent_replicas_leave_their_sets_on_both_stores() {
    let args = ["--replica-timeout", "10s"];
    let redis = redsess_tests::RedisServer::start();
    let mut on_memory = redsess_tests::Traced(Shim::start(&args, &[]));
    let mut on_redis = redsess_tests::Traced(Shim::start(&args, &[("REDSESS_REDIS_URL", &redis.url())]));
    tokio::join!(
        silent_replicas_leave_their_sets(&mut on_memory),
        silent_replicas_leave_their_sets(&mut on_redis)
    );
}

/// Generates, for every scenario, `memory::<name>` (embedded store) and `redis::<name>` (a
/// `redis-server` of its own), each starting the shim with the scenario's arguments.
macro_rules! on_both_stores {
    ($($(#[$attr:meta])* $scenario:ident($($arg:expr),*);)*) => {
        mod memory {
            $(
                $(#[$attr])*
                #[tokio::test]
                async fn $scenario() {
                    let mut shim = redsess_tests::Traced(redsess_tests::Shim::start(&[$($arg),*], &[]));
                    super::$scenario(&mut shim).await;
                }
            )*
        }
        mod redis {
            $(
                $(#[$attr])*
                #[tokio::test]
                async fn $scenario() {
                    let redis = redsess_tests::RedisServer::start();
                    let mut shim = redsess_tests::Traced(redsess_tests::Shim::start(
                        &[$($arg),*],
                        &[("REDSESS_REDIS_URL", &redis.url())],
                    ));
                    super::$scenario(&mut shim).await;
                }
            )*
        }
    };
}

on_both_stores! {
    join_hands_out_one_key_per_replica_set();
    join_refuses_a_different_capability_mask();
    join_refuses_an_instance_owned_by_another_replica();
    realm_is_the_configured_one("--realm", "Test-Realm-7");
    realm_defaults_to_isam();
    ping_answers_success();
    create_session_and_id_in_use();
    a_repeated_create_is_not_id_in_use();
    a_change_to_a_user_at_the_limit_is_refused("--max-sessions-per-user", "1");
    get_session_keeps_order_nil_and_empty();
    change_session_upserts_with_versions();
    session_limit_refuses_past_the_limit();
    session_limit_displaces_the_oldest();
    shim_limit_with_displacement("--max-sessions-per-user", "1", "--displace-sessions");
    shim_limit_refuses_and_the_stricter_wins("--max-sessions-per-user", "1");
    terminate_session_ends_it();
    idle_timeout_ends_only_idle_sessions("--clock-skew", "0s");
    admin_get_cluster_info();
    admin_get_replica_set_info();
    admin_list_sessions();
    admin_terminate_session();
    admin_terminate_all_sessions();
    list_sessions_by_user_name_matches_the_item();
    list_sessions_by_the_concurrent_session_key_matches_the_user();
    unconfigured_replica_sets_are_refused("--replica-sets", "a,b");
    strict_membership_refuses_strangers("--strict-membership");
    malformed_fields_are_invalid_parameters();
    sessions_expire_without_client_help("--clock-skew", "0s");
    max_lifetime_caps_far_expiry("--max-lifetime", "1m");
    get_updates_is_held_until_just_before_response_by();
    key_rotation_wakes_get_updates("--key-rotation", "2s");
    sigterm_answers_long_polls_and_exits();
    health_and_readiness();
}

/// `--shutdown-delay`: after SIGTERM the shim goes on answering for the delay (while Kubernetes
/// spreads the endpoint removal), then shuts down as usual.
#[tokio::test]
async fn shutdown_delay_serves_on_after_sigterm() {
    let mut shim = Shim::start(&["--shutdown-delay", "2s"], &[]);
    let c = shim.client();
    expect(c.ping().await, SUCCESS, "ping before SIGTERM");
    let signalled = Instant::now();
    shim.signal_term();
    tokio::time::sleep(Duration::from_millis(800)).await;
    expect(c.ping().await, SUCCESS, "ping within the delay");
    assert!(shim.is_running(), "the shim left before its delay");
    let status = shim
        .wait_exit(Duration::from_secs(6))
        .unwrap_or_else(|| panic!("the shim did not exit within 6 s of SIGTERM"));
    assert!(status.success(), "exit status {status:?}");
    assert!(
        signalled.elapsed() >= Duration::from_secs(2),
        "exited after {:?}, before its 2 s delay",
        signalled.elapsed()
    );
}
