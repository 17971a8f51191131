//! `redsess-shim probe URL`: drives a WebSEAL-like session lifecycle against any endpoint that
//! speaks the DSC protocol and prints what it saw, step by step.

use std::time::Instant;

use rand::distr::{Alphanumeric, SampleString};

use crate::client::{ClientError, DscClient, Reply};
use crate::dsc::{item_name, DataItem, ResultCode};
use crate::items::class;

#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("{step}: {source}")]
    Call {
        step: &'static str,
        #[source]
        source: ClientError,
    },
    #[error("{step}: {problem}")]
    Unexpected { step: &'static str, problem: String },
}

/// What the probe does, and under which names.
pub struct ProbeOptions {
    pub replica_set: String,
    pub replica: String,
    /// Seconds a getUpdates may be held; the probe checks it is held, then answered.
    pub response_by_secs: u64,
}

fn describe(code: u32) -> String {
    match ResultCode::from_code(code) {
        Some(c) => format!("{code} ({})", c.name()),
        None => format!("{code} (unknown)"),
    }
}

struct Steps<'a> {
    out: &'a mut dyn std::io::Write,
    count: usize,
}

impl Steps<'_> {
    fn expect(
        &mut self,
        step: &'static str,
        reply: Result<Reply, ClientError>,
        want: ResultCode,
        detail: &str,
    ) -> Result<Reply, ProbeError> {
        let reply = reply.map_err(|source| ProbeError::Call { step, source })?;
        let got = reply.result();
        if got != want.code() {
            return Err(ProbeError::Unexpected {
                step,
                problem: format!("result {} where {} was expected", describe(got), describe(want.code())),
            });
        }
        self.count += 1;
        let _ = writeln!(self.out, "ok  {step:<28} result {}{detail}", describe(got));
        Ok(reply)
    }
}

fn item(data_class: &str, instance: &str, value: Option<&str>) -> DataItem {
    DataItem {
        data_class: item_name(data_class),
        instance: item_name(instance),
        value: value.map(Into::into),
    }
}

/// A session as WebSEAL would create it: a credential blob, the user, times and a few items
/// of WebSEAL's own, one of them nil and one empty.
pub fn webseal_like_items(user: &str, now: i64) -> Vec<DataItem> {
    let credential = Alphanumeric.sample_string(&mut rand::rng(), 1500);
    vec![
        item("com.tivoli.am.eb.credential", "sms", Some(&credential)),
        item("com.tivoli.am.eb.auth-type", "sms", Some("formsPassword")),
        item("com.tivoli.am.webseal.orig-auth-type", "webseal", None),
        item("com.tivoli.am.webseal.inactivity-timeout", "webseal", Some("0x258")),
        item("com.tivoli.am.webseal.cookie-jar.stored-cookies", "webseal", Some("")),
        item(class::USER_NAME, "sms", Some(user)),
        item(class::EXPIRY, "sms", Some(&format!("{:#x}", now + 3600))),
        item(class::SESSION_KEY_CLASS, "sms", Some(class::USER_NAME)),
        item(class::SESSION_KEY_INSTANCE, "sms", Some("sms")),
        item("com.tivoli.am.sms.creation-time", "sms", Some(&format!("{now:#x}"))),
        item(class::LAST_ACCESS, "sms", Some(&format!("{now:#x}"))),
        item("com.tivoli.am.eb.is-inactive", "sms", Some("false")),
    ]
}

/// Runs the lifecycle; every step's line goes to `out`. Returns the number of steps passed.
pub async fn run(
    client: &DscClient,
    options: &ProbeOptions,
    out: &mut dyn std::io::Write,
) -> Result<usize, ProbeError> {
    let rs = options.replica_set.as_str();
    let replica = options.replica.as_str();
    let tag = Alphanumeric.sample_string(&mut rand::rng(), 12);
    let instance = format!("{tag}:{replica}");
    let session_id = format!("probe-{}=", Alphanumeric.sample_string(&mut rand::rng(), 40));
    let user = format!("probe-user-{tag}");
    let now = crate::clock::now();
    let mut s = Steps { out, count: 0 };
    use ResultCode::*;

    s.expect("ping", client.ping().await, Success, "")?;
    let joined = s.expect(
        "joinReplicaSet",
        client.join_replica_set(replica, &instance, 15, rs).await,
        Success,
        "",
    )?;
    let key_id = joined.number("currentKeyID").unwrap_or(-1);
    let realm = s.expect("getRealmName", client.get_realm_name(replica, rs).await, Success, "")?;
    let _ = writeln!(
        s.out,
        "    realm {:?}, key ID {key_id}",
        realm.text("realm").unwrap_or_default()
    );

    let items = webseal_like_items(&user, now);
    s.expect(
        "createSession",
        client.create_session(replica, rs, &session_id, 0, &items).await,
        Success,
        "",
    )?;
    // Another session under the same ID (a repeat of the same create would be a retry,
    // which redsess answers with success).
    let other = webseal_like_items(&format!("{user}-other"), now);
    s.expect(
        "createSession (same ID)",
        client.create_session(replica, rs, &session_id, 0, &other).await,
        SessionIdInUse,
        "",
    )?;
    let got = s.expect(
        "getSession",
        client.get_session(replica, rs, &session_id).await,
        Success,
        "",
    )?;
    if got.data() != items {
        return Err(ProbeError::Unexpected {
            step: "getSession",
            problem: "the items differ from those stored (order, nil or empty values)".into(),
        });
    }
    let change = [item("com.tivoli.am.webseal.lifetime-extended", "webseal", Some("true"))];
    let changed = s.expect(
        "changeSession",
        client.change_session(replica, rs, &session_id, 0, &change).await,
        Success,
        "",
    )?;
    if changed.number("version") != Some(1) {
        return Err(ProbeError::Unexpected {
            step: "changeSession",
            problem: format!("version {:?} where 1 was expected", changed.number("version")),
        });
    }
    s.expect(
        "changeSession (stale)",
        client.change_session(replica, rs, &session_id, 0, &change).await,
        StaleVersion,
        "",
    )?;
    let got = s.expect(
        "getSession (changed)",
        client.get_session(replica, rs, &session_id).await,
        Success,
        "",
    )?;
    if got.number("version") != Some(1) || got.data().len() != items.len() + 1 {
        return Err(ProbeError::Unexpected {
            step: "getSession (changed)",
            problem: "the change is not visible".into(),
        });
    }
    s.expect(
        "idleTimeout (active)",
        client.idle_timeout(replica, rs, &session_id).await,
        Success,
        "",
    )?;
    s.expect(
        "getSession (kept)",
        client.get_session(replica, rs, &session_id).await,
        Success,
        "",
    )?;
    let listed = s.expect(
        "execute listSessions",
        client
            .execute(
                "listSessions",
                &[
                    ("SessionDataClass", class::USER_NAME),
                    ("SessionDataInstance", "sms"),
                    ("ReplicaSet", rs),
                    ("SessionDataValue", &user),
                    ("MaxResults", "0x10"),
                ],
            )
            .await,
        Success,
        "",
    )?;
    let count = listed
        .groups()
        .first()
        .and_then(|g| g.iter().find(|(n, _)| n == "NumResults").map(|(_, v)| v.clone()));
    if count.as_deref() != Some("1") {
        return Err(ProbeError::Unexpected {
            step: "execute listSessions",
            problem: format!("NumResults {count:?} where 1 was expected"),
        });
    }
    let info = s.expect(
        "execute getReplicaSetInfo",
        client.execute("getReplicaSetInfo", &[("ReplicaSet", rs)]).await,
        Success,
        "",
    )?;
    if !info
        .groups()
        .iter()
        .any(|g| g.iter().any(|(n, v)| n == "Replica" && v == replica))
    {
        return Err(ProbeError::Unexpected {
            step: "execute getReplicaSetInfo",
            problem: format!("the replica {replica} is not listed"),
        });
    }
    s.expect(
        "execute getClusterInfo",
        client.execute("getClusterInfo", &[]).await,
        Success,
        "",
    )?;
    let started = Instant::now();
    let polled = client
        .get_updates(replica, &instance, Some(rs), options.response_by_secs)
        .await;
    let held = started.elapsed();
    s.expect(
        "getUpdates",
        polled,
        Success,
        &format!(", held {:.1}s", held.as_secs_f64()),
    )?;
    s.expect(
        "terminateSession",
        client.terminate_session(replica, rs, &session_id).await,
        Success,
        "",
    )?;
    s.expect(
        "getSession (terminated)",
        client.get_session(replica, rs, &session_id).await,
        SessionNotFound,
        "",
    )?;
    s.expect("replicaShutdown", client.replica_shutdown(replica).await, Success, "")?;
    Ok(s.count)
}
