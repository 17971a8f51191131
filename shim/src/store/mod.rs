//! Where sessions, replica-set membership and key material live. One trait, two stores:
//! `memory` (embedded, one process) and `redis` (shared by any number of shims). Every
//! operation that must be atomic is atomic inside the store; the session rules above it
//! (versions, limits, lifetimes) decide what to ask for.

pub mod memory;
pub mod record;
pub mod redis;
pub mod sealing;

use async_trait::async_trait;
use tokio::sync::broadcast;

use crate::dsc::{AnswerItems, DataItem};

/// When a stored session must disappear, as the session rules computed it (skew included).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lifetime {
    /// Absolute end of the session's life, unix seconds.
    pub ends_at: i64,
    /// Seconds without activity after which it ends; 0 when it has no inactivity timeout.
    pub idle_secs: i64,
}

impl Lifetime {
    /// The instant the store drops the session when it was last active at `touched`.
    pub fn expires_at(&self, touched: i64) -> i64 {
        if self.idle_secs > 0 {
            self.ends_at.min(touched.saturating_add(self.idle_secs))
        } else {
            self.ends_at
        }
    }
}

/// Whether a read records the session's activity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Touch {
    /// A look that records nothing (changeSession's read, the idle decision, listings).
    No,
    /// Records activity unless the last recorded is less than this many seconds old. A read
    /// of a session touched that recently stays a plain read (one Redis command, no script);
    /// its inactivity end then lags by less than this, which the clock-skew tolerance covers.
    UnlessWithin(i64),
}

impl Touch {
    /// Records activity on every read (in whole seconds: unless already recorded this second).
    pub const ALWAYS: Touch = Touch::UnlessWithin(1);

    /// Whether a read at `now` of a session last touched at `touched` records activity.
    pub fn due(self, touched: i64, now: i64) -> bool {
        match self {
            Touch::No => false,
            Touch::UnlessWithin(secs) => now.saturating_sub(touched) >= secs.max(1),
        }
    }
}

/// A session as stored: its items in first-stored order and what the rules need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub version: u64,
    pub items: Vec<DataItem>,
    pub lifetime: Lifetime,
    /// Unix seconds of the newest activity any shim saw (create, get, change).
    pub touched: i64,
    /// Unix seconds of creation.
    pub created: i64,
    /// The identity used for concurrent-session counting and listing, if the session has one.
    pub user: Option<String>,
    /// Random, fixed at creation: tells this session from a later one under the same ID, so
    /// that a change or an idle decision made on the old one cannot land on the new one.
    pub incarnation: u64,
    /// The replica that created it (a createSession retried by it is not "ID in use").
    pub creator: String,
}

impl Session {
    /// Whether it is still usable at `now`; an ended session is invisible on every store,
    /// whether or not the store has dropped it yet.
    pub fn is_live(&self, now: i64) -> bool {
        self.lifetime.expires_at(self.touched) > now
    }
}

/// A changeSession as the store applies it: atomically, only to the session it was based on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replacement {
    /// The version the change was based on; the stored session must still have it.
    pub expected_version: u64,
    /// The user the session was counted for when it was read.
    pub previous_user: Option<String>,
    /// The session as it is to be stored (its incarnation is the one read).
    pub session: Session,
    /// Applied when the change moves the session to another user.
    pub limit: SessionLimit,
    pub now: i64,
}

/// A changeSession that only updates items (`items::reshapes` is false for them): the store
/// applies it without the session layer reading the session first, the lifetime and user
/// staying as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ItemUpdate<'a> {
    /// The version the client based the change on; the stored session must still have it.
    pub expected_version: u64,
    pub items: &'a [DataItem],
    pub now: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpdateOutcome {
    Updated {
        version: u64,
    },
    NotFound,
    VersionMismatch {
        stored: u64,
    },
    /// The update names the item that identifies the session's user, or the store would rather
    /// write the record whole (see `redis`): read the session and replace it instead.
    NeedsReplacement,
}

/// The concurrent-session rule for one new session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionLimit {
    /// At most this many sessions per user; 0 = no limit.
    pub max: u32,
    /// Past the limit, end the oldest sessions instead of refusing the new one.
    pub displace: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CreateOutcome {
    Created { displaced: Vec<String> },
    IdInUse,
    LimitReached,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplaceOutcome {
    Replaced {
        displaced: Vec<String>,
    },
    NotFound,
    /// The stored session has another version, or is another session under the same ID.
    VersionMismatch {
        stored: u64,
    },
    /// The change moves the session to a user who is at the limit, without displacement.
    LimitReached,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub replica: String,
    pub instance: String,
    pub joined: i64,
    pub last_seen: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JoinOutcome {
    Joined,
    CapabilityMismatch {
        expected: u64,
    },
    InstanceOwnedBy {
        replica: String,
    },
    /// The set has as many live members as it may (`max_members`).
    Full {
        max: u32,
    },
}

/// A replica set's key material: the current key and the one before it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyMaterial {
    pub current: String,
    pub current_id: u64,
    pub previous: String,
    pub previous_id: u64,
    /// Unix seconds when the current key was made.
    pub created: i64,
}

/// Sees one session of a scan: its ID and the session.
pub type SessionVisitor<'v> = dyn for<'a> FnMut(&'a str, &'a Session) + Send + 'v;

/// Sees one user of an index walk: the user and their live session IDs, oldest first.
pub type UserVisitor<'v> = dyn for<'a> FnMut(&'a str, &'a [String]) + Send + 'v;

/// A key rotation somewhere in the cache: the replica set's name, or `None` when the store
/// may have missed rotations (reconnected) and every waiter should look again.
pub type Rotation = Option<String>;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the session store is unavailable: {0}")]
    Unavailable(String),
    #[error("the session store holds a record it cannot read: {0}")]
    Corrupt(String),
    #[error(
        "the write reached {acked} of the {wanted} Redis replicas it must reach (--redis-wait-replicas) within \
         {within:?}: it is on the primary but may be lost if the primary fails before they catch up"
    )]
    NotDurable {
        acked: i64,
        wanted: u32,
        within: std::time::Duration,
    },
}

impl StoreError {
    /// The fault cause it is counted under.
    pub fn cause(&self) -> &'static str {
        match self {
            StoreError::Unavailable(_) => "store_unavailable",
            StoreError::Corrupt(_) => "store_corrupt",
            StoreError::NotDurable { .. } => "not_durable",
        }
    }
}

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Stores a new session unless the ID exists; with a user and a limit, counts the user's
    /// live sessions and refuses or displaces the oldest, all in one atomic step. Each create
    /// also drops the user's index entries whose sessions ended, so an index never keeps dead
    /// entries without bound.
    async fn create_session(
        &self,
        replica_set: &str,
        session_id: &str,
        session: &Session,
        limit: &SessionLimit,
        now: i64,
    ) -> Result<CreateOutcome, StoreError>;

    /// Reads a session; `touch` says whether the read records activity at `now` (and extends
    /// the expiry with it). The session comes back as it was read.
    async fn get_session(
        &self,
        replica_set: &str,
        session_id: &str,
        touch: Touch,
        now: i64,
    ) -> Result<Option<Session>, StoreError>;

    /// getSession's read: the session's version and its items as the answer writes them,
    /// activity recorded as `touch` says (as `get_session` would). A store may read less for
    /// it, and leave the items undecoded.
    async fn session_answer(
        &self,
        replica_set: &str,
        session_id: &str,
        touch: Touch,
        now: i64,
    ) -> Result<Option<(u64, AnswerItems)>, StoreError> {
        Ok(self
            .get_session(replica_set, session_id, touch, now)
            .await?
            .map(|s| (s.version, AnswerItems::Items(s.items))))
    }

    /// Replaces a session that is still the one the change was based on (its incarnation and
    /// `expected_version`). A change of user moves the index entry and applies the limit to
    /// the new user as a create would, in the same atomic step.
    async fn replace_session(
        &self,
        replica_set: &str,
        session_id: &str,
        change: &Replacement,
    ) -> Result<ReplaceOutcome, StoreError>;

    /// Merges `update.items` into a live session still at `update.expected_version`, in one
    /// atomic step: the version incremented, activity recorded at `update.now` and the expiry
    /// extended with it. Never changes the lifetime or the user: an update naming the user's
    /// key item is `NeedsReplacement`.
    async fn update_items(
        &self,
        replica_set: &str,
        session_id: &str,
        update: &ItemUpdate<'_>,
    ) -> Result<UpdateOutcome, StoreError>;

    /// Deletes a session and its index entry; false when it did not exist.
    async fn delete_session(&self, replica_set: &str, session_id: &str) -> Result<bool, StoreError>;

    /// Deletes the session only if it is unchanged since `seen` was read (same incarnation,
    /// version and last activity): a touch through any shim in between keeps it.
    async fn end_if_unchanged(&self, replica_set: &str, session_id: &str, seen: &Session) -> Result<bool, StoreError>;

    /// The live sessions of one user, oldest first: earliest created, and in the order the
    /// store received them within one second, ties broken by ID.
    async fn user_sessions(&self, replica_set: &str, user: &str, now: i64) -> Result<Vec<String>, StoreError>;

    /// Walks every live session of a replica set (an administrative scan, O(sessions) in time
    /// but holding one page at a time); `visit` sees each once, in no particular order.
    async fn scan_sessions(
        &self,
        replica_set: &str,
        now: i64,
        visit: &mut SessionVisitor<'_>,
    ) -> Result<(), StoreError>;

    /// Walks the user index: every user matching `pattern` (`*` wildcards) with live sessions,
    /// and their session IDs, oldest first; one page at a time, reading no session.
    async fn scan_users(
        &self,
        replica_set: &str,
        pattern: &str,
        now: i64,
        visit: &mut UserVisitor<'_>,
    ) -> Result<(), StoreError>;

    /// Adds a replica to a set, enforcing the set's capability mask, instance ownership and
    /// `max_members` (0 = no bound). Members last seen before `stale_before` leave the set
    /// first. O(log n) in the set's members: no join reads them all.
    async fn join(
        &self,
        replica_set: &str,
        member: &Member,
        capabilities: u64,
        stale_before: i64,
        max_members: u32,
    ) -> Result<JoinOutcome, StoreError>;

    /// Records that a member was heard from; false (and nothing recorded) when it is not one.
    async fn heartbeat(&self, replica_set: &str, replica: &str, now: i64) -> Result<bool, StoreError>;

    /// Removes a replica from every set; returns the sets it left.
    async fn leave(&self, replica: &str) -> Result<Vec<String>, StoreError>;

    /// The members heard from since `stale_before`; the others leave the set, in the same
    /// atomic step (a heartbeat cannot fall between the decision and the removal).
    async fn members(&self, replica_set: &str, stale_before: i64) -> Result<Vec<Member>, StoreError>;

    /// Every replica set ever joined, sorted.
    async fn replica_sets(&self) -> Result<Vec<String>, StoreError>;

    /// The set's key material, made from `candidate` when the set has none yet.
    async fn key_material(&self, replica_set: &str, candidate: &str, now: i64) -> Result<KeyMaterial, StoreError>;

    /// Replaces the current key with `candidate` when it is older than `interval_secs`;
    /// exactly one of several shims racing wins. Announces the rotation to every shim.
    async fn rotate_key(
        &self,
        replica_set: &str,
        candidate: &str,
        now: i64,
        interval_secs: i64,
    ) -> Result<Option<KeyMaterial>, StoreError>;

    /// Rotations announced by any shim sharing this store.
    fn rotations(&self) -> broadcast::Receiver<Rotation>;

    /// Succeeds when the store answers.
    async fn ping(&self) -> Result<(), StoreError>;

    /// What the server behind the store says of itself, for the metrics; `None` for a store
    /// with no server (the embedded one).
    async fn health(&self) -> Result<Option<ServerHealth>, StoreError> {
        Ok(None)
    }
}

/// Redis as the shim sees it (`INFO replication`, `INFO memory` on the server it writes to).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServerHealth {
    /// The server the shim writes to is a primary.
    pub primary: bool,
    /// Replicas connected to it and streaming.
    pub connected_replicas: i64,
    /// How far the furthest replica is behind, in bytes of the replication stream.
    pub replication_lag_bytes: i64,
    pub used_memory_bytes: i64,
    /// 0 when Redis has no `maxmemory`.
    pub max_memory_bytes: i64,
}

impl ServerHealth {
    /// From the text of `INFO replication` and `INFO memory` (`name:value` lines).
    pub fn from_info(info: &str) -> Self {
        let field = |name: &str| {
            info.lines()
                .find_map(|l| l.trim_end().strip_prefix(name)?.strip_prefix(':'))
                .map(str::to_string)
        };
        let number = |name: &str| field(name).and_then(|v| v.parse::<i64>().ok()).unwrap_or(0);
        let primary_offset = number("master_repl_offset");
        // slaveN:ip=…,port=…,state=online,offset=…,lag=…
        let replicas: Vec<(bool, i64)> = info
            .lines()
            .filter(|l| l.starts_with("slave") && l.contains(":ip="))
            .map(|l| {
                let attr = |name: &str| {
                    l.split([':', ','])
                        .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
                        .unwrap_or("")
                };
                (attr("state") == "online", attr("offset").parse().unwrap_or(0))
            })
            .collect();
        ServerHealth {
            primary: field("role").as_deref() == Some("master"),
            connected_replicas: replicas.iter().filter(|(online, _)| *online).count() as i64,
            replication_lag_bytes: replicas
                .iter()
                .map(|(_, offset)| (primary_offset - offset).max(0))
                .max()
                .unwrap_or(0),
            used_memory_bytes: number("used_memory"),
            max_memory_bytes: number("maxmemory"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_reads_info() {
        let info = "# Replication\r\nrole:master\r\nconnected_slaves:2\r\n\
            slave0:ip=10.0.0.2,port=6379,state=online,offset=1000,lag=0\r\n\
            slave1:ip=10.0.0.3,port=6379,state=wait_bgsave,offset=0,lag=7\r\n\
            master_repl_offset:1500\r\n# Memory\r\nused_memory:2048\r\nused_memory_human:2K\r\nmaxmemory:8192\r\n";
        assert_eq!(
            ServerHealth::from_info(info),
            ServerHealth {
                primary: true,
                connected_replicas: 1,
                replication_lag_bytes: 1500,
                used_memory_bytes: 2048,
                max_memory_bytes: 8192,
            }
        );
        assert!(!ServerHealth::from_info("role:slave\r\n").primary);
    }

    #[test]
    fn expiry_is_the_earlier_of_lifetime_and_idleness() {
        let l = Lifetime {
            ends_at: 1000,
            idle_secs: 100,
        };
        assert_eq!(l.expires_at(500), 600);
        assert_eq!(l.expires_at(950), 1000);
        let no_idle = Lifetime {
            ends_at: 1000,
            idle_secs: 0,
        };
        assert_eq!(no_idle.expires_at(500), 1000);
    }
}
