//! The rules of the cache: versions, lifetimes, concurrent-session limits, the idle-timeout
//! decision, replica-set membership and key material. Written against the `Store` trait;
//! knows nothing of XML or Redis.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::distr::{Alphanumeric, SampleString};
use tokio::sync::{broadcast, watch};
use tokio::time::Instant;

use crate::dsc::{
    wildcard_match, AdminRequest, AttributeGroup, ChangeSession, CreateSession, DataItem, GetUpdates, JoinReplicaSet,
    KeyAnswer, Request, Response, ResultCode, SessionRef, TerminateSession,
};
use crate::items::{class, item_number, merge, reshapes, user_of};
use crate::store::{
    CreateOutcome, ItemUpdate, JoinOutcome, KeyMaterial, Lifetime, Member, ReplaceOutcome, Replacement, Session,
    SessionLimit, Store, StoreError, Touch, UpdateOutcome,
};

/// The default replica set for a getUpdates whose replica joined none.
const DEFAULT_REPLICA_SET: &str = "default";
/// How long a membership confirmed by the store is trusted without asking again.
const MEMBERSHIP_CACHE: Duration = Duration::from_secs(30);
/// Replica activity waiting for the next flush, at most; a flood of made-up replica names
/// cannot grow it (activity past it is dropped until the flush; heartbeats are best effort).
const MAX_PENDING_HEARTBEATS: usize = 10_000;
/// Confirmed memberships remembered, at most (strict mode).
const MAX_MEMBERSHIPS_SEEN: usize = 10_000;
/// A long poll is never held longer than this, whatever `responseBy` asks.
const MAX_POLL_HOLD: Duration = Duration::from_secs(600);

#[derive(Debug, Clone)]
pub struct Settings {
    pub realm: String,
    /// When set, only these replica sets are served.
    pub replica_sets: Option<Vec<String>>,
    pub max_lifetime_secs: i64,
    pub clock_skew_secs: i64,
    /// The shim's own concurrent-session rule, applied with WebSEAL's `sessionLimit`.
    pub session_limit: SessionLimit,
    /// Key rotation interval; `None` = never.
    pub key_rotation_secs: Option<i64>,
    /// Replicas not heard from for this long leave their sets.
    pub replica_timeout_secs: i64,
    /// Refuse session operations from replicas that have not joined the replica set.
    pub strict_membership: bool,
    /// Without `replica_sets`, the most replica sets the cache takes on; a new one past it
    /// is refused (0 = no bound).
    pub max_replica_sets: usize,
    /// The most live members of one replica set; a new one past it is refused (0 = no bound).
    pub max_replicas: u32,
}

impl Settings {
    /// How long a getSession may leave the last recorded activity as it is: a quarter of the
    /// clock-skew tolerance (45 s at the default 3 minutes), at least a second, at most a
    /// minute. Most reads are then one plain Redis read. Every end already has the whole
    /// tolerance added, and the idle decision waits this much longer, so a session read within
    /// its inactivity timeout is never ended as idle.
    pub fn touch_granularity_secs(&self) -> i64 {
        (self.clock_skew_secs / 4).clamp(1, 60)
    }

    /// How getSession records activity (see `touch_granularity_secs`).
    pub fn read_touch(&self) -> Touch {
        Touch::UnlessWithin(self.touch_granularity_secs())
    }
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            realm: "ISAM-Distributed-Session-Cache".into(),
            replica_sets: None,
            max_lifetime_secs: 24 * 3600,
            clock_skew_secs: 180,
            session_limit: SessionLimit {
                max: 0,
                displace: false,
            },
            key_rotation_secs: None,
            replica_timeout_secs: 600,
            strict_membership: false,
            max_replica_sets: 64,
            max_replicas: 256,
        }
    }
}

pub type Clock = Arc<dyn Fn() -> i64 + Send + Sync>;

/// The newest activity heard from each replica of each replica set since the last flush, for
/// at most `MAX_PENDING_HEARTBEATS` pairs. By set, then replica: recording a pair already
/// pending, as nearly every request does, allocates nothing.
#[derive(Default)]
struct PendingActivity {
    by_set: HashMap<String, HashMap<String, i64>>,
    pairs: usize,
}

impl PendingActivity {
    fn record(&mut self, replica_set: &str, replica: &str, at: i64) {
        if let Some(seen) = self.by_set.get_mut(replica_set).and_then(|r| r.get_mut(replica)) {
            *seen = at;
        } else if self.pairs < MAX_PENDING_HEARTBEATS {
            self.by_set
                .entry(replica_set.to_string())
                .or_default()
                .insert(replica.to_string(), at);
            self.pairs += 1;
        }
    }

    /// Everything pending, as (replica set, replica, newest activity); none is left.
    fn drain(&mut self) -> Vec<(String, String, i64)> {
        self.pairs = 0;
        self.by_set
            .drain()
            .flat_map(|(set, replicas)| replicas.into_iter().map(move |(r, at)| (set.clone(), r, at)))
            .collect()
    }

    fn forget_replica(&mut self, replica: &str) {
        for replicas in self.by_set.values_mut() {
            if replicas.remove(replica).is_some() {
                self.pairs -= 1;
            }
        }
        self.by_set.retain(|_, replicas| !replicas.is_empty());
    }
}

pub struct SessionService {
    store: Arc<dyn Store>,
    settings: Settings,
    clock: Clock,
    /// Activity seen here, written to the store in batches so that session operations stay
    /// one store call.
    heard_from: Mutex<PendingActivity>,
    /// (replica set, replica) → when the store last confirmed the membership (strict mode).
    members_seen: Mutex<HashMap<(String, String), Instant>>,
    /// Replica sets the store is known to have (at most `max_replica_sets`).
    known_sets: Mutex<HashSet<String>>,
    shutdown: watch::Receiver<bool>,
}

impl SessionService {
    pub fn new(store: Arc<dyn Store>, settings: Settings, clock: Clock, shutdown: watch::Receiver<bool>) -> Self {
        Self {
            store,
            settings,
            clock,
            heard_from: Mutex::new(PendingActivity::default()),
            members_seen: Mutex::new(HashMap::new()),
            known_sets: Mutex::new(HashSet::new()),
            shutdown,
        }
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    fn now(&self) -> i64 {
        (self.clock)()
    }

    /// Answers one request. Errors are the store's: the caller turns them into a fault.
    pub async fn handle(&self, request: Request) -> Result<Response, StoreError> {
        if let Some(set) = replica_set_of(&request) {
            if !self.serves(set) {
                return Ok(Response::refusal(
                    request.operation(),
                    ResultCode::ReplicaSetNotConfigured,
                ));
            }
        }
        if let Some(set) = new_replica_set_of(&request) {
            if !self.admits_replica_set(set).await? {
                return Ok(Response::refusal(
                    request.operation(),
                    ResultCode::ReplicaSetNotConfigured,
                ));
            }
        }
        if let Some((set, replica)) = member_of(&request) {
            if let Some(refusal) = self.check_membership(set, replica).await? {
                return Ok(Response::refusal(request.operation(), refusal));
            }
        }
        match request {
            Request::JoinReplicaSet(r) => self.join(r).await,
            Request::ReplicaShutdown { replica } => self.replica_shutdown(&replica).await,
            Request::Ping => Ok(Response::Bare {
                operation: "ping",
                result: ResultCode::Success,
            }),
            Request::GetRealmName { replica, replica_set } => {
                self.heard(&replica_set, &replica);
                Ok(Response::GetRealmName {
                    result: ResultCode::Success,
                    realm: self.settings.realm.clone(),
                })
            }
            Request::GetUpdates(r) => self.get_updates(r).await,
            Request::CreateSession(r) => self.create(r).await,
            Request::GetSession(r) => self.get(r).await,
            Request::ChangeSession(r) => self.change(r).await,
            Request::IdleTimeout(r) => self.idle_timeout(r).await,
            Request::TerminateSession(r) => self.terminate(r).await,
            Request::Execute(r) => self.execute(r).await,
        }
    }

    fn serves(&self, replica_set: &str) -> bool {
        self.settings
            .replica_sets
            .as_ref()
            .is_none_or(|sets| sets.iter().any(|s| s == replica_set))
    }

    /// Whether a request may give the cache the replica set `set` (a join, a poll): always
    /// when the sets are configured (the list is the bound), else while the cache has fewer
    /// than `max_replica_sets`, so that made-up names cannot grow it without end.
    async fn admits_replica_set(&self, set: &str) -> Result<bool, StoreError> {
        let max = self.settings.max_replica_sets;
        if self.settings.replica_sets.is_some() || max == 0 {
            return Ok(true);
        }
        if self.known_sets.lock().unwrap_or_else(|e| e.into_inner()).contains(set) {
            return Ok(true);
        }
        let sets = self.store.replica_sets().await?;
        let admitted = sets.len() < max || sets.iter().any(|s| s == set);
        let mut known = self.known_sets.lock().unwrap_or_else(|e| e.into_inner());
        known.extend(sets.into_iter().take(max));
        if admitted {
            if known.len() < max {
                known.insert(set.to_string());
            }
        } else {
            tracing::warn!(
                replica_set = set,
                max,
                "refused a new replica set: the cache has as many as it may (--max-replica-sets)"
            );
        }
        Ok(admitted)
    }

    /// In strict mode: `None` when the replica is a member of the set, else the refusal.
    /// A confirmed membership is cached briefly so the hot path stays one store call.
    async fn check_membership(&self, replica_set: &str, replica: &str) -> Result<Option<ResultCode>, StoreError> {
        if !self.settings.strict_membership {
            return Ok(None);
        }
        let key = (replica_set.to_string(), replica.to_string());
        let fresh = {
            let seen = self.members_seen.lock().unwrap_or_else(|e| e.into_inner());
            seen.get(&key).is_some_and(|at| at.elapsed() < MEMBERSHIP_CACHE)
        };
        if fresh {
            return Ok(None);
        }
        let now = self.now();
        if self.store.heartbeat(replica_set, replica, now).await? {
            self.remember_member(replica_set, replica);
            return Ok(None);
        }
        for set in self.store.replica_sets().await? {
            if set != replica_set && self.store.heartbeat(&set, replica, now).await? {
                return Ok(Some(ResultCode::ReplicaSetNotJoined));
            }
        }
        Ok(Some(ResultCode::NotRegistered))
    }

    fn remember_member(&self, replica_set: &str, replica: &str) {
        if self.settings.strict_membership {
            let mut seen = self.members_seen.lock().unwrap_or_else(|e| e.into_inner());
            if seen.len() >= MAX_MEMBERSHIPS_SEEN {
                seen.retain(|_, at| at.elapsed() < MEMBERSHIP_CACHE);
                if seen.len() >= MAX_MEMBERSHIPS_SEEN {
                    seen.clear();
                }
            }
            seen.insert((replica_set.to_string(), replica.to_string()), Instant::now());
        }
    }

    fn heard(&self, replica_set: &str, replica: &str) {
        let now = self.now();
        self.heard_from
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .record(replica_set, replica, now);
    }

    /// Writes the activity heard since the last flush to the store.
    pub async fn flush_heartbeats(&self) -> Result<(), StoreError> {
        let batch = self.heard_from.lock().unwrap_or_else(|e| e.into_inner()).drain();
        for (set, replica, at) in batch {
            self.store.heartbeat(&set, &replica, at).await?;
        }
        Ok(())
    }

    /// Rotates every replica set's key that is due; one shim of many wins each rotation.
    pub async fn rotate_due_keys(&self) -> Result<usize, StoreError> {
        let Some(interval) = self.settings.key_rotation_secs else {
            return Ok(0);
        };
        let mut rotated = 0;
        for set in self.store.replica_sets().await? {
            if self
                .store
                .rotate_key(&set, &new_key(), self.now(), interval)
                .await?
                .is_some()
            {
                tracing::info!(replica_set = %set, "rotated the replica set's key");
                rotated += 1;
            }
        }
        Ok(rotated)
    }

    async fn keys(&self, replica_set: &str) -> Result<KeyMaterial, StoreError> {
        self.store.key_material(replica_set, &new_key(), self.now()).await
    }

    fn key_age(&self, keys: &KeyMaterial) -> i64 {
        match self.settings.key_rotation_secs {
            Some(_) => (self.now() - keys.created).max(0),
            None => -1,
        }
    }

    async fn join(&self, r: JoinReplicaSet) -> Result<Response, StoreError> {
        let now = self.now();
        let member = Member {
            replica: r.replica.clone(),
            instance: r.instance.clone(),
            joined: now,
            last_seen: now,
        };
        let stale_before = now - self.settings.replica_timeout_secs;
        let result = match self
            .store
            .join(
                &r.replica_set,
                &member,
                r.capabilities,
                stale_before,
                self.settings.max_replicas,
            )
            .await?
        {
            JoinOutcome::Joined => {
                let keys = self.keys(&r.replica_set).await?;
                self.remember_member(&r.replica_set, &r.replica);
                tracing::info!(replica = %r.replica, replica_set = %r.replica_set, "replica joined");
                return Ok(Response::JoinReplicaSet {
                    result: ResultCode::Success,
                    keys: Some(KeyAnswer {
                        current_key_age: self.key_age(&keys),
                        current_key: keys.current,
                        current_key_id: keys.current_id,
                        old_key: keys.previous,
                        old_key_id: keys.previous_id,
                    }),
                });
            }
            JoinOutcome::CapabilityMismatch { expected } => {
                tracing::warn!(replica = %r.replica, replica_set = %r.replica_set, expected, offered = r.capabilities,
                    "refused a join: its capability mask differs from the replica set's");
                ResultCode::CapabilityMismatch
            }
            JoinOutcome::Full { max } => {
                tracing::warn!(replica = %r.replica, replica_set = %r.replica_set, max,
                    "refused a join: the replica set has as many live members as it may (--max-replicas)");
                ResultCode::ReplicaSetNotConfigured
            }
            JoinOutcome::InstanceOwnedBy { replica } => {
                tracing::warn!(replica = %r.replica, owner = %replica, "refused a join: the instance ID belongs to another replica");
                ResultCode::InstanceOwnedByAnother
            }
        };
        Ok(Response::refusal("joinReplicaSet", result))
    }

    async fn replica_shutdown(&self, replica: &str) -> Result<Response, StoreError> {
        let left = self.store.leave(replica).await?;
        self.heard_from
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .forget_replica(replica);
        self.members_seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|(_, r), _| r != replica);
        tracing::info!(replica, sets = ?left, "replica shut down");
        Ok(Response::Bare {
            operation: "replicaShutdown",
            result: ResultCode::Success,
        })
    }

    /// The long poll: answers when a key of the replica's sets rotates, just before
    /// `responseBy` runs out, or when the shim shuts down. Waits on a channel, never a thread.
    async fn get_updates(&self, r: GetUpdates) -> Result<Response, StoreError> {
        let deadline = Instant::now() + poll_hold(r.response_by_secs);
        // Subscribe before reading keys so no rotation falls between the two.
        let mut rotations = self.store.rotations();
        let now = self.now();
        let sets = match &r.replica_set {
            Some(set) => {
                self.store.heartbeat(set, &r.replica, now).await?;
                vec![set.clone()]
            }
            None => {
                let mut joined = Vec::new();
                for set in self.store.replica_sets().await? {
                    if self.store.heartbeat(&set, &r.replica, now).await? {
                        joined.push(set);
                    }
                }
                if joined.is_empty() {
                    joined.push(DEFAULT_REPLICA_SET.to_string());
                }
                joined
            }
        };
        let mut before = Vec::with_capacity(sets.len());
        for set in &sets {
            before.push(self.keys(set).await?);
        }
        let mut shutdown = self.shutdown.clone();
        let answer = |k: &KeyMaterial| Response::GetUpdates {
            result: ResultCode::Success,
            new_key: k.current.clone(),
            new_key_id: k.current_id,
        };
        loop {
            if *shutdown.borrow() {
                break;
            }
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => break,
                _ = shutdown.changed() => break,
                rotation = rotations.recv() => {
                    match rotation {
                        Ok(Some(set)) if !sets.contains(&set) => continue,
                        Err(broadcast::error::RecvError::Closed) => {
                            tokio::time::sleep_until(deadline).await;
                            break;
                        }
                        _ => {}
                    }
                    for (set, old) in sets.iter().zip(&before) {
                        let keys = self.keys(set).await?;
                        if keys.current_id != old.current_id || keys.current != old.current {
                            return Ok(answer(&keys));
                        }
                    }
                }
            }
        }
        Ok(answer(&self.keys(&sets[0]).await?))
    }

    /// When a session ends: its `expiry` item capped by the maximum lifetime, and its
    /// inactivity timeout, each with the clock-skew tolerance added.
    fn lifetime(&self, items: &[DataItem], created: i64) -> Lifetime {
        let cap = created.saturating_add(self.settings.max_lifetime_secs);
        // An expiry before the creation (a clock far off, or a hostile value) counts as the
        // creation: the session lives out the skew tolerance. Clamped, later arithmetic on it
        // (milliseconds for Redis) cannot overflow.
        let end = item_number(items, class::EXPIRY).map_or(cap, |e| e.clamp(created.min(cap), cap));
        let idle = item_number(items, class::INACTIVITY_TIMEOUT).unwrap_or(0).max(0);
        Lifetime {
            ends_at: end.saturating_add(self.settings.clock_skew_secs),
            idle_secs: if idle > 0 {
                idle.saturating_add(self.settings.clock_skew_secs)
            } else {
                0
            },
        }
    }

    /// WebSEAL's `sessionLimit` (0 none, n > 0 refuse past n, n < 0 displace past |n|)
    /// combined with the shim's own rule: the stricter limit wins.
    fn effective_limit(&self, requested: i64) -> SessionLimit {
        let own = &self.settings.session_limit;
        let asked = SessionLimit {
            max: requested.unsigned_abs().min(u32::MAX as u64) as u32,
            displace: requested < 0,
        };
        match (asked.max, own.max) {
            (0, _) => own.clone(),
            (_, 0) => asked,
            (a, o) if o < a => own.clone(),
            _ => asked,
        }
    }

    async fn create(&self, r: CreateSession) -> Result<Response, StoreError> {
        self.heard(&r.replica_set, &r.replica);
        let now = self.now();
        let session = Session {
            version: 0,
            lifetime: self.lifetime(&r.data, now),
            user: user_of(&r.data),
            items: r.data,
            touched: now,
            created: now,
            incarnation: rand::random(),
            creator: r.replica.clone(),
        };
        let limit = self.effective_limit(r.session_limit);
        let result = match self
            .store
            .create_session(&r.replica_set, &r.session_id, &session, &limit, now)
            .await?
        {
            CreateOutcome::Created { displaced } => {
                log_displaced(&r.replica_set, &displaced);
                ResultCode::Success
            }
            CreateOutcome::IdInUse if self.is_retry(&r.replica_set, &r.session_id, &session, now).await? => {
                tracing::debug!(replica = %r.replica, "a repeated createSession found its session stored");
                ResultCode::Success
            }
            CreateOutcome::IdInUse => ResultCode::SessionIdInUse,
            CreateOutcome::LimitReached => ResultCode::SessionLimitReached,
        };
        Ok(Response::SessionChange {
            operation: "createSession",
            result,
            version: 0,
            stack_depth: 1,
        })
    }

    /// Whether the stored session is the one `asked` would create: a createSession retried
    /// by the same replica after a timeout whose first attempt was stored. It has not been
    /// changed since, so answering success loses nothing.
    async fn is_retry(
        &self,
        replica_set: &str,
        session_id: &str,
        asked: &Session,
        now: i64,
    ) -> Result<bool, StoreError> {
        Ok(self
            .store
            .get_session(replica_set, session_id, Touch::No, now)
            .await?
            .is_some_and(|stored| {
                stored.version == 0 && stored.creator == asked.creator && stored.items == asked.items
            }))
    }

    async fn get(&self, r: SessionRef) -> Result<Response, StoreError> {
        self.heard(&r.replica_set, &r.replica);
        Ok(
            match self
                .store
                .session_answer(&r.replica_set, &r.session_id, self.settings.read_touch(), self.now())
                .await?
            {
                Some((version, data)) => Response::GetSession {
                    result: ResultCode::Success,
                    version,
                    data,
                },
                None => Response::refusal("getSession", ResultCode::SessionNotFound),
            },
        )
    }

    async fn change(&self, r: ChangeSession) -> Result<Response, StoreError> {
        self.heard(&r.replica_set, &r.replica);
        let now = self.now();
        let answer = |result, version| Response::SessionChange {
            operation: "changeSession",
            result,
            version,
            stack_depth: 1,
        };
        // Most changes (WebSEAL's last-access updates) touch neither the lifetime nor the user:
        // the store merges them itself, in one step, with no read before.
        if !reshapes(&r.data) {
            let update = ItemUpdate {
                expected_version: r.version,
                items: &r.data,
                now,
            };
            match self.store.update_items(&r.replica_set, &r.session_id, &update).await? {
                UpdateOutcome::Updated { version } => return Ok(answer(ResultCode::Success, version)),
                UpdateOutcome::NotFound => return Ok(answer(ResultCode::SessionNotFound, 0)),
                UpdateOutcome::VersionMismatch { stored } => return Ok(answer(ResultCode::StaleVersion, stored)),
                UpdateOutcome::NeedsReplacement => {}
            }
        }
        let Some(stored) = self
            .store
            .get_session(&r.replica_set, &r.session_id, Touch::No, now)
            .await?
        else {
            return Ok(answer(ResultCode::SessionNotFound, 0));
        };
        if stored.version != r.version {
            return Ok(answer(ResultCode::StaleVersion, stored.version));
        }
        let mut items = stored.items;
        merge(&mut items, r.data);
        let change = Replacement {
            expected_version: r.version,
            previous_user: stored.user,
            session: Session {
                version: stored.version + 1,
                lifetime: self.lifetime(&items, stored.created),
                user: user_of(&items),
                items,
                touched: now,
                created: stored.created,
                incarnation: stored.incarnation,
                creator: stored.creator,
            },
            limit: self.effective_limit(r.session_limit),
            now,
        };
        Ok(
            match self
                .store
                .replace_session(&r.replica_set, &r.session_id, &change)
                .await?
            {
                ReplaceOutcome::Replaced { displaced } => {
                    log_displaced(&r.replica_set, &displaced);
                    answer(ResultCode::Success, change.session.version)
                }
                ReplaceOutcome::VersionMismatch { stored } => answer(ResultCode::StaleVersion, stored),
                ReplaceOutcome::NotFound => answer(ResultCode::SessionNotFound, 0),
                ReplaceOutcome::LimitReached => answer(ResultCode::SessionLimitReached, r.version),
            },
        )
    }

    /// A WebSEAL saw the session idle. It ends only when idle everywhere: its newest activity
    /// (any shim's touch, or the `last-access` item) is older than its inactivity timeout
    /// less the clock-skew tolerance. Otherwise the user is active elsewhere and it stays.
    async fn idle_timeout(&self, r: SessionRef) -> Result<Response, StoreError> {
        self.heard(&r.replica_set, &r.replica);
        let now = self.now();
        let answer = |result| Response::Bare {
            operation: "idleTimeout",
            result,
        };
        let Some(stored) = self
            .store
            .get_session(&r.replica_set, &r.session_id, Touch::No, now)
            .await?
        else {
            return Ok(answer(ResultCode::SessionNotFound));
        };
        let idle = item_number(&stored.items, class::INACTIVITY_TIMEOUT).unwrap_or(0);
        let newest = item_number(&stored.items, class::LAST_ACCESS)
            .unwrap_or(0)
            .max(stored.touched);
        // A read within the touch granularity may have left no trace, so idle means idle for
        // that much longer. Ended only if still as read: a touch through another shim in
        // between keeps it.
        if idle > 0
            && now - newest >= idle - self.settings.clock_skew_secs + self.settings.touch_granularity_secs()
            && self
                .store
                .end_if_unchanged(&r.replica_set, &r.session_id, &stored)
                .await?
        {
            tracing::debug!(replica_set = %r.replica_set, "ended a session idle on every replica");
        }
        Ok(answer(ResultCode::Success))
    }

    async fn terminate(&self, r: TerminateSession) -> Result<Response, StoreError> {
        let s = &r.session;
        self.heard(&s.replica_set, &s.replica);
        let deleted = self.store.delete_session(&s.replica_set, &s.session_id).await?;
        tracing::debug!(replica_set = %s.replica_set, reason = r.reason, level = r.level, deleted, "terminateSession");
        Ok(Response::SessionChange {
            operation: "terminateSession",
            result: if deleted {
                ResultCode::Success
            } else {
                ResultCode::SessionNotFound
            },
            version: 0,
            stack_depth: 0,
        })
    }

    async fn execute(&self, r: AdminRequest) -> Result<Response, StoreError> {
        let ok = |groups| Response::Execute {
            result: ResultCode::Success,
            groups,
        };
        Ok(match r {
            AdminRequest::GetClusterInfo => {
                let sets = match &self.settings.replica_sets {
                    Some(sets) => sets.clone(),
                    None => self.store.replica_sets().await?,
                };
                let mut first: AttributeGroup = vec![("SessionRealm".into(), self.settings.realm.clone())];
                first.extend(sets.iter().map(|s| ("ReplicaSet".to_string(), s.clone())));
                let mut groups = vec![first];
                for set in &sets {
                    let keys = self.keys(set).await?;
                    let expiry = keys.created + self.settings.key_rotation_secs.unwrap_or(0);
                    groups.push(vec![
                        ("KeyId".into(), keys.current_id.to_string()),
                        ("KeyCreationTime".into(), keys.created.to_string()),
                        ("KeyExpiryTime".into(), expiry.to_string()),
                    ]);
                }
                ok(groups)
            }
            AdminRequest::GetReplicaSetInfo { replica_set } => {
                let stale_before = self.now() - self.settings.replica_timeout_secs;
                let members = self.store.members(&replica_set, stale_before).await?;
                ok(members
                    .into_iter()
                    .map(|m| vec![("Replica".into(), m.replica), ("Joined".into(), m.joined.to_string())])
                    .collect())
            }
            AdminRequest::ListSessions {
                replica_set,
                data_class,
                data_instance,
                value_pattern,
                max_results,
            } => {
                let mut listing = Listing::up_to(max_results);
                self.list_sessions(&replica_set, &data_class, &data_instance, &value_pattern, &mut listing)
                    .await?;
                let mut groups = vec![vec![
                    ("NumResults".to_string(), listing.total.to_string()),
                    ("ReturnedResults".to_string(), listing.kept.len().to_string()),
                ]];
                groups.extend(
                    listing
                        .kept
                        .into_iter()
                        .map(|(id, value)| vec![("SessionID".into(), id), ("SessionDataValue".into(), value)]),
                );
                ok(groups)
            }
            AdminRequest::TerminateSession {
                replica_set,
                session_id,
            } => Response::Execute {
                result: if self.store.delete_session(&replica_set, &session_id).await? {
                    ResultCode::Success
                } else {
                    ResultCode::SessionNotFound
                },
                groups: Vec::new(),
            },
            AdminRequest::TerminateAllSessions { replica_set, user } => {
                let mut ended = 0;
                for id in self.store.user_sessions(&replica_set, &user, self.now()).await? {
                    if self.store.delete_session(&replica_set, &id).await? {
                        ended += 1;
                    }
                }
                tracing::info!(replica_set = %replica_set, ended, "terminated all sessions of a user");
                ok(vec![vec![("TerminatedSessions".into(), ended.to_string())]])
            }
        })
    }

    /// The sessions whose `data_class`/`data_instance` value matches the pattern, into
    /// `listing`. The concurrent-session key class (what `dscadmin session list` sends) means
    /// the user: the user index answers, an exact name with one read, a pattern by walking
    /// the index. An exact user name is also looked up in the index first (each candidate
    /// checked against its item); only when that finds nothing, because the sessions count
    /// users by another item, and for any other item, does it scan the replica set.
    async fn list_sessions(
        &self,
        replica_set: &str,
        data_class: &str,
        data_instance: &str,
        pattern: &str,
        listing: &mut Listing,
    ) -> Result<(), StoreError> {
        let now = self.now();
        if data_class == class::SESSION_KEY_CLASS && data_instance == "sms" {
            if pattern.contains('*') {
                return self
                    .store
                    .scan_users(replica_set, pattern, now, &mut |user, ids| {
                        for id in ids {
                            listing.add(id, user);
                        }
                    })
                    .await;
            }
            for id in self.store.user_sessions(replica_set, pattern, now).await? {
                listing.add(&id, pattern);
            }
            return Ok(());
        }
        let matching = |s: &Session| -> Option<String> {
            s.items
                .iter()
                .find(|i| i.data_class == data_class && i.instance == data_instance)
                .and_then(|i| i.value.clone())
                .filter(|v| wildcard_match(pattern, v))
        };
        if data_class == class::USER_NAME && data_instance == "sms" && !pattern.contains('*') {
            let before = listing.total;
            for id in self.store.user_sessions(replica_set, pattern, now).await? {
                let session = self.store.get_session(replica_set, &id, Touch::No, now).await?;
                if let Some(value) = session.as_ref().and_then(matching) {
                    listing.add(&id, &value);
                }
            }
            if listing.total > before {
                return Ok(());
            }
        }
        self.store
            .scan_sessions(replica_set, now, &mut |id, session| {
                if let Some(value) = matching(session) {
                    listing.add(id, &value);
                }
            })
            .await
    }
}

/// A listSessions answer as it is found: every match counted, at most `max` kept.
struct Listing {
    max: usize,
    total: usize,
    kept: Vec<(String, String)>,
}

impl Listing {
    /// MaxResults: 0 means no limit.
    fn up_to(max_results: u64) -> Self {
        Self {
            max: if max_results == 0 {
                usize::MAX
            } else {
                usize::try_from(max_results).unwrap_or(usize::MAX)
            },
            total: 0,
            kept: Vec::new(),
        }
    }

    fn add(&mut self, id: &str, value: &str) {
        self.total += 1;
        if self.kept.len() < self.max {
            self.kept.push((id.to_string(), value.to_string()));
        }
    }
}

/// The replica set a request is about, if it names one.
pub fn replica_set_of(request: &Request) -> Option<&str> {
    match request {
        Request::JoinReplicaSet(r) => Some(&r.replica_set),
        Request::GetRealmName { replica_set, .. } => Some(replica_set),
        Request::GetUpdates(r) => r.replica_set.as_deref(),
        Request::CreateSession(r) => Some(&r.replica_set),
        Request::ChangeSession(r) => Some(&r.replica_set),
        Request::GetSession(r) | Request::IdleTimeout(r) => Some(&r.replica_set),
        Request::TerminateSession(r) => Some(&r.session.replica_set),
        Request::Execute(
            AdminRequest::GetReplicaSetInfo { replica_set }
            | AdminRequest::ListSessions { replica_set, .. }
            | AdminRequest::TerminateSession { replica_set, .. }
            | AdminRequest::TerminateAllSessions { replica_set, .. },
        ) => Some(replica_set),
        _ => None,
    }
}

/// The replica set a request would give the cache when it does not have it yet: a join,
/// or a poll that names its set (both make the set's key material).
fn new_replica_set_of(request: &Request) -> Option<&str> {
    match request {
        Request::JoinReplicaSet(r) => Some(&r.replica_set),
        Request::GetUpdates(r) => r.replica_set.as_deref(),
        _ => None,
    }
}

/// The (replica set, replica) of session operations, which strict membership checks.
fn member_of(request: &Request) -> Option<(&str, &str)> {
    match request {
        Request::CreateSession(r) => Some((&r.replica_set, &r.replica)),
        Request::ChangeSession(r) => Some((&r.replica_set, &r.replica)),
        Request::GetSession(r) | Request::IdleTimeout(r) => Some((&r.replica_set, &r.replica)),
        Request::TerminateSession(r) => Some((&r.session.replica_set, &r.session.replica)),
        Request::GetRealmName { replica_set, replica } => Some((replica_set, replica)),
        _ => None,
    }
}

fn log_displaced(replica_set: &str, displaced: &[String]) {
    if !displaced.is_empty() {
        tracing::info!(
            replica_set,
            count = displaced.len(),
            "ended the user's oldest sessions to stay within the concurrent-session limit"
        );
    }
}

/// How long to hold a getUpdates: just under `responseBy`, so the answer beats WebSEAL's
/// own timeout.
pub fn poll_hold(response_by_secs: u64) -> Duration {
    let total = Duration::from_secs(response_by_secs).min(MAX_POLL_HOLD);
    let margin = (total / 10).clamp(Duration::from_millis(500), Duration::from_secs(5));
    total.saturating_sub(margin)
}

/// A fresh key: 32 alphanumeric characters, about 190 bits.
pub fn new_key() -> String {
    Alphanumeric.sample_string(&mut rand::rng(), 32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_polls_answer_just_before_response_by() {
        assert_eq!(poll_hold(60), Duration::from_secs(55));
        assert_eq!(poll_hold(2), Duration::from_millis(1500));
        assert_eq!(poll_hold(0), Duration::ZERO);
        assert_eq!(poll_hold(100_000), MAX_POLL_HOLD - Duration::from_secs(5));
    }

    mod service {
        use super::super::*;
        use crate::dsc::{GetUpdates, SessionRef};
        use crate::store::memory::MemoryStore;
        use std::sync::atomic::{AtomicI64, Ordering};

        const T0: i64 = 1_800_000_000;

        struct Fixture {
            service: Arc<SessionService>,
            clock: Arc<AtomicI64>,
            _stop: watch::Sender<bool>,
        }

        fn fixture(settings: Settings) -> Fixture {
            fixture_at(settings, T0)
        }

        fn fixture_at(settings: Settings, t0: i64) -> Fixture {
            let clock = Arc::new(AtomicI64::new(t0));
            let read = clock.clone();
            let (stop, stopped) = watch::channel(false);
            let service = SessionService::new(
                Arc::new(MemoryStore::new()),
                settings,
                Arc::new(move || read.load(Ordering::SeqCst)),
                stopped,
            );
            Fixture {
                service: Arc::new(service),
                clock,
                _stop: stop,
            }
        }

        fn item(c: &str, i: &str, v: &str) -> DataItem {
            DataItem {
                data_class: c.to_string().into(),
                instance: i.to_string().into(),
                value: Some(v.into()),
            }
        }

        fn create(replica: &str, set: &str, id: &str, data: Vec<DataItem>) -> Request {
            Request::CreateSession(CreateSession {
                replica: replica.into(),
                replica_set: set.into(),
                session_id: id.into(),
                session_limit: 0,
                data,
            })
        }

        fn session_ref(id: &str) -> SessionRef {
            SessionRef {
                replica: "web".into(),
                replica_set: "default".into(),
                session_id: id.into(),
            }
        }

        fn join(replica: &str, set: &str) -> Request {
            Request::JoinReplicaSet(JoinReplicaSet {
                replica: replica.into(),
                instance: format!("uuid:{replica}"),
                capabilities: 15,
                replica_set: set.into(),
            })
        }

        #[test]
        fn the_stricter_limit_wins() {
            let f = fixture(Settings {
                session_limit: SessionLimit { max: 3, displace: true },
                ..Settings::default()
            });
            let s = &f.service;
            assert_eq!(s.effective_limit(0), SessionLimit { max: 3, displace: true });
            assert_eq!(
                s.effective_limit(2),
                SessionLimit {
                    max: 2,
                    displace: false
                }
            );
            assert_eq!(s.effective_limit(-1), SessionLimit { max: 1, displace: true });
            assert_eq!(s.effective_limit(5), SessionLimit { max: 3, displace: true });
        }

        #[test]
        fn lifetime_is_capped_and_skewed() {
            let f = fixture(Settings {
                max_lifetime_secs: 3600,
                clock_skew_secs: 60,
                ..Settings::default()
            });
            let far = vec![
                item(class::EXPIRY, "sms", &format!("{:#x}", T0 + 100_000)),
                item(class::INACTIVITY_TIMEOUT, "webseal", "0x258"),
            ];
            assert_eq!(
                f.service.lifetime(&far, T0),
                Lifetime {
                    ends_at: T0 + 3600 + 60,
                    idle_secs: 600 + 60
                }
            );
            let near = vec![item(class::EXPIRY, "sms", &format!("{:#x}", T0 + 100))];
            assert_eq!(
                f.service.lifetime(&near, T0),
                Lifetime {
                    ends_at: T0 + 160,
                    idle_secs: 0
                }
            );
            // The ends of the integer range: clamped, never overflowing.
            let extremes = vec![
                item(class::EXPIRY, "sms", "-0x7fffffffffffffff"),
                item(class::INACTIVITY_TIMEOUT, "webseal", "0x7fffffffffffffff"),
            ];
            assert_eq!(
                f.service.lifetime(&extremes, T0),
                Lifetime {
                    ends_at: T0 + 60,
                    idle_secs: i64::MAX
                }
            );
            assert_eq!(f.service.lifetime(&extremes, T0).expires_at(T0), T0 + 60);
        }

        #[tokio::test]
        async fn idle_timeout_ends_only_sessions_idle_everywhere() {
            let f = fixture(Settings {
                clock_skew_secs: 60,
                ..Settings::default()
            });
            let data = vec![item(class::INACTIVITY_TIMEOUT, "webseal", "0x258")];
            f.service.handle(create("web", "default", "S", data)).await.unwrap();
            // 600 s idle timeout less 60 s skew: at 539 s the user may be active elsewhere.
            f.clock.store(T0 + 539, Ordering::SeqCst);
            let r = f.service.handle(Request::IdleTimeout(session_ref("S"))).await.unwrap();
            assert_eq!(r.result(), ResultCode::Success);
            let got = f.service.handle(Request::GetSession(session_ref("S"))).await.unwrap();
            assert_eq!(
                got.result(),
                ResultCode::Success,
                "kept, and the read counts as activity"
            );
            // Idle for 540 s plus the touch granularity (15 s at 60 s of skew) after that read.
            f.clock.store(T0 + 539 + 554, Ordering::SeqCst);
            f.service.handle(Request::IdleTimeout(session_ref("S"))).await.unwrap();
            f.clock.store(T0 + 539 + 555, Ordering::SeqCst);
            let kept = f.service.handle(Request::GetSession(session_ref("S"))).await.unwrap();
            assert_eq!(kept.result(), ResultCode::Success, "not yet idle past the granularity");
            f.clock.store(T0 + 539 + 555 + 555, Ordering::SeqCst);
            f.service.handle(Request::IdleTimeout(session_ref("S"))).await.unwrap();
            let gone = f.service.handle(Request::GetSession(session_ref("S"))).await.unwrap();
            assert_eq!(gone.result(), ResultCode::SessionNotFound);
            let r = f.service.handle(Request::IdleTimeout(session_ref("S"))).await.unwrap();
            assert_eq!(r.result(), ResultCode::SessionNotFound);
        }

        /// A getSession within the touch granularity records nothing, yet the session it read
        /// is not ended as idle before its inactivity timeout (less the skew) has passed since.
        #[tokio::test]
        async fn a_read_left_unrecorded_still_keeps_a_session_from_idling() {
            let f = fixture(Settings::default()); // 180 s of skew: 45 s of granularity
            let data = vec![item(class::INACTIVITY_TIMEOUT, "webseal", "0xc8")]; // 200 s
            f.service.handle(create("web", "default", "S", data)).await.unwrap();
            f.clock.store(T0 + 30, Ordering::SeqCst);
            let read = f.service.handle(Request::GetSession(session_ref("S"))).await.unwrap();
            assert_eq!(read.result(), ResultCode::Success);
            let stored = f
                .service
                .store()
                .get_session("default", "S", Touch::No, T0 + 30)
                .await
                .unwrap()
                .unwrap();
            assert_eq!(stored.touched, T0, "a read within the granularity records nothing");
            // 30 s after the read: within 200 s less 180 s of skew of it, so kept.
            f.clock.store(T0 + 60, Ordering::SeqCst);
            f.service.handle(Request::IdleTimeout(session_ref("S"))).await.unwrap();
            let kept = f.service.handle(Request::GetSession(session_ref("S"))).await.unwrap();
            assert_eq!(kept.result(), ResultCode::Success, "the read 30 s ago keeps it");
        }

        /// Made-up replica names cannot grow the shim's own bookkeeping without bound.
        #[tokio::test]
        async fn per_replica_bookkeeping_is_bounded() {
            let f = fixture(Settings {
                strict_membership: true,
                ..Settings::default()
            });
            for n in 0..MAX_PENDING_HEARTBEATS + 500 {
                f.service.heard("default", &format!("r-{n}"));
                f.service.remember_member("default", &format!("r-{n}"));
            }
            assert_eq!(f.service.heard_from.lock().unwrap().pairs, MAX_PENDING_HEARTBEATS);
            assert!(f.service.members_seen.lock().unwrap().len() <= MAX_MEMBERSHIPS_SEEN);
            f.service.flush_heartbeats().await.unwrap();
            assert_eq!(f.service.heard_from.lock().unwrap().pairs, 0);
        }

        /// The rules read no clock but the injected one: at a time long past (or far ahead),
        /// sessions live, list and end as they do today.
        #[tokio::test]
        async fn the_rules_read_only_the_injected_clock() {
            for t0 in [1_000_000_000, 4_000_000_000] {
                let f = fixture_at(Settings::default(), t0);
                let alice = vec![
                    item(class::USER_NAME, "sms", "alice"),
                    item(class::EXPIRY, "sms", &format!("{:#x}", t0 + 3600)),
                ];
                for id in ["S1", "S2"] {
                    let r = f
                        .service
                        .handle(create("web", "default", id, alice.clone()))
                        .await
                        .unwrap();
                    assert_eq!(r.result(), ResultCode::Success);
                }
                f.clock.store(t0 + 60, Ordering::SeqCst);
                let listed = f
                    .service
                    .handle(Request::Execute(AdminRequest::ListSessions {
                        replica_set: "default".into(),
                        data_class: class::SESSION_KEY_CLASS.into(),
                        data_instance: "sms".into(),
                        value_pattern: "alice".into(),
                        max_results: 0,
                    }))
                    .await
                    .unwrap();
                let Response::Execute { groups, .. } = listed else {
                    panic!("{listed:?}")
                };
                assert_eq!(groups[0][0], ("NumResults".to_string(), "2".to_string()), "at {t0}");
                let ended = f
                    .service
                    .handle(Request::Execute(AdminRequest::TerminateAllSessions {
                        replica_set: "default".into(),
                        user: "alice".into(),
                    }))
                    .await
                    .unwrap();
                let Response::Execute { groups, .. } = ended else {
                    panic!("{ended:?}")
                };
                assert_eq!(groups[0][0].1, "2", "at {t0}");
            }
        }

        #[tokio::test]
        async fn strict_membership_refuses_strangers() {
            let f = fixture(Settings {
                strict_membership: true,
                ..Settings::default()
            });
            let r = f.service.handle(create("web", "default", "S1", vec![])).await.unwrap();
            assert_eq!(r.result(), ResultCode::NotRegistered);
            f.service.handle(join("web", "other")).await.unwrap();
            let r = f.service.handle(create("web", "default", "S1", vec![])).await.unwrap();
            assert_eq!(r.result(), ResultCode::ReplicaSetNotJoined);
            f.service.handle(join("web", "default")).await.unwrap();
            let r = f.service.handle(create("web", "default", "S1", vec![])).await.unwrap();
            assert_eq!(r.result(), ResultCode::Success);
            f.service
                .handle(Request::ReplicaShutdown { replica: "web".into() })
                .await
                .unwrap();
            let r = f.service.handle(create("web", "default", "S2", vec![])).await.unwrap();
            assert_eq!(r.result(), ResultCode::NotRegistered);
        }

        #[tokio::test]
        async fn a_rotation_wakes_a_waiting_poll_with_the_new_key() {
            let f = fixture(Settings {
                key_rotation_secs: Some(10),
                ..Settings::default()
            });
            let joined = f.service.handle(join("web", "default")).await.unwrap();
            let Response::JoinReplicaSet { keys: Some(keys), .. } = joined else {
                panic!("{joined:?}")
            };
            assert_eq!(keys.current_key_age, 0);
            let service = f.service.clone();
            let poll = tokio::spawn(async move {
                service
                    .handle(Request::GetUpdates(GetUpdates {
                        replica: "web".into(),
                        instance: "uuid:web".into(),
                        replica_set: None,
                        response_by_secs: 60,
                    }))
                    .await
            });
            tokio::time::sleep(Duration::from_millis(100)).await;
            assert!(!poll.is_finished(), "the poll waits");
            f.clock.store(T0 + 10, Ordering::SeqCst);
            assert_eq!(f.service.rotate_due_keys().await.unwrap(), 1);
            let answer = tokio::time::timeout(Duration::from_secs(2), poll)
                .await
                .unwrap()
                .unwrap()
                .unwrap();
            let Response::GetUpdates {
                new_key, new_key_id, ..
            } = answer
            else {
                panic!("{answer:?}")
            };
            assert_eq!(new_key_id, keys.current_key_id + 1);
            assert_ne!(new_key, keys.current_key);
        }
    }

    #[test]
    fn pending_activity_keeps_the_newest_per_pair_and_forgets_a_replica() {
        let mut pending = PendingActivity::default();
        pending.record("a", "r1", 1);
        pending.record("a", "r1", 5);
        pending.record("a", "r2", 2);
        pending.record("b", "r1", 3);
        assert_eq!(pending.pairs, 3);
        pending.forget_replica("r1");
        assert_eq!(pending.pairs, 1);
        assert_eq!(pending.drain(), vec![("a".to_string(), "r2".to_string(), 2)]);
        assert_eq!((pending.pairs, pending.drain()), (0, vec![]));
    }

    #[test]
    fn keys_are_long_and_printable() {
        let k = new_key();
        assert_eq!(k.len(), 32);
        assert!(k.chars().all(|c| c.is_ascii_alphanumeric()));
        assert_ne!(k, new_key());
    }
}
