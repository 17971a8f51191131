//! Session records sealed at rest: the items of every record the Redis store writes are
//! encrypted with AES-256-GCM (ring), so whoever reads Redis, its AOF or RDB files, or a
//! replica's copy learns no credential and cannot forge one.
//!
//! A sealed record is `3 · key-ID length · key ID · 12-byte nonce · ciphertext and tag`
//! (format bytes 1 and 2 are the plain forms of `record`). The associated data binds it to
//! its replica set, its session ID and its header, so a record copied under another session
//! does not open. The nonce is random: 2^32 records per key stay far inside GCM's bound, and
//! keys rotate long before.
//!
//! Keys come from a file of lines `<key ID> <base64 of 32 bytes>` (`#` comments): the first
//! seals, all open. The file is read again when it changes, so a key rotates without a
//! restart: add the new key second (every shim can open it), then move it first.
//!
//! A record that does not open (altered, sealed with a key no longer in the file, plain where
//! only sealed records are accepted) is treated as absent: counted by cause, logged once per
//! cause, never an error answer.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock, RwLock};
use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};

use crate::metrics::Cause;

const FORMAT_SEALED: u8 = 3;
const KEY_BYTES: usize = 32;
const MAX_KEY_ID: usize = 64;
/// Binds the associated data to this use, should the keys ever serve another: a record's
/// items, or one change in its change log (see `redis`), so neither opens as the other.
const RECORD: &[u8] = b"redsess session record v1\0";
const CHANGE: &[u8] = b"redsess session change v1\0";

/// What the store writes, and which records it accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// Write plain records, read plain records (no keys).
    Plain,
    /// Write sealed records, read sealed records only.
    Sealed,
    /// Write sealed, read both: the way from `plain` to `sealed` without losing a session.
    SealMigrating,
    /// Write plain, read both: the way back.
    PlainMigrating,
}

impl Mode {
    fn seals(self) -> bool {
        matches!(self, Mode::Sealed | Mode::SealMigrating)
    }

    fn reads_plain(self) -> bool {
        self != Mode::Sealed
    }

    pub fn needs_keys(self) -> bool {
        self != Mode::Plain
    }
}

/// Why a record was not opened (the metric's `cause`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unopened {
    /// The tag does not match: altered, or moved to another session ID or replica set.
    Tampered,
    /// Sealed with a key ID that the key file does not hold.
    UnknownKey,
    /// A plain record where only sealed ones are accepted.
    Plain,
    /// A sealed record, and this shim has no keys (`plain` mode).
    NoKeys,
    /// Too short to hold a sealed record's header.
    Truncated,
}

impl Unopened {
    const ALL: [Unopened; 5] = [
        Unopened::Tampered,
        Unopened::UnknownKey,
        Unopened::Plain,
        Unopened::NoKeys,
        Unopened::Truncated,
    ];

    pub fn cause(self) -> &'static str {
        match self {
            Unopened::Tampered => "tampered",
            Unopened::UnknownKey => "unknown_key",
            Unopened::Plain => "plain",
            Unopened::NoKeys => "no_keys",
            Unopened::Truncated => "truncated",
        }
    }

    fn explain(self) -> &'static str {
        match self {
            Unopened::Tampered => "its tag does not match (altered, or copied from another session)",
            Unopened::UnknownKey => "it was sealed with a key that is not in the key file",
            Unopened::Plain => {
                "it is plain and --record-encryption is sealed (use seal-migrating while plain records remain)"
            }
            Unopened::NoKeys => "it is sealed and this shim has no keys (--record-encryption plain)",
            Unopened::Truncated => "it is too short to be a sealed record",
        }
    }
}

/// Records not opened, by cause; one counter family for the process (registered by
/// `Metrics`), as one process serves one cache.
pub static UNOPENED: LazyLock<Family<Cause, Counter>> = LazyLock::new(Family::default);
static LOGGED: [AtomicBool; 5] = [const { AtomicBool::new(false) }; 5];

fn count(why: Unopened) {
    UNOPENED.get_or_create(&Cause { cause: why.cause() }).inc();
    let index = Unopened::ALL.iter().position(|u| *u == why).unwrap_or(0);
    if !LOGGED[index].swap(true, Ordering::Relaxed) {
        tracing::warn!(
            cause = why.cause(),
            "a session record was treated as absent: {} (logged once per cause; see redsess_shim_records_unopened_total)",
            why.explain()
        );
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} line {line}: {problem}")]
    Line {
        path: String,
        line: usize,
        problem: &'static str,
    },
    #[error("{path} holds no key")]
    Empty { path: String },
}

pub const KEY_ID_RULE: &str = "a key ID is 1 to 64 of A-Z a-z 0-9 . _ -";

pub fn valid_key_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= MAX_KEY_ID && id.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

struct Key {
    id: String,
    key: LessSafeKey,
}

/// The keys of one version of the key file; the first seals.
pub struct KeyRing {
    keys: Vec<Key>,
}

impl KeyRing {
    /// Parses a key file's text; errors name the line, never a key.
    pub fn parse(path: &str, text: &str) -> Result<KeyRing, KeyFileError> {
        let mut keys: Vec<Key> = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let bad = |problem| KeyFileError::Line {
                path: path.to_string(),
                line: n + 1,
                problem,
            };
            let (id, material) = line
                .split_once(char::is_whitespace)
                .ok_or_else(|| bad("expected `<key ID> <base64 key>`"))?;
            if !valid_key_id(id) {
                return Err(bad(KEY_ID_RULE));
            }
            if keys.iter().any(|k| k.id == id) {
                return Err(bad("this key ID is already in the file"));
            }
            let bytes = STANDARD
                .decode(material.trim())
                .map_err(|_| bad("the key is not base64"))?;
            if bytes.len() != KEY_BYTES {
                return Err(bad("a key is 32 bytes (44 base64 characters)"));
            }
            let key = UnboundKey::new(&AES_256_GCM, &bytes).map_err(|_| bad("not an AES-256 key"))?;
            keys.push(Key {
                id: id.to_string(),
                key: LessSafeKey::new(key),
            });
        }
        if keys.is_empty() {
            return Err(KeyFileError::Empty { path: path.to_string() });
        }
        Ok(KeyRing { keys })
    }

    pub fn load(path: &Path) -> Result<KeyRing, KeyFileError> {
        let text = std::fs::read_to_string(path).map_err(|source| KeyFileError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&path.display().to_string(), &text)
    }

    /// The key IDs, sealing key first (fit for logs).
    pub fn ids(&self) -> Vec<&str> {
        self.keys.iter().map(|k| k.id.as_str()).collect()
    }
}

/// A new key line for the key file: `<id> <base64 of 32 random bytes>`.
pub fn new_key_line(id: Option<&str>) -> String {
    let rng = SystemRandom::new();
    let mut key = [0u8; KEY_BYTES];
    rng.fill(&mut key).expect("the system's random source");
    let id = match id {
        Some(id) => id.to_string(),
        None => {
            let mut tag = [0u8; 4];
            rng.fill(&mut tag).expect("the system's random source");
            format!("k{}", tag.iter().map(|b| format!("{b:02x}")).collect::<String>())
        }
    };
    format!("{id} {}", STANDARD.encode(key))
}

fn associated_data(context: &[u8], replica_set: &str, session_id: &str, header: &[u8]) -> Vec<u8> {
    let mut aad = Vec::with_capacity(context.len() + replica_set.len() + session_id.len() + header.len() + 8);
    aad.extend_from_slice(context);
    for part in [replica_set.as_bytes(), session_id.as_bytes()] {
        aad.extend_from_slice(&(part.len() as u32).to_be_bytes());
        aad.extend_from_slice(part);
    }
    aad.extend_from_slice(header);
    aad
}

/// How one store seals and opens records; the key ring follows its file.
pub struct Sealing {
    mode: Mode,
    ring: RwLock<Option<Arc<KeyRing>>>,
    rng: SystemRandom,
}

impl Sealing {
    pub fn new(mode: Mode, ring: Option<KeyRing>) -> Sealing {
        Sealing {
            mode,
            ring: RwLock::new(ring.map(Arc::new)),
            rng: SystemRandom::new(),
        }
    }

    fn ring(&self) -> Option<Arc<KeyRing>> {
        self.ring.read().expect("key ring lock").clone()
    }

    /// Replaces the keys (a new version of the key file).
    pub fn replace_keys(&self, ring: KeyRing) {
        *self.ring.write().expect("key ring lock") = Some(Arc::new(ring));
    }

    /// Reads `path` again every `every` while `self` lives, taking each version that parses;
    /// a version that does not is logged and the keys in use are kept.
    pub fn follow_key_file(self: &Arc<Self>, path: PathBuf, every: Duration) {
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut last = std::fs::read(&path).ok();
            loop {
                tokio::time::sleep(every).await;
                let Some(sealing) = weak.upgrade() else { return };
                let now = std::fs::read(&path).ok();
                if now.is_none() || now == last {
                    continue;
                }
                let text = String::from_utf8_lossy(now.as_deref().unwrap_or_default()).into_owned();
                match KeyRing::parse(&path.display().to_string(), &text) {
                    Ok(ring) => {
                        tracing::info!(keys = ?ring.ids(), "read the record key file again; the first key seals");
                        sealing.replace_keys(ring);
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "the new record key file is not usable; keeping the keys in use")
                    }
                }
                last = now;
            }
        });
    }

    /// The bytes to store for a record's (plain) items.
    pub fn seal(&self, replica_set: &str, session_id: &str, plain: Vec<u8>) -> Vec<u8> {
        self.seal_as(RECORD, replica_set, session_id, plain)
    }

    /// The bytes to store for one change of a record's items.
    pub fn seal_change(&self, replica_set: &str, session_id: &str, plain: Vec<u8>) -> Vec<u8> {
        self.seal_as(CHANGE, replica_set, session_id, plain)
    }

    fn seal_as(&self, context: &[u8], replica_set: &str, session_id: &str, plain: Vec<u8>) -> Vec<u8> {
        if !self.mode.seals() {
            return plain;
        }
        let ring = self.ring().expect("a sealing mode has keys (checked at start)");
        let key = &ring.keys[0];
        let mut out = Vec::with_capacity(2 + key.id.len() + NONCE_LEN + plain.len() + 16);
        out.push(FORMAT_SEALED);
        out.push(key.id.len() as u8);
        out.extend_from_slice(key.id.as_bytes());
        let header_len = out.len();
        let mut nonce = [0u8; NONCE_LEN];
        self.rng.fill(&mut nonce).expect("the system's random source");
        out.extend_from_slice(&nonce);
        let aad = associated_data(context, replica_set, session_id, &out[..header_len]);
        let mut sealed = plain;
        key.key
            .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(aad), &mut sealed)
            .expect("AES-GCM seals any record size the store takes");
        out.extend_from_slice(&sealed);
        out
    }

    /// The plain items of a stored record, or `None` (counted and logged) when it does not
    /// open: the caller treats the record as absent.
    pub fn open(&self, replica_set: &str, session_id: &str, stored: Vec<u8>) -> Option<Vec<u8>> {
        self.open_as(RECORD, replica_set, session_id, stored)
    }

    /// The plain items of one logged change, or `None` as for `open`.
    pub fn open_change(&self, replica_set: &str, session_id: &str, stored: Vec<u8>) -> Option<Vec<u8>> {
        self.open_as(CHANGE, replica_set, session_id, stored)
    }

    fn open_as(&self, context: &[u8], replica_set: &str, session_id: &str, stored: Vec<u8>) -> Option<Vec<u8>> {
        match self.try_open(context, replica_set, session_id, stored) {
            Ok(plain) => Some(plain),
            Err(why) => {
                count(why);
                None
            }
        }
    }

    fn try_open(
        &self,
        context: &[u8],
        replica_set: &str,
        session_id: &str,
        mut stored: Vec<u8>,
    ) -> Result<Vec<u8>, Unopened> {
        if stored.first() != Some(&FORMAT_SEALED) {
            return if self.mode.reads_plain() {
                Ok(stored)
            } else {
                Err(Unopened::Plain)
            };
        }
        let ring = self.ring().ok_or(Unopened::NoKeys)?;
        let id_len = *stored.get(1).ok_or(Unopened::Truncated)? as usize;
        let header_len = 2 + id_len;
        if stored.len() < header_len + NONCE_LEN + AES_256_GCM.tag_len() {
            return Err(Unopened::Truncated);
        }
        let id = &stored[2..header_len];
        let key = ring
            .keys
            .iter()
            .find(|k| k.id.as_bytes() == id)
            .ok_or(Unopened::UnknownKey)?;
        let nonce = Nonce::try_assume_unique_for_key(&stored[header_len..header_len + NONCE_LEN])
            .map_err(|_| Unopened::Truncated)?;
        let aad = associated_data(context, replica_set, session_id, &stored[..header_len]);
        let body = header_len + NONCE_LEN;
        let plain_len = key
            .key
            .open_within(nonce, Aad::from(aad), &mut stored, body..)
            .map_err(|_| Unopened::Tampered)?
            .len();
        stored.truncate(plain_len);
        Ok(stored)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring(lines: &[&str]) -> KeyRing {
        KeyRing::parse("keys", &lines.join("\n")).unwrap()
    }

    fn unopened(cause: &'static str) -> u64 {
        UNOPENED.get_or_create(&Cause { cause }).get()
    }

    #[test]
    fn a_sealed_record_opens_only_where_it_was_sealed() {
        let a = new_key_line(Some("a"));
        let s = Sealing::new(Mode::Sealed, Some(ring(&[&a])));
        let record = b"\x02items".to_vec();
        let sealed = s.seal("web", "S1", record.clone());
        assert_eq!(sealed[0], FORMAT_SEALED);
        assert!(
            !sealed.windows(5).any(|w| w == b"items"),
            "no plain text in the sealed record"
        );
        assert_eq!(s.open("web", "S1", sealed.clone()), Some(record.clone()));
        // Two seals of one record differ (random nonces).
        assert_ne!(sealed, s.seal("web", "S1", record.clone()));

        let before = unopened("tampered");
        assert_eq!(s.open("web", "S2", sealed.clone()), None, "moved to another ID");
        assert_eq!(
            s.open("api", "S1", sealed.clone()),
            None,
            "moved to another replica set"
        );
        let mut flipped = sealed.clone();
        *flipped.last_mut().unwrap() ^= 1;
        assert_eq!(s.open("web", "S1", flipped), None, "a flipped byte");
        assert!(unopened("tampered") >= before + 3);

        let before = unopened("unknown_key");
        let other = Sealing::new(Mode::Sealed, Some(ring(&[&new_key_line(Some("b"))])));
        assert_eq!(other.open("web", "S1", sealed.clone()), None);
        assert!(unopened("unknown_key") > before);

        let before = unopened("truncated");
        assert_eq!(s.open("web", "S1", sealed[..10].to_vec()), None);
        let change = s.seal_change("web", "S1", record.clone());
        assert_eq!(s.open_change("web", "S1", change.clone()), Some(record.clone()));
        assert_eq!(s.open("web", "S1", change), None, "a change is not a record");
        assert_eq!(
            s.open_change("web", "S1", sealed.clone()),
            None,
            "nor a record a change"
        );
        assert!(unopened("truncated") > before);
    }

    #[test]
    fn modes_decide_what_is_written_and_accepted() {
        let keys = || Some(ring(&[&new_key_line(Some("k1"))]));
        let plain = b"\x02plain".to_vec();
        let sealed_record = Sealing::new(Mode::Sealed, keys());
        assert_eq!(sealed_record.open("web", "S", plain.clone()), None, "plain refused");
        let migrating = Sealing::new(Mode::SealMigrating, keys());
        assert_eq!(migrating.open("web", "S", plain.clone()), Some(plain.clone()));
        assert_eq!(migrating.seal("web", "S", plain.clone())[0], FORMAT_SEALED);
        let back = Sealing::new(Mode::PlainMigrating, keys());
        assert_eq!(back.seal("web", "S", plain.clone()), plain);
        let none = Sealing::new(Mode::Plain, None);
        assert_eq!(none.seal("web", "S", plain.clone()), plain);
        assert_eq!(none.open("web", "S", plain.clone()), Some(plain.clone()));
        let before = unopened("no_keys");
        assert_eq!(none.open("web", "S", migrating.seal("web", "S", plain.clone())), None);
        assert!(unopened("no_keys") > before);
    }

    #[test]
    fn a_rotated_key_file_opens_old_and_new_records() {
        let (old, new) = (new_key_line(Some("old")), new_key_line(Some("new")));
        let s = Sealing::new(Mode::Sealed, Some(ring(&[&old])));
        let before = s.seal("web", "S1", b"\x02one".to_vec());
        // Step 1: the new key second; step 2: first.
        s.replace_keys(ring(&[&old, &new]));
        assert_eq!(s.seal("web", "S2", b"\x02two".to_vec())[2..5], *b"old");
        s.replace_keys(ring(&[&new, &old]));
        let after = s.seal("web", "S3", b"\x02three".to_vec());
        assert_eq!(after[2..5], *b"new");
        assert_eq!(s.open("web", "S1", before), Some(b"\x02one".to_vec()));
        assert_eq!(s.open("web", "S3", after), Some(b"\x02three".to_vec()));
    }

    #[test]
    fn key_file_errors_name_the_line_and_never_the_key() {
        let good = new_key_line(Some("good"));
        let material = good.split_once(' ').unwrap().1.to_string();
        for (text, expected) in [
            ("# only a comment\n", "holds no key"),
            ("justone\n", "line 1: expected"),
            (&format!("{good}\n{good}\n"), "line 2: this key ID is already"),
            ("bad/id AAAA\n", "line 1: a key ID"),
            ("k1 !!!\n", "line 1: the key is not base64"),
            ("k1 AAAA\n", "line 1: a key is 32 bytes"),
        ] {
            let e = KeyRing::parse("keys", text).map(|_| ()).unwrap_err().to_string();
            assert!(e.contains(expected), "{text:?}: {e}");
            assert!(!e.contains(&material));
        }
        assert_eq!(ring(&["# keys", "", &good]).ids(), ["good"]);
    }

    #[test]
    fn new_keys_are_random_and_parse() {
        let (a, b) = (new_key_line(None), new_key_line(None));
        assert_ne!(a, b);
        assert!(a.starts_with('k'));
        assert_eq!(ring(&[&a, &b]).ids().len(), 2);
    }
}
