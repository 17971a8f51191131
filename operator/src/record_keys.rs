//! Key material of record sealing: the operator's rotation of the generated key file
//! (`<name>-record-keys`, key `keys`; `spec.shim.encryption.rotateEvery`). Like `redis_tls` it
//! runs between validate and build (it draws keys and reads the clock) and hands the builder
//! the file to write, if it changes.
//!
//! The shims seal with the file's first key and open with any of its keys, and read the file
//! again when the kubelet updates the mounted Secret. A rotation is the documented three steps,
//! each at a reconcile, with the state in the Secret's annotations:
//!
//! 1. When the sealing key is `rotateEvery` old, a new key is added as the *second* line
//!    (`redsess.io/staged-key`): every shim can open what it will seal with.
//! 2. [`PROPAGATION`] later (the kubelet's refresh of mounted Secrets, the shims' check), it
//!    becomes the first line and seals; the old key stays to open (`redsess.io/retiring-keys`).
//! 3. When no record sealed with the old key can be alive (the maximum session lifetime and
//!    the clock skew after step 2), its line goes.

use std::collections::BTreeMap;
use std::time::Duration;

use base64::Engine;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use rand::RngCore;

use crate::validate::{Plan, ValidationError};

/// Since when the first key seals (RFC 3339).
pub const SEALING_SINCE_ANNOTATION: &str = "redsess.io/sealing-since";
/// The key added to open only, and since when: `<id> <RFC 3339>`.
pub const STAGED_ANNOTATION: &str = "redsess.io/staged-key";
/// Keys that no longer seal, each until when it is kept: `<id>=<RFC 3339>,…`.
pub const RETIRING_ANNOTATION: &str = "redsess.io/retiring-keys";
/// How long after a key is added until it seals: the kubelet updates a mounted Secret within
/// about a minute and a half, the shims look at the file every 10 s.
pub const PROPAGATION: Duration = Duration::from_secs(5 * 60);

const HEADER: &str = "# Record encryption keys of redsess-shim: the first seals, all open.";

/// The generated key Secret as observe read it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Found {
    pub file: String,
    pub annotations: BTreeMap<String, String>,
}

/// What to write into the key Secret.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyFile {
    pub file: String,
    pub annotations: BTreeMap<String, String>,
}

/// A new key line: `<key ID> <base64 of 32 random bytes>`, as `redsess-shim keygen` prints.
pub fn new_key_line() -> String {
    let mut key = [0u8; 32];
    rand::rng().fill_bytes(&mut key);
    let id = format!("k{:08x}", rand::rng().next_u32());
    format!("{id} {}", base64::engine::general_purpose::STANDARD.encode(key))
}

/// A key file of `lines` (`<id> <key>`), the first sealing.
pub fn file_of(lines: &[String]) -> String {
    let mut out = format!("{HEADER}\n");
    for line in lines {
        out.push_str(line);
        out.push('\n');
    }
    out
}

fn since(now: Timestamp, duration: Duration) -> Timestamp {
    now - SignedDuration::try_from(duration).unwrap_or(SignedDuration::MAX)
}

fn later(t: Timestamp, duration: Duration) -> Timestamp {
    t.checked_add(SignedDuration::try_from(duration).unwrap_or(SignedDuration::MAX))
        .unwrap_or(Timestamp::MAX)
}

/// The key file after this reconcile's step, or `None` when nothing changes (no rotation
/// asked for, the Secret not created yet, or no step due). `new_line` makes a key line.
pub fn rotate(
    plan: &Plan,
    found: Option<&Found>,
    now: Timestamp,
    new_line: &mut dyn FnMut() -> String,
) -> Result<Option<KeyFile>, ValidationError> {
    let Some(encryption) = plan.shim.encryption.as_ref().filter(|e| e.generate_keys) else {
        return Ok(None);
    };
    let (Some(every), Some(found)) = (encryption.rotate_every, found) else {
        return Ok(None);
    };
    let unusable = |problem: String| {
        ValidationError::new(
            "spec.shim.encryption",
            format!(
                "Secret {} {problem}: fix it, or delete it to start again with one new key (sessions sealed with the old keys are lost)",
                encryption.keys_secret
            ),
        )
    };
    let mut lines: Vec<String> = found
        .file
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .collect();
    let id = |line: &String| line.split_whitespace().next().unwrap_or_default().to_string();
    if lines.is_empty() {
        return Err(unusable("holds no key".into()));
    }
    let time = |key: &str| -> Result<Option<Timestamp>, ValidationError> {
        found
            .annotations
            .get(key)
            .map(|t| {
                t.parse()
                    .map_err(|_| unusable(format!("has an unreadable {key} annotation: {t}")))
            })
            .transpose()
    };
    let mut annotations = found.annotations.clone();
    let mut retiring: Vec<(String, Timestamp)> = Vec::new();
    for entry in found
        .annotations
        .get(RETIRING_ANNOTATION)
        .map(String::as_str)
        .unwrap_or_default()
        .split(',')
        .filter(|e| !e.is_empty())
    {
        let (key, until) = entry
            .split_once('=')
            .and_then(|(k, t)| Some((k.to_string(), t.parse::<Timestamp>().ok()?)))
            .ok_or_else(|| unusable(format!("has an unreadable {RETIRING_ANNOTATION} annotation: {entry}")))?;
        retiring.push((key, until));
    }
    let staged = match found.annotations.get(STAGED_ANNOTATION) {
        None => None,
        Some(text) => Some(
            text.split_once(' ')
                .and_then(|(k, t)| Some((k.to_string(), t.parse::<Timestamp>().ok()?)))
                .ok_or_else(|| unusable(format!("has an unreadable {STAGED_ANNOTATION} annotation: {text}")))?,
        ),
    };

    // 3. Keys past their time go.
    let expired: Vec<String> = retiring
        .iter()
        .filter(|(_, until)| *until <= now)
        .map(|(k, _)| k.clone())
        .collect();
    lines.retain(|l| !expired.contains(&id(l)));
    retiring.retain(|(k, _)| !expired.contains(k));

    match (staged, time(SEALING_SINCE_ANNOTATION)?) {
        // A Secret from before rotation (or just generated): its key seals from now on.
        (None, None) => {
            annotations.insert(SEALING_SINCE_ANNOTATION.into(), now.to_string());
        }
        // 2. The staged key has reached every shim: it seals.
        (Some((key, added)), _) if added <= since(now, PROPAGATION) => {
            let position = lines
                .iter()
                .position(|l| id(l) == key)
                .ok_or_else(|| unusable(format!("names {key} as staged but holds no such key")))?;
            let line = lines.remove(position);
            let old = lines
                .first()
                .map(id)
                .ok_or_else(|| unusable(format!("holds only the staged key {key}")))?;
            lines.insert(0, line);
            retiring.push((old, later(now, encryption.retain_for)));
            annotations.remove(STAGED_ANNOTATION);
            annotations.insert(SEALING_SINCE_ANNOTATION.into(), now.to_string());
        }
        (Some(_), _) => {}
        // 1. The sealing key is due: a new one, to open only for now.
        (None, Some(sealing_since)) if sealing_since <= since(now, every) => {
            let line = new_line();
            let key = id(&line);
            lines.insert(1, line);
            annotations.insert(STAGED_ANNOTATION.into(), format!("{key} {now}"));
        }
        (None, Some(_)) => {}
    }

    if retiring.is_empty() {
        annotations.remove(RETIRING_ANNOTATION);
    } else {
        let list: Vec<String> = retiring.iter().map(|(k, t)| format!("{k}={t}")).collect();
        annotations.insert(RETIRING_ANNOTATION.into(), list.join(","));
    }
    let file = file_of(&lines);
    if file == found.file && annotations == found.annotations {
        return Ok(None);
    }
    Ok(Some(KeyFile { file, annotations }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::redis::tests::plan;
    use k8s_openapi::jiff::ToSpan;

    fn t0() -> Timestamp {
        Timestamp::from_second(1_800_000_000).unwrap()
    }

    /// Key lines `a-1`, `a-2`, … so a test can follow them.
    fn keys() -> impl FnMut() -> String {
        let mut n = 0;
        move || {
            n += 1;
            format!("a-{n} S0VZ")
        }
    }

    fn ids(file: &str) -> Vec<&str> {
        file.lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| l.split(' ').next().unwrap())
            .collect()
    }

    fn step(p: &Plan, found: &mut Found, at: Timestamp, next: &mut dyn FnMut() -> String) -> bool {
        match rotate(p, Some(found), at, next).unwrap() {
            Some(k) => {
                *found = Found {
                    file: k.file,
                    annotations: k.annotations,
                };
                true
            }
            None => false,
        }
    }

    #[test]
    fn a_key_is_added_then_seals_then_the_old_one_goes() {
        // 30 days between rotations, sessions of at most 8 h, 3 min of clock skew.
        let p = plan("  shim: {encryption: {mode: Sealed}, session: {maxLifetime: 8h}}");
        let mut next = keys();
        let mut found = Found {
            file: file_of(&["old S0VZ".into()]),
            annotations: BTreeMap::new(),
        };
        // First seen: the clock starts.
        assert!(step(&p, &mut found, t0(), &mut next));
        assert_eq!(found.annotations[SEALING_SINCE_ANNOTATION], t0().to_string());
        assert!(!step(&p, &mut found, t0() + (29 * 24).hours(), &mut next), "not due");

        // 1. Due: a-1 added second, opening only.
        let due = t0() + (30 * 24).hours();
        assert!(step(&p, &mut found, due, &mut next));
        assert_eq!(ids(&found.file), ["old", "a-1"]);
        assert_eq!(found.annotations[STAGED_ANNOTATION], format!("a-1 {due}"));
        assert!(
            !step(&p, &mut found, due + 4.minutes(), &mut next),
            "still reaching the shims"
        );

        // 2. After the propagation time it seals; the old key stays to open.
        let promoted = due + 5.minutes();
        assert!(step(&p, &mut found, promoted, &mut next));
        assert_eq!(ids(&found.file), ["a-1", "old"]);
        assert!(!found.annotations.contains_key(STAGED_ANNOTATION));
        let until = promoted + 8.hours() + 3.minutes();
        assert_eq!(found.annotations[RETIRING_ANNOTATION], format!("old={until}"));

        // 3. Once no session sealed with it can be alive, it goes.
        assert!(!step(&p, &mut found, until - 1.second(), &mut next));
        assert!(step(&p, &mut found, until, &mut next));
        assert_eq!(ids(&found.file), ["a-1"]);
        assert!(!found.annotations.contains_key(RETIRING_ANNOTATION));
        assert_eq!(found.annotations[SEALING_SINCE_ANNOTATION], promoted.to_string());
        assert!(found.file.starts_with(HEADER));
    }

    #[test]
    fn no_rotation_without_generated_keys_or_when_turned_off() {
        let found = Found {
            file: file_of(&["k S0VZ".into()]),
            annotations: BTreeMap::new(),
        };
        let never = plan("  shim: {encryption: {mode: Sealed, rotateEvery: '0'}}");
        assert_eq!(rotate(&never, Some(&found), t0(), &mut keys()).unwrap(), None);
        let own = plan("  shim: {encryption: {mode: Sealed, keysSecret: mine}}");
        assert_eq!(rotate(&own, Some(&found), t0(), &mut keys()).unwrap(), None);
        assert_eq!(rotate(&plan("  {}"), Some(&found), t0(), &mut keys()).unwrap(), None);
        let generated = plan("  shim: {encryption: {mode: Sealed}}");
        assert_eq!(
            rotate(&generated, None, t0(), &mut keys()).unwrap(),
            None,
            "not created yet"
        );
    }

    #[test]
    fn a_damaged_secret_is_reported_not_rewritten() {
        let p = plan("  shim: {encryption: {mode: Sealed}}");
        let mut found = Found {
            file: file_of(&["k S0VZ".into()]),
            annotations: BTreeMap::from([(STAGED_ANNOTATION.to_string(), format!("gone {}", t0()))]),
        };
        let error = rotate(&p, Some(&found), t0() + 1.hour(), &mut keys()).unwrap_err();
        assert!(
            error.problem.contains("names gone as staged but holds no such key"),
            "{error}"
        );
        found.annotations.clear();
        found.file = HEADER.into();
        let error = rotate(&p, Some(&found), t0(), &mut keys()).unwrap_err();
        assert_eq!(error.field, "spec.shim.encryption");
        assert!(error.problem.contains("cache-record-keys holds no key"), "{error}");
    }

    #[test]
    fn rotation_settings_are_checked() {
        use crate::validate::validate;
        let invalid = |spec: &str| validate(&crate::fixtures::session_cache(spec, 1)).unwrap_err();
        assert_eq!(
            invalid("  shim: {encryption: {mode: Sealed, keysSecret: k, rotateEvery: 30d}}").field,
            "spec.shim.encryption.rotateEvery"
        );
        let short = invalid("  shim: {encryption: {mode: Sealed, rotateEvery: 1h}, session: {maxLifetime: 8h}}");
        assert!(
            short.problem.contains("shorter than spec.shim.session.maxLifetime"),
            "{short}"
        );
        let p = plan("  shim: {encryption: {mode: Sealed}}");
        assert_eq!(
            p.shim.encryption.unwrap().rotate_every,
            Some(Duration::from_secs(30 * 86_400))
        );
    }
}
