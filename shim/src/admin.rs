//! `redsess-shim admin URL <command>`: the commands of IBM's `dscadmin`, sent to the DSC admin
//! endpoint (`execute`) as `dscadmin` sends them, so that they work against this shim and
//! against IBM's own DSC alike. Output as a table for people, or JSON for scripts.

use std::io::Write;

use crate::client::{ClientError, DscClient, Reply};
use crate::dsc::ResultCode;
use crate::items::class;

/// One command, as `dscadmin` names them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `cluster show`: the realm, the replica sets and their keys.
    ClusterShow,
    /// `replica list`: the live replicas of a set.
    ReplicaList { replica_set: String },
    /// `session list`: the sessions of the users matching a pattern (`*` wildcards).
    SessionList {
        replica_set: String,
        user_pattern: String,
        max_results: u32,
    },
    /// `session terminate session`: one session by ID.
    TerminateSession { replica_set: String, session_id: String },
    /// `session terminate all_sessions`: every session of a user.
    TerminateAllSessions { replica_set: String, user: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    Table,
    Json,
}

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("{0}")]
    Client(#[from] ClientError),
    #[error("{request} was refused: result {code} ({name})")]
    Refused {
        request: &'static str,
        code: u32,
        name: &'static str,
    },
    #[error("cannot write the output: {0}")]
    Output(#[from] std::io::Error),
}

/// Runs `command` against the admin endpoint of `client`'s cache and writes its answer.
pub async fn run(client: &DscClient, command: &Command, output: Output, out: &mut dyn Write) -> Result<(), AdminError> {
    match command {
        Command::ClusterShow => {
            let groups = execute(client, "getClusterInfo", &[]).await?;
            let first = groups.first().cloned().unwrap_or_default();
            let realm = value(&first, "SessionRealm").unwrap_or_default();
            let sets: Vec<&str> = first
                .iter()
                .filter(|(n, _)| n == "ReplicaSet")
                .map(|(_, v)| v.as_str())
                .collect();
            // One key group per set, in the sets' order.
            let keys: Vec<[String; 3]> = groups
                .iter()
                .skip(1)
                .map(|g| {
                    ["KeyId", "KeyCreationTime", "KeyExpiryTime"].map(|n| value(g, n).unwrap_or_default().to_string())
                })
                .collect();
            match output {
                Output::Json => {
                    let sets: Vec<String> = sets
                        .iter()
                        .enumerate()
                        .map(|(n, set)| {
                            let [id, created, expires] = keys.get(n).cloned().unwrap_or_default();
                            format!(
                                "{{\"name\":{},\"keyId\":{},\"keyCreated\":{},\"keyExpires\":{}}}",
                                json(set),
                                json_number(&id),
                                json_number(&created),
                                json_number(&expires)
                            )
                        })
                        .collect();
                    writeln!(
                        out,
                        "{{\"realm\":{},\"replicaSets\":[{}]}}",
                        json(realm),
                        sets.join(",")
                    )?;
                }
                Output::Table => {
                    writeln!(out, "realm: {realm}")?;
                    let rows = sets
                        .iter()
                        .enumerate()
                        .map(|(n, set)| {
                            let [id, created, expires] = keys.get(n).cloned().unwrap_or_default();
                            vec![set.to_string(), id, time(&created), time(&expires)]
                        })
                        .collect();
                    table(out, &["REPLICA SET", "KEY ID", "KEY CREATED", "KEY EXPIRES"], rows)?;
                }
            }
        }
        Command::ReplicaList { replica_set } => {
            let groups = execute(client, "getReplicaSetInfo", &[("ReplicaSet", replica_set)]).await?;
            let replicas: Vec<(String, String)> = groups
                .iter()
                .filter_map(|g| {
                    Some((
                        value(g, "Replica")?.to_string(),
                        value(g, "Joined").unwrap_or_default().to_string(),
                    ))
                })
                .collect();
            match output {
                Output::Json => {
                    let items: Vec<String> = replicas
                        .iter()
                        .map(|(r, joined)| format!("{{\"replica\":{},\"joined\":{}}}", json(r), json_number(joined)))
                        .collect();
                    writeln!(out, "[{}]", items.join(","))?;
                }
                Output::Table => {
                    let rows = replicas.into_iter().map(|(r, joined)| vec![r, time(&joined)]).collect();
                    table(out, &["REPLICA", "JOINED"], rows)?;
                }
            }
        }
        Command::SessionList {
            replica_set,
            user_pattern,
            max_results,
        } => {
            let max = format!("{max_results:#x}");
            let groups = execute(
                client,
                "listSessions",
                &[
                    ("SessionDataClass", class::SESSION_KEY_CLASS),
                    ("SessionDataInstance", "sms"),
                    ("ReplicaSet", replica_set),
                    ("SessionDataValue", user_pattern),
                    ("MaxResults", &max),
                ],
            )
            .await?;
            let first = groups.first().cloned().unwrap_or_default();
            let total = value(&first, "NumResults").unwrap_or("0").to_string();
            let sessions: Vec<(String, String)> = groups
                .iter()
                .filter_map(|g| {
                    Some((
                        value(g, "SessionID")?.to_string(),
                        value(g, "SessionDataValue").unwrap_or_default().to_string(),
                    ))
                })
                .collect();
            match output {
                Output::Json => {
                    let items: Vec<String> = sessions
                        .iter()
                        .map(|(id, user)| format!("{{\"sessionId\":{},\"user\":{}}}", json(id), json(user)))
                        .collect();
                    writeln!(
                        out,
                        "{{\"total\":{},\"returned\":{},\"sessions\":[{}]}}",
                        json_number(&total),
                        sessions.len(),
                        items.join(",")
                    )?;
                }
                Output::Table => {
                    let shown = sessions.len();
                    let rows = sessions.into_iter().map(|(id, user)| vec![id, user]).collect();
                    table(out, &["SESSION ID", "USER"], rows)?;
                    writeln!(out, "{shown} of {total} sessions")?;
                }
            }
        }
        Command::TerminateSession {
            replica_set,
            session_id,
        } => {
            execute(
                client,
                "terminateSession",
                &[("SessionID", session_id), ("ReplicaSet", replica_set)],
            )
            .await?;
            match output {
                Output::Json => writeln!(out, "{{\"terminated\":1}}")?,
                Output::Table => writeln!(out, "terminated session {session_id}")?,
            }
        }
        Command::TerminateAllSessions { replica_set, user } => {
            let groups = execute(
                client,
                "terminateAllSessions",
                &[("SessionDataValue", user), ("ReplicaSet", replica_set)],
            )
            .await?;
            let ended = groups
                .first()
                .and_then(|g| value(g, "TerminatedSessions"))
                .unwrap_or("0")
                .to_string();
            match output {
                Output::Json => writeln!(out, "{{\"terminated\":{}}}", json_number(&ended))?,
                Output::Table => writeln!(out, "terminated {ended} sessions of {user}")?,
            }
        }
    }
    Ok(())
}

type Group = Vec<(String, String)>;

/// One `execute` request; its attribute groups, or the refusal.
async fn execute(
    client: &DscClient,
    request: &'static str,
    attributes: &[(&str, &str)],
) -> Result<Vec<Group>, AdminError> {
    let reply: Reply = client.execute(request, attributes).await?;
    let code = reply.result();
    if code != ResultCode::Success.code() {
        return Err(AdminError::Refused {
            request,
            code,
            name: ResultCode::from_code(code).map_or("unknown", ResultCode::name),
        });
    }
    Ok(reply.groups())
}

fn value<'a>(group: &'a [(String, String)], name: &str) -> Option<&'a str> {
    group.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
}

/// Columns padded to their widest cell.
fn table(out: &mut dyn Write, header: &[&str], rows: Vec<Vec<String>>) -> std::io::Result<()> {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}", w = *w))
            .collect();
        padded.join("  ").trim_end().to_string()
    };
    writeln!(out, "{}", line(header.to_vec()))?;
    for row in &rows {
        writeln!(out, "{}", line(row.iter().map(String::as_str).collect()))?;
    }
    Ok(())
}

/// Epoch seconds as UTC date and time; anything else as it came.
fn time(epoch: &str) -> String {
    let Ok(secs) = epoch.parse::<i64>() else {
        return epoch.to_string();
    };
    let (days, rest) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Howard Hinnant's days-to-civil.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

/// A JSON string.
fn json(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A JSON number when the text is one (as the protocol's decimal fields are), else a string.
fn json_number(text: &str) -> String {
    if text.parse::<i64>().is_ok() {
        text.to_string()
    } else {
        json(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_utc() {
        assert_eq!(time("0"), "1970-01-01T00:00:00Z");
        assert_eq!(time("1800000000"), "2027-01-15T08:00:00Z");
        assert_eq!(time("951782400"), "2000-02-29T00:00:00Z");
        assert_eq!(time("-1"), "1969-12-31T23:59:59Z");
        assert_eq!(time("soon"), "soon");
    }

    #[test]
    fn json_escapes_what_it_must() {
        assert_eq!(json("a\"b\\c\nd é"), "\"a\\\"b\\\\c\\u000ad é\"");
        assert_eq!(json_number("42"), "42");
        assert_eq!(json_number("-1"), "-1");
        assert_eq!(json_number("x"), "\"x\"");
    }

    #[test]
    fn tables_pad_their_columns() {
        let mut out = Vec::new();
        table(
            &mut out,
            &["ID", "USER"],
            vec![
                vec!["s-1".into(), "alice".into()],
                vec!["session-22".into(), "bo".into()],
            ],
        )
        .unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "ID          USER\ns-1         alice\nsession-22  bo\n"
        );
    }
}
