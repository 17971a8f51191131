//! The embedded store: everything in this process's memory, gone when it stops. For one shim
//! on one machine (trials, development, a sidecar with no sharing needs).
//!
//! Expiry without a scan: every session sits in a queue ordered by the instant it expires;
//! a sweep pops the front of the queue while it is due, so each operation costs O(log n) in
//! the queue and O(1) in the session map, and nothing but an administrative listing walks
//! all sessions. A session past its end is invisible before the sweep reaches it.
//!
//! Bounded: past `--max-sessions`, a new session ends the least recently used one (as IAG's
//! own cache does past `max_sessions`), so a flood of logins cannot take the process's memory.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::LazyLock;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::broadcast;

use super::{
    CreateOutcome, ItemUpdate, JoinOutcome, KeyMaterial, Member, ReplaceOutcome, Replacement, Rotation, Session,
    SessionLimit, SessionVisitor, Store, StoreError, Touch, UpdateOutcome, UserVisitor,
};
use crate::dsc::wildcard_match;
use crate::items::{merge, names_item, user_key_item};

type SessionKey = (String, String);

/// The most sessions of one user that keep their arrival order within one second; past it
/// they tie, and sort by ID. The Redis store's sorted-set scores have the same resolution.
pub const ARRIVALS_PER_SECOND: u32 = 1 << 20;

#[derive(Default)]
struct State {
    sessions: HashMap<SessionKey, Session>,
    /// At most this many sessions; 0 = no bound.
    max_sessions: usize,
    /// Each session's last use (create, touching read, change) as a tick of `uses`, and the
    /// sessions by last use: the least recently used is the first.
    last_use: HashMap<SessionKey, u64>,
    by_last_use: BTreeMap<u64, SessionKey>,
    uses: u64,
    /// (expires_at, key): the expiry queue.
    expiries: BTreeSet<(i64, SessionKey)>,
    /// (replica set, user) → the user's sessions, oldest first.
    users: HashMap<SessionKey, Vec<IndexEntry>>,
    /// replica set → capability mask, members, key material.
    sets: HashMap<String, ReplicaSet>,
}

/// A user index entry. "Oldest" means the same on both stores: the earliest creation second,
/// then the order the store received them within that second, then the ID (the order of the
/// Redis store's sorted set, scored `created + arrival / ARRIVALS_PER_SECOND`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct IndexEntry {
    created: i64,
    arrival: u32,
    id: String,
}

#[derive(Default)]
struct ReplicaSet {
    capabilities: Option<u64>,
    members: HashMap<String, Member>,
    /// instance → the member that holds it.
    instances: HashMap<String, String>,
    /// (last seen, replica): the stale members are the first.
    by_last_seen: BTreeSet<(i64, String)>,
    keys: Option<KeyMaterial>,
}

impl ReplicaSet {
    fn insert_member(&mut self, member: Member) {
        self.remove_member(&member.replica);
        self.instances.insert(member.instance.clone(), member.replica.clone());
        self.by_last_seen.insert((member.last_seen, member.replica.clone()));
        self.members.insert(member.replica.clone(), member);
    }

    fn remove_member(&mut self, replica: &str) -> Option<Member> {
        let member = self.members.remove(replica)?;
        self.by_last_seen.remove(&(member.last_seen, member.replica.clone()));
        if self.instances.get(&member.instance).is_some_and(|r| r == replica) {
            self.instances.remove(&member.instance);
        }
        Some(member)
    }

    /// Members last seen before `stale_before` leave; each once, so O(log n) amortized.
    fn drop_stale(&mut self, stale_before: i64) {
        while let Some((seen, replica)) = self.by_last_seen.first().cloned() {
            if seen >= stale_before {
                break;
            }
            self.remove_member(&replica);
        }
    }

    fn heard_from(&mut self, replica: &str, now: i64) -> bool {
        let Some(member) = self.members.get(replica) else {
            return false;
        };
        if member.last_seen < now {
            let mut member = member.clone();
            member.last_seen = now;
            self.insert_member(member);
        }
        true
    }
}

pub struct MemoryStore {
    state: Mutex<State>,
    rotations: broadcast::Sender<Rotation>,
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

/// Sessions dropped to stay within `--max-sessions`, least recently used first; one counter
/// for the process (registered by `metrics`).
pub static EVICTED: LazyLock<Counter> = LazyLock::new(Counter::default);

/// Sessions the embedded store holds now.
pub static STORED: LazyLock<Gauge> = LazyLock::new(Gauge::default);

impl MemoryStore {
    /// A store without a bound on its sessions.
    pub fn new() -> Self {
        Self::bounded(0)
    }

    /// A store keeping at most `max_sessions` (0 = no bound): past it, a new session makes
    /// room by ending the least recently used one.
    pub fn bounded(max_sessions: usize) -> Self {
        Self {
            state: Mutex::new(State {
                max_sessions,
                ..State::default()
            }),
            rotations: broadcast::channel(64).0,
        }
    }

    /// Starts the sweep that drops expired sessions once a second, by `clock` (unix seconds).
    pub fn spawn_sweeper(self: &Arc<Self>, clock: impl Fn() -> i64 + Send + 'static) {
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                let Some(store) = weak.upgrade() else { return };
                store.sweep(clock());
            }
        });
    }

    /// Drops every session due at `now`.
    pub fn sweep(&self, now: i64) {
        let mut state = self.lock();
        while let Some((at, key)) = state.expiries.first().cloned() {
            if at > now {
                break;
            }
            state.expiries.pop_first();
            state.remove_session(&key);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the maps half-updated in a way that
        // matters more than losing the whole cache, so keep serving.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl State {
    fn live_session(&mut self, key: &SessionKey, now: i64) -> Option<&mut Session> {
        if !self.sessions.get(key)?.is_live(now) {
            self.remove_session(key);
            return None;
        }
        self.sessions.get_mut(key)
    }

    fn remove_session(&mut self, key: &SessionKey) -> Option<Session> {
        let session = self.sessions.remove(key)?;
        STORED.set(self.sessions.len() as i64);
        if let Some(tick) = self.last_use.remove(key) {
            self.by_last_use.remove(&tick);
        }
        self.expiries
            .remove(&(session.lifetime.expires_at(session.touched), key.clone()));
        if let Some(user) = &session.user {
            self.unindex(&key.0, user, &key.1);
        }
        Some(session)
    }

    fn index(&mut self, replica_set: &str, user: &str, created: i64, id: &str) {
        let entries = self
            .users
            .entry((replica_set.to_string(), user.to_string()))
            .or_default();
        let arrival = match entries.last() {
            Some(last) if last.created == created => (last.arrival + 1).min(ARRIVALS_PER_SECOND - 1),
            _ => 0,
        };
        let entry = IndexEntry {
            created,
            arrival,
            id: id.to_string(),
        };
        let at = entries.binary_search(&entry).unwrap_or_else(|at| at);
        entries.insert(at, entry);
    }

    fn unindex(&mut self, replica_set: &str, user: &str, id: &str) {
        let ukey = (replica_set.to_string(), user.to_string());
        if let Some(entries) = self.users.get_mut(&ukey) {
            entries.retain(|e| e.id != id);
            if entries.is_empty() {
                self.users.remove(&ukey);
            }
        }
    }

    /// The user's live sessions but `except`, oldest first; entries of ended sessions go.
    fn live_sessions_of(&mut self, replica_set: &str, user: &str, now: i64, except: &str) -> Vec<String> {
        let ukey = (replica_set.to_string(), user.to_string());
        let ids: Vec<String> = self
            .users
            .get(&ukey)
            .map(|entries| entries.iter().map(|e| e.id.clone()).collect())
            .unwrap_or_default();
        ids.into_iter()
            .filter(|id| id != except && self.live_session(&key(replica_set, id), now).is_some())
            .collect()
    }

    /// The concurrent-session rule for one more session of `user`: the IDs it displaced, or
    /// `None` when the limit refuses it.
    fn admit(
        &mut self,
        replica_set: &str,
        user: &str,
        limit: &SessionLimit,
        now: i64,
        except: &str,
    ) -> Option<Vec<String>> {
        let live = self.live_sessions_of(replica_set, user, now, except);
        let max = limit.max as usize;
        if max == 0 || live.len() < max {
            return Some(Vec::new());
        }
        if !limit.displace {
            return None;
        }
        let displaced = live[..live.len() + 1 - max].to_vec();
        for id in &displaced {
            self.remove_session(&key(replica_set, id));
        }
        Some(displaced)
    }

    /// Stores a session and counts it as used now.
    fn insert_session(&mut self, key: SessionKey, session: Session) {
        if let Some(old) = self.sessions.get(&key) {
            self.expiries
                .remove(&(old.lifetime.expires_at(old.touched), key.clone()));
        }
        self.expiries
            .insert((session.lifetime.expires_at(session.touched), key.clone()));
        self.mark_used(&key);
        self.sessions.insert(key, session);
        STORED.set(self.sessions.len() as i64);
    }

    /// Counts a session as used now: the last to go when the store is full.
    fn mark_used(&mut self, key: &SessionKey) {
        self.uses += 1;
        if let Some(before) = self.last_use.insert(key.clone(), self.uses) {
            self.by_last_use.remove(&before);
        }
        self.by_last_use.insert(self.uses, key.clone());
    }

    /// Ends least recently used sessions until one more fits.
    fn make_room(&mut self) {
        while self.max_sessions > 0 && self.sessions.len() >= self.max_sessions {
            let Some((_, key)) = self.by_last_use.pop_first() else {
                return;
            };
            self.remove_session(&key);
            EVICTED.inc();
        }
    }

    fn set(&mut self, replica_set: &str) -> &mut ReplicaSet {
        self.sets.entry(replica_set.to_string()).or_default()
    }
}

fn key(replica_set: &str, id: &str) -> SessionKey {
    (replica_set.to_string(), id.to_string())
}

fn new_keys(candidate: &str, now: i64) -> KeyMaterial {
    KeyMaterial {
        current: candidate.to_string(),
        current_id: 0,
        previous: candidate.to_string(),
        previous_id: 0,
        created: now,
    }
}

#[async_trait]
impl Store for MemoryStore {
    async fn create_session(
        &self,
        replica_set: &str,
        session_id: &str,
        session: &Session,
        limit: &SessionLimit,
        now: i64,
    ) -> Result<CreateOutcome, StoreError> {
        let mut state = self.lock();
        let k = key(replica_set, session_id);
        if state.live_session(&k, now).is_some() {
            return Ok(CreateOutcome::IdInUse);
        }
        let mut displaced = Vec::new();
        if let Some(user) = &session.user {
            match state.admit(replica_set, user, limit, now, session_id) {
                Some(ended) => displaced = ended,
                None => return Ok(CreateOutcome::LimitReached),
            }
            state.index(replica_set, user, session.created, session_id);
        }
        state.make_room();
        state.insert_session(k, session.clone());
        Ok(CreateOutcome::Created { displaced })
    }

    async fn get_session(
        &self,
        replica_set: &str,
        session_id: &str,
        touch: Touch,
        now: i64,
    ) -> Result<Option<Session>, StoreError> {
        let mut state = self.lock();
        let k = key(replica_set, session_id);
        let Some(found) = state.live_session(&k, now).cloned() else {
            return Ok(None);
        };
        if touch.due(found.touched, now) {
            let mut touched = found.clone();
            touched.touched = now;
            state.insert_session(k, touched);
        } else if touch != Touch::No {
            state.mark_used(&k);
        }
        Ok(Some(found))
    }

    async fn replace_session(
        &self,
        replica_set: &str,
        session_id: &str,
        change: &Replacement,
    ) -> Result<ReplaceOutcome, StoreError> {
        let mut state = self.lock();
        let k = key(replica_set, session_id);
        let session = &change.session;
        let Some(stored) = state.live_session(&k, change.now) else {
            return Ok(ReplaceOutcome::NotFound);
        };
        if stored.version != change.expected_version || stored.incarnation != session.incarnation {
            return Ok(ReplaceOutcome::VersionMismatch { stored: stored.version });
        }
        let previous_user = stored.user.clone();
        let mut displaced = Vec::new();
        if previous_user != session.user {
            if let Some(new) = &session.user {
                match state.admit(replica_set, new, &change.limit, change.now, session_id) {
                    Some(ended) => displaced = ended,
                    None => return Ok(ReplaceOutcome::LimitReached),
                }
            }
            if let Some(old) = &previous_user {
                state.unindex(replica_set, old, session_id);
            }
            if let Some(new) = &session.user {
                state.index(replica_set, new, session.created, session_id);
            }
        }
        state.insert_session(k, session.clone());
        Ok(ReplaceOutcome::Replaced { displaced })
    }

    async fn update_items(
        &self,
        replica_set: &str,
        session_id: &str,
        update: &ItemUpdate<'_>,
    ) -> Result<UpdateOutcome, StoreError> {
        let mut state = self.lock();
        let k = key(replica_set, session_id);
        let Some(stored) = state.live_session(&k, update.now) else {
            return Ok(UpdateOutcome::NotFound);
        };
        if stored.version != update.expected_version {
            return Ok(UpdateOutcome::VersionMismatch { stored: stored.version });
        }
        if names_item(update.items, user_key_item(&stored.items)) {
            return Ok(UpdateOutcome::NeedsReplacement);
        }
        let mut session = stored.clone();
        merge(&mut session.items, update.items.to_vec());
        session.version += 1;
        session.touched = update.now;
        let version = session.version;
        state.insert_session(k, session);
        Ok(UpdateOutcome::Updated { version })
    }

    async fn delete_session(&self, replica_set: &str, session_id: &str) -> Result<bool, StoreError> {
        Ok(self.lock().remove_session(&key(replica_set, session_id)).is_some())
    }

    async fn end_if_unchanged(&self, replica_set: &str, session_id: &str, seen: &Session) -> Result<bool, StoreError> {
        let mut state = self.lock();
        let k = key(replica_set, session_id);
        let unchanged = state.sessions.get(&k).is_some_and(|s| {
            s.incarnation == seen.incarnation && s.version == seen.version && s.touched == seen.touched
        });
        Ok(unchanged && state.remove_session(&k).is_some())
    }

    async fn user_sessions(&self, replica_set: &str, user: &str, now: i64) -> Result<Vec<String>, StoreError> {
        Ok(self.lock().live_sessions_of(replica_set, user, now, ""))
    }

    async fn scan_sessions(
        &self,
        replica_set: &str,
        now: i64,
        visit: &mut SessionVisitor<'_>,
    ) -> Result<(), StoreError> {
        let state = self.lock();
        for ((rs, id), session) in &state.sessions {
            if rs == replica_set && session.is_live(now) {
                visit(id, session);
            }
        }
        Ok(())
    }

    async fn scan_users(
        &self,
        replica_set: &str,
        pattern: &str,
        now: i64,
        visit: &mut UserVisitor<'_>,
    ) -> Result<(), StoreError> {
        let state = self.lock();
        for ((rs, user), entries) in &state.users {
            if rs != replica_set || !wildcard_match(pattern, user) {
                continue;
            }
            let live: Vec<String> = entries
                .iter()
                .filter(|e| state.sessions.get(&key(rs, &e.id)).is_some_and(|s| s.is_live(now)))
                .map(|e| e.id.clone())
                .collect();
            if !live.is_empty() {
                visit(user, &live);
            }
        }
        Ok(())
    }

    async fn join(
        &self,
        replica_set: &str,
        member: &Member,
        capabilities: u64,
        stale_before: i64,
        max_members: u32,
    ) -> Result<JoinOutcome, StoreError> {
        let mut state = self.lock();
        let set = state.set(replica_set);
        set.drop_stale(stale_before);
        if let Some(owner) = set.instances.get(&member.instance) {
            if owner != &member.replica && set.members.contains_key(owner) {
                return Ok(JoinOutcome::InstanceOwnedBy { replica: owner.clone() });
            }
        }
        let known = set.members.contains_key(&member.replica);
        let others = set.members.len() - usize::from(known);
        match set.capabilities {
            Some(expected) if expected != capabilities && others > 0 => {
                return Ok(JoinOutcome::CapabilityMismatch { expected })
            }
            _ => {}
        }
        if !known && max_members > 0 && others >= max_members as usize {
            return Ok(JoinOutcome::Full { max: max_members });
        }
        set.capabilities = Some(capabilities);
        set.insert_member(member.clone());
        Ok(JoinOutcome::Joined)
    }

    async fn heartbeat(&self, replica_set: &str, replica: &str, now: i64) -> Result<bool, StoreError> {
        let mut state = self.lock();
        Ok(state
            .sets
            .get_mut(replica_set)
            .is_some_and(|set| set.heard_from(replica, now)))
    }

    async fn leave(&self, replica: &str) -> Result<Vec<String>, StoreError> {
        let mut state = self.lock();
        let mut left: Vec<String> = state
            .sets
            .iter_mut()
            .filter_map(|(name, set)| set.remove_member(replica).map(|_| name.clone()))
            .collect();
        left.sort();
        Ok(left)
    }

    async fn members(&self, replica_set: &str, stale_before: i64) -> Result<Vec<Member>, StoreError> {
        let mut state = self.lock();
        let Some(set) = state.sets.get_mut(replica_set) else {
            return Ok(Vec::new());
        };
        set.drop_stale(stale_before);
        let mut members: Vec<Member> = set.members.values().cloned().collect();
        members.sort_by(|a, b| a.joined.cmp(&b.joined).then_with(|| a.replica.cmp(&b.replica)));
        Ok(members)
    }

    async fn replica_sets(&self) -> Result<Vec<String>, StoreError> {
        let mut sets: Vec<String> = self.lock().sets.keys().cloned().collect();
        sets.sort();
        Ok(sets)
    }

    async fn key_material(&self, replica_set: &str, candidate: &str, now: i64) -> Result<KeyMaterial, StoreError> {
        let mut state = self.lock();
        let set = state.set(replica_set);
        Ok(set.keys.get_or_insert_with(|| new_keys(candidate, now)).clone())
    }

    async fn rotate_key(
        &self,
        replica_set: &str,
        candidate: &str,
        now: i64,
        interval_secs: i64,
    ) -> Result<Option<KeyMaterial>, StoreError> {
        let rotated = {
            let mut state = self.lock();
            let set = state.set(replica_set);
            match &set.keys {
                None => {
                    set.keys = Some(new_keys(candidate, now));
                    None
                }
                Some(k) if k.created + interval_secs > now => None,
                Some(k) => {
                    let next = KeyMaterial {
                        current: candidate.to_string(),
                        current_id: k.current_id + 1,
                        previous: k.current.clone(),
                        previous_id: k.current_id,
                        created: now,
                    };
                    set.keys = Some(next.clone());
                    Some(next)
                }
            }
        };
        if rotated.is_some() {
            let _ = self.rotations.send(Some(replica_set.to_string()));
        }
        Ok(rotated)
    }

    fn rotations(&self) -> broadcast::Receiver<Rotation> {
        self.rotations.subscribe()
    }

    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }
}
