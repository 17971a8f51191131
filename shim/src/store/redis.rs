//! The Redis store: every shim on the same Redis sees the same sessions, members and keys.
//!
//! # Layout
//!
//! `P` is the configured key prefix (default `redsess:`). Hash tags (`{…}`) keep everything a
//! script touches for one replica set together and spread sessions by ID, so that a later
//! Redis Cluster mode needs no migration. `<rs>` is the replica set, `<n>` its length in bytes
//! (which keeps `<rs>:<id>` unambiguous).
//!
//! | key | type | holds |
//! |---|---|---|
//! | `P s:{<n>:<rs>:<id>}` | hash | one session: `v` version, `d` items (see `record`), `e` lifetime end, `i` idle seconds, `t` last activity, `c` creation, `u` user, `n` incarnation, `r` creating replica, `k` the item naming the user (class NUL instance), `x` change log (item updates since `d` was written, each sealed like `d`), `xv` the version the log brought it to (the log counts only while `xv` = `v`) |
//! | `P u:{<n>:<rs>:<user>}` | sorted set | the user's session IDs, oldest first: scored by creation second plus arrival within it (`ARRIVALS_PER_SECOND`), ties by ID; every create drops entries of ended sessions among the oldest; the set itself expires with its longest-lived session |
//! | `P rs:{<rs>}` | hash | the set's capability mask `caps` and key material `cur`, `cur_id`, `old`, `old_id`, `created` |
//! | `P m:{<rs>}` | hash | members: replica → `instance \t joined \t last_seen` |
//! | `P ml:{<rs>}` | sorted set | members by last seen: the stale ones leave first, without reading the others |
//! | `P mi:{<rs>}` | hash | instance → the member holding it |
//! | `P sets` | set | every replica set with key material or members (bounded by `--max-replica-sets`) |
//! | `P keys` | channel | key rotations, the message is the replica set |
//!
//! Every session key carries a TTL at the earlier of its lifetime end and its last activity
//! plus its inactivity timeout, so ended sessions vanish without any scan; every read also
//! checks those times against the shim's clock, so a session past its end is invisible even
//! before Redis drops it. getSession is one HMGET (and the touch script when activity is due);
//! a changeSession of items only is one script that appends to the change log. createSession
//! (with the limit and displacement), changeSession's compare-and-set on version and
//! incarnation when it reshapes the session (with the limit when the user changes), the idle
//! decision's delete-if-unchanged and terminateSession (with the index) are one script each,
//! so they are atomic.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::{AsyncCommands, IntoConnectionInfo, Script, ScriptInvocation, Value};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use redis::sentinel::{SentinelClient, SentinelClientBuilder, SentinelServerType};
use tokio::sync::{broadcast, Mutex, RwLock};

use super::record::{decode_items, encode_items, log_entries, log_entry, ItemsMarkup};
use super::sealing::{KeyRing, Mode, Sealing};
use super::{
    CreateOutcome, ItemUpdate, JoinOutcome, KeyMaterial, Lifetime, Member, ReplaceOutcome, Replacement, Rotation,
    ServerHealth, Session, SessionLimit, SessionVisitor, Store, StoreError, Touch, UpdateOutcome, UserVisitor,
};
use crate::dsc::{AnswerItems, DataItem};
use crate::items::{merge, user_key_item};

/// How to reach Redis.
#[derive(Clone)]
pub struct RedisSettings {
    /// `redis://` or `rediss://`, with user and password if ACLs are on.
    pub url: String,
    /// Password used when the URL carries none (from a file or the environment).
    pub password: Option<String>,
    pub key_prefix: String,
    /// Sentinels (`host:port`) to ask for the primary; empty = connect to the URL's host.
    /// With Sentinel, the URL still supplies the user, password, database and TLS.
    pub sentinels: Vec<String>,
    /// The primary's name as Sentinel monitors it.
    pub sentinel_primary: String,
    /// How to authenticate to the Sentinels (their own users, not Redis's); none = not at all.
    pub sentinel_auth: Option<SentinelAuth>,
    /// The Sentinels speak TLS.
    pub sentinel_tls: bool,
    /// PEM CA certificates that Redis's and the Sentinels' certificates must chain to (host
    /// names verified); none = the web PKI roots.
    pub tls_ca: Option<Vec<u8>>,
    /// Whether records are sealed, and which are accepted (see `sealing`).
    pub record_encryption: Mode,
    /// The key file; needed by every mode but `plain`.
    pub record_keys_file: Option<std::path::PathBuf>,
    /// How often the key file is checked for a new version.
    pub record_keys_check: Duration,
    pub connect_timeout: Duration,
    pub response_timeout: Duration,
    /// Session writes (create, change, terminate) succeed only once this many replicas have
    /// them (`WAIT`); 0 = once the primary has them.
    pub wait_replicas: u32,
    /// How long a write waits for those replicas before it is answered with a fault.
    pub wait_timeout: Duration,
}

impl std::fmt::Debug for RedisSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisSettings")
            .field("url", &redact_url(&self.url))
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("key_prefix", &self.key_prefix)
            .field("sentinels", &self.sentinels)
            .field("sentinel_auth", &self.sentinel_auth)
            .field("sentinel_tls", &self.sentinel_tls)
            .field("tls_ca", &self.tls_ca.as_ref().map(|_| "<PEM>"))
            .field("record_encryption", &self.record_encryption)
            .field("record_keys_file", &self.record_keys_file)
            .field("wait_replicas", &self.wait_replicas)
            .field("wait_timeout", &self.wait_timeout)
            .finish()
    }
}

impl RedisSettings {
    fn tls_certificates(&self) -> Option<redis::TlsCertificates> {
        self.tls_ca.as_ref().map(|ca| redis::TlsCertificates {
            client_tls: None,
            root_cert: Some(ca.clone()),
        })
    }
}

/// A Sentinel ACL user (or none, for `requirepass`) and its password.
#[derive(Clone)]
pub struct SentinelAuth {
    pub user: Option<String>,
    pub password: String,
}

impl std::fmt::Debug for SentinelAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SentinelAuth")
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

/// The Sentinel client: the Sentinels' addresses (TLS with `sentinel_tls`) and credentials,
/// and the URL's user, password, database and TLS for the Redis nodes they name; the CA, if
/// given, verifies both.
fn sentinel_client(settings: &RedisSettings, info: &redis::ConnectionInfo) -> redis::RedisResult<SentinelClient> {
    let addresses = settings.sentinels.iter().map(|s| {
        let (host, port) = s.rsplit_once(':').unwrap_or((s, "26379"));
        let host = host.trim_start_matches('[').trim_end_matches(']').to_string();
        let port = port.parse().unwrap_or(26379);
        if settings.sentinel_tls {
            redis::ConnectionAddr::TcpTls {
                host,
                port,
                insecure: false,
                tls_params: None,
            }
        } else {
            redis::ConnectionAddr::Tcp(host, port)
        }
    });
    let mut b = SentinelClientBuilder::new(addresses, settings.sentinel_primary.clone(), SentinelServerType::Master)?;
    if let Some(user) = &info.redis.username {
        b = b.set_client_to_redis_username(user.clone());
    }
    if let Some(password) = &info.redis.password {
        b = b.set_client_to_redis_password(password.clone());
    }
    if info.redis.db != 0 {
        b = b.set_client_to_redis_db(info.redis.db);
    }
    if let redis::ConnectionAddr::TcpTls { insecure, .. } = info.addr {
        b = b.set_client_to_redis_tls_mode(if insecure {
            redis::TlsMode::Insecure
        } else {
            redis::TlsMode::Secure
        });
        if let Some(certificates) = settings.tls_certificates() {
            b = b.set_client_to_redis_certificates(certificates);
        }
    }
    if let Some(auth) = &settings.sentinel_auth {
        if let Some(user) = &auth.user {
            b = b.set_client_to_sentinel_username(user.clone());
        }
        b = b.set_client_to_sentinel_password(auth.password.clone());
    }
    if settings.sentinel_tls {
        b = b.set_client_to_sentinel_tls_mode(redis::TlsMode::Secure);
        if let Some(certificates) = settings.tls_certificates() {
            b = b.set_client_to_sentinel_certificates(certificates);
        }
    }
    b.build()
}

/// The URL with any password replaced, fit for logs.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let userinfo = &url[scheme_end + 3..at];
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{}{}:<redacted>{}", &url[..scheme_end + 3], user, &url[at..])
        }
        _ => url.to_string(),
    }
}

/// How the store finds the Redis to talk to.
enum Target {
    /// The URL's host.
    Direct(redis::Client),
    /// Whichever server Sentinel names the primary, asked again after a failure.
    Sentinel(Mutex<SentinelClient>),
}

pub struct RedisStore {
    target: Target,
    settings: RedisSettings,
    /// The connection every call shares (multiplexed).
    connection: Slot,
    /// With `wait_replicas`, the connections session writes take, each write followed by
    /// `WAIT` on its own connection (WAIT counts that connection's writes, and blocks it).
    writers: Vec<Slot>,
    next_writer: AtomicUsize,
    /// Moves on when a failure suggests the primary moved (Sentinel): connections made
    /// before are made again, to whichever server Sentinel names then.
    generation: AtomicU64,
    rotations: broadcast::Sender<Rotation>,
    scripts: Scripts,
    sealing: Arc<Sealing>,
}

/// Durable writes on at most this many connections at once; more queue behind their WAITs.
const WRITE_CONNECTIONS: usize = 8;

/// A connection, made on first use, with the generation it was made in.
type Slot = RwLock<Option<(u64, ConnectionManager)>>;

struct Scripts {
    create: Script,
    touch: Script,
    replace: Script,
    update: Script,
    delete: Script,
    end_if_unchanged: Script,
    members: Script,
    leave: Script,
    join: Script,
    heartbeat: Script,
    keys: Script,
    rotate: Script,
}

impl RedisStore {
    /// Prepares the store; the connection is made on first use and remade after failures, so a
    /// shim starts (unready) while Redis is down.
    pub fn new(settings: RedisSettings) -> Result<Self, StoreError> {
        let mut info = settings
            .url
            .as_str()
            .into_connection_info()
            .map_err(|e| StoreError::Unavailable(format!("the Redis URL is not valid: {e}")))?;
        if info.redis.password.is_none() {
            info.redis.password = settings.password.clone();
        }
        let target = if settings.sentinels.is_empty() {
            let client = match settings.tls_certificates() {
                Some(certificates) => redis::Client::build_with_tls(info, certificates),
                None => redis::Client::open(info),
            };
            Target::Direct(client.map_err(|e| StoreError::Unavailable(format!("the Redis URL is not usable: {e}")))?)
        } else {
            Target::Sentinel(Mutex::new(sentinel_client(&settings, &info).map_err(|e| {
                StoreError::Unavailable(format!("the Sentinel settings are not usable: {e}"))
            })?))
        };
        let ring = match &settings.record_keys_file {
            Some(path) => Some(KeyRing::load(path).map_err(|e| StoreError::Unavailable(e.to_string()))?),
            None => None,
        };
        if settings.record_encryption.needs_keys() && ring.is_none() {
            return Err(StoreError::Unavailable(format!(
                "record encryption {:?} needs a key file",
                settings.record_encryption
            )));
        }
        let sealing = Arc::new(Sealing::new(settings.record_encryption, ring));
        Ok(Self {
            target,
            sealing,
            connection: RwLock::new(None),
            writers: (0..if settings.wait_replicas > 0 {
                WRITE_CONNECTIONS
            } else {
                0
            })
                .map(|_| RwLock::new(None))
                .collect(),
            next_writer: AtomicUsize::new(0),
            generation: AtomicU64::new(0),
            rotations: broadcast::channel(64).0,
            settings,
            scripts: Scripts {
                create: Script::new(CREATE),
                touch: Script::new(TOUCH),
                replace: Script::new(REPLACE),
                update: Script::new(UPDATE),
                delete: Script::new(DELETE),
                end_if_unchanged: Script::new(END_IF_UNCHANGED),
                members: Script::new(MEMBERS),
                leave: Script::new(LEAVE),
                join: Script::new(JOIN),
                heartbeat: Script::new(HEARTBEAT),
                keys: Script::new(KEYS),
                rotate: Script::new(ROTATE),
            },
        })
    }

    /// Reads the record key file again when it changes (a key rotation, see `sealing`).
    pub fn follow_record_keys(&self) {
        if let Some(path) = &self.settings.record_keys_file {
            self.sealing
                .follow_key_file(path.clone(), self.settings.record_keys_check);
        }
    }

    /// Follows key rotations announced by every shim, reconnecting after failures.
    pub fn spawn_rotation_listener(self: &std::sync::Arc<Self>) {
        let weak = std::sync::Arc::downgrade(self);
        tokio::spawn(async move {
            let mut backoff = Duration::from_millis(200);
            loop {
                let Some(store) = weak.upgrade() else { return };
                let channel = store.rotation_channel();
                let client = store.client().await;
                let sender = store.rotations.clone();
                drop(store);
                let pubsub = match client {
                    Ok(client) => client.get_async_pubsub().await.map_err(|e| e.to_string()),
                    Err(e) => Err(e.to_string()),
                };
                match pubsub {
                    Ok(mut pubsub) => {
                        if pubsub.subscribe(&channel).await.is_ok() {
                            backoff = Duration::from_millis(200);
                            // Rotations may have happened while this listener was away.
                            let _ = sender.send(None);
                            let mut messages = pubsub.on_message();
                            while let Some(msg) = messages.next().await {
                                if let Ok(set) = msg.get_payload::<String>() {
                                    let _ = sender.send(Some(set));
                                }
                            }
                            tracing::warn!("lost the Redis subscription to key rotations; reconnecting");
                        }
                    }
                    Err(e) => tracing::debug!(error = %e, "cannot subscribe to key rotations yet"),
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        });
    }

    /// A client for the server to talk to: the URL's, or the primary Sentinel names now.
    async fn client(&self) -> Result<redis::Client, StoreError> {
        match &self.target {
            Target::Direct(client) => Ok(client.clone()),
            Target::Sentinel(sentinel) => {
                let mut sentinel = sentinel.lock().await;
                tokio::time::timeout(self.settings.connect_timeout, sentinel.async_get_client())
                    .await
                    .map_err(|_| StoreError::Unavailable("asking Sentinel for the primary timed out".into()))?
                    .map_err(|e| StoreError::Unavailable(format!("Sentinel names no reachable primary: {e}")))
            }
        }
    }

    async fn conn(&self) -> Result<ConnectionManager, StoreError> {
        self.connect(&self.connection).await
    }

    /// The slot's connection, made (again) when it has none of the current generation.
    async fn connect(&self, slot: &Slot) -> Result<ConnectionManager, StoreError> {
        let generation = self.generation.load(Ordering::Relaxed);
        if let Some((made, manager)) = slot.read().await.as_ref() {
            if *made == generation {
                return Ok(manager.clone());
            }
        }
        let mut slot = slot.write().await;
        if let Some((made, manager)) = slot.as_ref() {
            if *made == generation {
                return Ok(manager.clone());
            }
        }
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(self.settings.connect_timeout)
            .set_response_timeout(self.settings.response_timeout)
            // A refused password or a refused connection is reported at once, not retried
            // until the timeout hides it; the next call connects again.
            .set_number_of_retries(0);
        let client = self.client().await?;
        let manager = tokio::time::timeout(
            self.settings.connect_timeout,
            ConnectionManager::new_with_config(client, config),
        )
        .await
        .map_err(|_| StoreError::Unavailable("connecting to Redis timed out".into()))?
        .map_err(unavailable)?;
        *slot = Some((generation, manager.clone()));
        Ok(manager)
    }

    /// Runs a script that writes a session. With `wait_replicas`, it goes on a write
    /// connection followed by `WAIT` in the same round trip, and succeeds only once that many
    /// replicas have it: a write acknowledged then survives the primary's loss.
    async fn write<T: redis::FromRedisValue>(&self, call: &ScriptInvocation<'_>) -> Result<T, StoreError> {
        let wanted = self.settings.wait_replicas;
        if wanted == 0 {
            let mut conn = self.conn().await?;
            return call.invoke_async(&mut conn).await.map_err(|e| self.failed(e));
        }
        let writer = &self.writers[self.next_writer.fetch_add(1, Ordering::Relaxed) % self.writers.len()];
        let mut conn = self.connect(writer).await?;
        let mut pipe = redis::pipe();
        pipe.invoke_script(call)
            .cmd("WAIT")
            .arg(wanted)
            .arg(self.settings.wait_timeout.as_millis() as u64);
        let (answer, acked): (T, i64) = match pipe.query_async(&mut conn).await {
            Err(e) if e.kind() == redis::ErrorKind::NoScriptError => {
                call.load_async(&mut conn).await.map_err(|e| self.failed(e))?;
                pipe.query_async(&mut conn).await.map_err(|e| self.failed(e))?
            }
            answered => answered.map_err(|e| self.failed(e))?,
        };
        if acked < i64::from(wanted) {
            return Err(StoreError::NotDurable {
                acked,
                wanted,
                within: self.settings.wait_timeout,
            });
        }
        Ok(answer)
    }

    /// Maps a Redis error; under Sentinel, a failure that suggests the primary moved (lost
    /// connection, or a replica refusing writes) makes the next call ask Sentinel again.
    fn failed(&self, e: redis::RedisError) -> StoreError {
        let moved = e.is_io_error()
            || e.is_connection_dropped()
            || e.is_connection_refusal()
            || e.is_timeout()
            || e.kind() == redis::ErrorKind::ReadOnly;
        if moved && matches!(self.target, Target::Sentinel(_)) {
            self.generation.fetch_add(1, Ordering::Relaxed);
        }
        unavailable(e)
    }

    fn session_key(&self, replica_set: &str, id: &str) -> String {
        self.named_key("s", replica_set, id)
    }

    /// Everything of a session key before the session ID (the scripts build keys from IDs).
    fn session_key_prefix(&self, replica_set: &str) -> String {
        self.key_prefix("s", replica_set, 0)
    }

    fn user_key_prefix(&self, replica_set: &str) -> String {
        self.key_prefix("u", replica_set, 0)
    }

    fn user_key(&self, replica_set: &str, user: &str) -> String {
        self.named_key("u", replica_set, user)
    }

    /// `P<kind>:{<n>:<rs>:<name>}`, built in one allocation: every session operation makes one.
    fn named_key(&self, kind: &str, replica_set: &str, name: &str) -> String {
        let mut key = self.key_prefix(kind, replica_set, name.len() + 1);
        key.push_str(name);
        key.push('}');
        key
    }

    /// `P<kind>:{<n>:<rs>:`, with room for `more` bytes after it.
    fn key_prefix(&self, kind: &str, replica_set: &str, more: usize) -> String {
        let prefix = &self.settings.key_prefix;
        let mut key = String::with_capacity(prefix.len() + kind.len() + replica_set.len() + 24 + more);
        key.push_str(prefix);
        key.push_str(kind);
        key.push_str(":{");
        key.push_str(itoa::Buffer::new().format(replica_set.len()));
        key.push(':');
        key.push_str(replica_set);
        key.push(':');
        key
    }

    fn set_key(&self, replica_set: &str) -> String {
        format!("{}rs:{{{}}}", self.settings.key_prefix, replica_set)
    }

    fn members_key(&self, replica_set: &str) -> String {
        format!("{}m:{{{}}}", self.settings.key_prefix, replica_set)
    }

    fn liveness_key(&self, replica_set: &str) -> String {
        format!("{}ml:{{{}}}", self.settings.key_prefix, replica_set)
    }

    fn instances_key(&self, replica_set: &str) -> String {
        format!("{}mi:{{{}}}", self.settings.key_prefix, replica_set)
    }

    /// The three keys of a set's membership, in the order the membership scripts take them.
    fn membership<'a, 's>(
        &self,
        call: &'a mut ScriptInvocation<'s>,
        replica_set: &str,
    ) -> &'a mut ScriptInvocation<'s> {
        call.key(self.members_key(replica_set))
            .key(self.liveness_key(replica_set))
            .key(self.instances_key(replica_set))
    }

    fn sets_key(&self) -> String {
        format!("{}sets", self.settings.key_prefix)
    }

    fn rotation_channel(&self) -> String {
        format!("{}keys", self.settings.key_prefix)
    }

    async fn read_session(
        &self,
        replica_set: &str,
        session_id: &str,
        conn: &mut ConnectionManager,
    ) -> Result<Option<Session>, StoreError> {
        let fields = self
            .session_fields(replica_set, session_id, &SESSION_FIELDS, conn)
            .await?;
        self.decode_session(replica_set, session_id, fields)
    }

    /// One HMGET of a session's hash. Its reply is taken apart here: redis-rs's generic
    /// conversion walks the reply twice more (for errors, then into the type), 1 600
    /// instructions of a getSession.
    async fn session_fields(
        &self,
        replica_set: &str,
        session_id: &str,
        fields: &[&str],
        conn: &mut ConnectionManager,
    ) -> Result<Vec<Option<Vec<u8>>>, StoreError> {
        // Sized once: a command grows its buffers from nothing, six allocations for this one.
        let key = self.session_key(replica_set, session_id);
        let field_bytes: usize = fields.iter().map(|f| f.len()).sum();
        let mut cmd = redis::Cmd::with_capacity(2 + fields.len(), 5 + key.len() + field_bytes);
        cmd.arg("HMGET").arg(key).arg(fields);
        let reply = conn.req_packed_command(&cmd).await.map_err(|e| self.failed(e))?;
        let unexpected = || StoreError::Corrupt("HMGET answered something other than its fields".into());
        let Value::Array(values) = reply else {
            return Err(match reply {
                Value::ServerError(e) => self.failed(e.into()),
                _ => unexpected(),
            });
        };
        values
            .into_iter()
            .map(|value| match value {
                Value::BulkString(bytes) => Ok(Some(bytes)),
                Value::Nil => Ok(None),
                _ => Err(unexpected()),
            })
            .collect()
    }

    /// After a read found the session live: records the activity when `touch` says it is due.
    /// Answers whether the session is still live: an idle decision through another shim may
    /// have ended it between the read and the touch, and the touch then leaves it ended.
    async fn touch_if_due(
        &self,
        replica_set: &str,
        session_id: &str,
        touch: Touch,
        touched: i64,
        now: i64,
        conn: &mut ConnectionManager,
    ) -> Result<bool, StoreError> {
        if !touch.due(touched, now) {
            return Ok(true);
        }
        let live: i64 = self
            .scripts
            .touch
            .key(self.session_key(replica_set, session_id))
            .arg(now)
            .invoke_async(conn)
            .await
            .map_err(|e| self.failed(e))?;
        Ok(live != 0)
    }

    /// Which of `ids` name live sessions of `user` at `now`, in their order. An index entry
    /// may outlive its session, or name an ID re-created for someone else.
    async fn live_of_user(
        &self,
        replica_set: &str,
        user: &str,
        ids: Vec<String>,
        now: i64,
        conn: &mut ConnectionManager,
    ) -> Result<Vec<String>, StoreError> {
        let mut pipe = redis::pipe();
        for id in &ids {
            pipe.cmd("HMGET")
                .arg(self.session_key(replica_set, id))
                .arg(&["e", "i", "t", "u"]);
        }
        let fields: Vec<LivenessFields> = pipe.query_async(conn).await.map_err(|e| self.failed(e))?;
        Ok(ids
            .into_iter()
            .zip(fields)
            .filter(|(_, f)| match f {
                (Some(ends_at), Some(idle_secs), Some(touched), Some(u)) => {
                    u == user
                        && Lifetime {
                            ends_at: *ends_at,
                            idle_secs: *idle_secs,
                        }
                        .expires_at(*touched)
                            > now
                }
                _ => false,
            })
            .map(|(id, _)| id)
            .collect())
    }

    /// One SCAN page of keys matching `pattern`; cursor 0 starts and ends the walk.
    async fn scan_page(
        &self,
        pattern: &str,
        cursor: u64,
        conn: &mut ConnectionManager,
    ) -> Result<(u64, Vec<String>), StoreError> {
        redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(SCAN_PAGE)
            .query_async(conn)
            .await
            .map_err(|e| self.failed(e))
    }

    /// A session from its hash fields; `None` when absent, or when its items do not open
    /// (see `sealing`: counted and logged there).
    fn decode_session(
        &self,
        replica_set: &str,
        session_id: &str,
        fields: Vec<Option<Vec<u8>>>,
    ) -> Result<Option<Session>, StoreError> {
        decode_session(
            fields,
            |stored| self.sealing.open(replica_set, session_id, stored),
            |stored| self.sealing.open_change(replica_set, session_id, stored),
        )
    }

    /// The stored form of a session's items: encoded, and sealed where the mode says so.
    fn stored_items(&self, replica_set: &str, session_id: &str, session: &Session) -> Vec<u8> {
        self.sealing.seal(replica_set, session_id, encode_items(&session.items))
    }
}

/// The fields of a session hash, in the order `decode_session` reads them.
const SESSION_FIELDS: [&str; 11] = ["v", "d", "e", "i", "t", "c", "u", "n", "r", "xv", "x"];

/// The fields getSession's answer reads, in the order `decode_answer` takes them: each more
/// field costs the Redis client's reply parser about as much as a small command's whole reply.
const ANSWER_FIELDS: [&str; 7] = ["v", "d", "e", "i", "t", "xv", "x"];

/// How a script names an item: class and instance, apart by a NUL (XML text has none).
fn item_field(class: &str, instance: &str) -> Vec<u8> {
    [class.as_bytes(), b"\0", instance.as_bytes()].concat()
}

/// The `k` field: which item identifies the session's user.
fn user_key_field(items: &[DataItem]) -> Vec<u8> {
    let (class, instance) = user_key_item(items);
    item_field(class, instance)
}

/// A session's `e`, `i`, `t` and `u`: enough to tell whether it is live and whose.
type LivenessFields = (Option<i64>, Option<i64>, Option<i64>, Option<String>);

/// Keys asked for per SCAN call in administrative walks: one page held at a time.
const SCAN_PAGE: usize = 500;

/// How long a user index must live for a session of this lifetime, from `now`.
fn index_keep_ms(lifetime: &Lifetime, now: i64) -> i64 {
    lifetime.ends_at.saturating_sub(now).saturating_mul(1000)
}

/// The status number a script answers first.
fn status_of(answer: &[Value]) -> i64 {
    answer
        .first()
        .and_then(|v| redis::from_redis_value(v).ok())
        .unwrap_or(-1)
}

/// The session IDs a script answers after its status (the ones it displaced).
fn ids_after_status(answer: &[Value]) -> Vec<String> {
    answer
        .iter()
        .skip(1)
        .filter_map(|v| redis::from_redis_value::<String>(v).ok())
        .collect()
}

fn unavailable(e: redis::RedisError) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

/// A stored number field, or an error naming it.
fn number_field(b: Option<&[u8]>, name: &str) -> Result<i64, StoreError> {
    let b = b.ok_or_else(|| StoreError::Corrupt(format!("session field {name} is missing")))?;
    std::str::from_utf8(b)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| StoreError::Corrupt(format!("session field {name} is not a number")))
}

/// A session's items as stored: the record, opened, and the changes logged since, merged in
/// order (`items::merge`).
struct StoredItems {
    record: Vec<u8>,
    changes: Vec<DataItem>,
}

/// A session's items from its `d`, `xv` and `x` fields: the record, opened, and the change log
/// while it counts. `None` when the record or a logged change does not open.
fn stored_items(
    version_field: &[u8],
    record: Option<Vec<u8>>,
    logged_to: Option<Vec<u8>>,
    log: Option<Vec<u8>>,
    open: impl FnOnce(Vec<u8>) -> Option<Vec<u8>>,
    open_change: impl Fn(Vec<u8>) -> Option<Vec<u8>>,
) -> Result<Option<StoredItems>, StoreError> {
    let corrupt = |e: super::record::RecordError| StoreError::Corrupt(e.to_string());
    let Some(record) = open(record.unwrap_or_default()) else {
        return Ok(None);
    };
    // The change log counts only while it brought the record to its version: a replacement
    // by a shim that knows no log leaves one behind, older than the items it wrote.
    let mut changes = Vec::new();
    if let (Some(log), true) = (log, logged_to.as_deref() == Some(version_field)) {
        for entry in log_entries(&log).map_err(corrupt)? {
            let Some(change) = open_change(entry.to_vec()) else {
                return Ok(None);
            };
            merge(&mut changes, decode_items(&change).map_err(corrupt)?);
        }
    }
    Ok(Some(StoredItems { record, changes }))
}

/// The fields both reads begin with, `v d e i t`.
struct SessionHead {
    version_field: Vec<u8>,
    version: u64,
    record: Option<Vec<u8>>,
    lifetime: Lifetime,
    touched: i64,
}

impl SessionHead {
    /// `None` when the session is absent.
    fn read(next: &mut impl FnMut() -> Option<Vec<u8>>) -> Result<Option<Self>, StoreError> {
        let Some(version_field) = next() else { return Ok(None) };
        let version = number_field(Some(&version_field), "v")? as u64;
        let record = next();
        let ends_at = number_field(next().as_deref(), "e")?;
        let idle_secs = number_field(next().as_deref(), "i")?;
        let touched = number_field(next().as_deref(), "t")?;
        Ok(Some(Self {
            version_field,
            version,
            record,
            lifetime: Lifetime { ends_at, idle_secs },
            touched,
        }))
    }

    /// `Session::is_live`.
    fn is_live(&self, now: i64) -> bool {
        self.lifetime.expires_at(self.touched) > now
    }
}

/// A session from its hash fields (`SESSION_FIELDS`); `None` when absent, or when its items do
/// not open.
fn decode_session(
    fields: Vec<Option<Vec<u8>>>,
    open: impl FnOnce(Vec<u8>) -> Option<Vec<u8>>,
    open_change: impl Fn(Vec<u8>) -> Option<Vec<u8>>,
) -> Result<Option<Session>, StoreError> {
    let mut f = fields.into_iter();
    let mut next = || f.next().flatten();
    let Some(head) = SessionHead::read(&mut next)? else {
        return Ok(None);
    };
    let created = number_field(next().as_deref(), "c")?;
    let user = next().and_then(|u| String::from_utf8(u).ok()).filter(|u| !u.is_empty());
    // Records written before incarnations and creators were kept have neither.
    let incarnation = match next() {
        Some(n) => std::str::from_utf8(&n)
            .ok()
            .and_then(|s| s.parse::<u64>().ok())
            .ok_or_else(|| StoreError::Corrupt("session field n is not a number".into()))?,
        None => 0,
    };
    let creator = next().and_then(|r| String::from_utf8(r).ok()).unwrap_or_default();
    let Some(items) = stored_items(&head.version_field, head.record, next(), next(), open, open_change)? else {
        return Ok(None);
    };
    let corrupt = |e: super::record::RecordError| StoreError::Corrupt(e.to_string());
    let mut decoded = decode_items(&items.record).map_err(corrupt)?;
    merge(&mut decoded, items.changes);
    Ok(Some(Session {
        version: head.version,
        items: decoded,
        lifetime: head.lifetime,
        touched: head.touched,
        created,
        user,
        incarnation,
        creator,
    }))
}

/// getSession's read of a session (`ANSWER_FIELDS`): what the rules need, and the items
/// written into answer markup already; `None` when absent, or when its items do not open.
fn decode_answer(
    fields: Vec<Option<Vec<u8>>>,
    open: impl FnOnce(Vec<u8>) -> Option<Vec<u8>>,
    open_change: impl Fn(Vec<u8>) -> Option<Vec<u8>>,
) -> Result<Option<(SessionHead, ItemsMarkup)>, StoreError> {
    let mut f = fields.into_iter();
    let mut next = || f.next().flatten();
    let Some(mut head) = SessionHead::read(&mut next)? else {
        return Ok(None);
    };
    let record = head.record.take();
    let Some(items) = stored_items(&head.version_field, record, next(), next(), open, open_change)? else {
        return Ok(None);
    };
    let markup = ItemsMarkup::write(&items.record, &items.changes).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    Ok(Some((head, markup)))
}

fn keys_from(values: Vec<String>) -> Result<KeyMaterial, StoreError> {
    let n = |s: &str| {
        s.parse::<i64>()
            .map_err(|_| StoreError::Corrupt("key material is not numeric".into()))
    };
    match values.as_slice() {
        [cur, cur_id, old, old_id, created] => Ok(KeyMaterial {
            current: cur.clone(),
            current_id: n(cur_id)? as u64,
            previous: old.clone(),
            previous_id: n(old_id)? as u64,
            created: n(created)?,
        }),
        _ => Err(StoreError::Corrupt("key material is incomplete".into())),
    }
}

fn parse_member(replica: String, value: &str) -> Option<Member> {
    let mut parts = value.rsplitn(3, '\t');
    let last_seen = parts.next()?.parse().ok()?;
    let joined = parts.next()?.parse().ok()?;
    let instance = parts.next()?.to_string();
    Some(Member {
        replica,
        instance,
        joined,
        last_seen,
    })
}

#[async_trait]
impl Store for RedisStore {
    async fn create_session(
        &self,
        replica_set: &str,
        session_id: &str,
        session: &Session,
        limit: &SessionLimit,
        now: i64,
    ) -> Result<CreateOutcome, StoreError> {
        let mut call = self.scripts.create.key(self.session_key(replica_set, session_id));
        if let Some(user) = &session.user {
            call.key(self.user_key(replica_set, user));
        }
        let expires_ms = session.lifetime.expires_at(session.touched) * 1000;
        call.arg(self.stored_items(replica_set, session_id, session))
            .arg(session.lifetime.ends_at)
            .arg(session.lifetime.idle_secs)
            .arg(session.touched)
            .arg(session.created)
            .arg(session.user.as_deref().unwrap_or(""))
            .arg(expires_ms)
            .arg(limit.max)
            .arg(if limit.displace { 1 } else { 0 })
            .arg(session_id)
            .arg(self.session_key_prefix(replica_set))
            .arg(now)
            .arg(index_keep_ms(&session.lifetime, now))
            .arg(session.incarnation.to_string())
            .arg(&session.creator)
            .arg(self.user_key_prefix(replica_set))
            .arg(user_key_field(&session.items));
        let answer: Vec<Value> = self.write(&call).await?;
        match status_of(&answer) {
            0 => Ok(CreateOutcome::IdInUse),
            1 => Ok(CreateOutcome::LimitReached),
            2 => Ok(CreateOutcome::Created {
                displaced: ids_after_status(&answer),
            }),
            _ => Err(StoreError::Corrupt("unexpected answer from the create script".into())),
        }
    }

    async fn get_session(
        &self,
        replica_set: &str,
        session_id: &str,
        touch: Touch,
        now: i64,
    ) -> Result<Option<Session>, StoreError> {
        // One HMGET; the touch script runs only when the read must record activity (see Touch).
        // A session past its end stays until its TTL drops it, invisible meanwhile.
        let mut conn = self.conn().await?;
        let Some(session) = self
            .read_session(replica_set, session_id, &mut conn)
            .await?
            .filter(|s| s.is_live(now))
        else {
            return Ok(None);
        };
        let live = self
            .touch_if_due(replica_set, session_id, touch, session.touched, now, &mut conn)
            .await?;
        Ok(live.then_some(session))
    }

    async fn session_answer(
        &self,
        replica_set: &str,
        session_id: &str,
        touch: Touch,
        now: i64,
    ) -> Result<Option<(u64, AnswerItems)>, StoreError> {
        // As get_session, reading only what the answer needs and leaving the record encoded.
        let mut conn = self.conn().await?;
        let fields = self
            .session_fields(replica_set, session_id, &ANSWER_FIELDS, &mut conn)
            .await?;
        let Some((head, markup)) = decode_answer(
            fields,
            |stored| self.sealing.open(replica_set, session_id, stored),
            |stored| self.sealing.open_change(replica_set, session_id, stored),
        )?
        .filter(|(head, _)| head.is_live(now)) else {
            return Ok(None);
        };
        let live = self
            .touch_if_due(replica_set, session_id, touch, head.touched, now, &mut conn)
            .await?;
        Ok(live.then_some((head.version, AnswerItems::Written(markup))))
    }

    async fn replace_session(
        &self,
        replica_set: &str,
        session_id: &str,
        change: &Replacement,
    ) -> Result<ReplaceOutcome, StoreError> {
        let session = &change.session;
        let session_key = self.session_key(replica_set, session_id);
        let mut call = self.scripts.replace.key(&session_key);
        // The index entry follows the session's user. An index that is not there is named by
        // the session key, not "": an ACL that limits the shim to its prefix refuses a call
        // naming a key outside it, the empty one too.
        let moved = change.previous_user != session.user;
        let index_or_session = |user: Option<&String>| {
            user.map(|u| self.user_key(replica_set, u))
                .unwrap_or_else(|| session_key.clone())
        };
        call.key(index_or_session(change.previous_user.as_ref().filter(|_| moved)))
            .key(index_or_session(session.user.as_ref()));
        call.arg(change.expected_version)
            .arg(session.version)
            .arg(self.stored_items(replica_set, session_id, session))
            .arg(session.lifetime.ends_at)
            .arg(session.lifetime.idle_secs)
            .arg(session.touched)
            .arg(session.user.as_deref().unwrap_or(""))
            .arg(session.lifetime.expires_at(session.touched) * 1000)
            .arg(session_id)
            .arg(index_keep_ms(&session.lifetime, change.now))
            .arg(change.now)
            .arg(session.incarnation.to_string())
            .arg(change.limit.max)
            .arg(if change.limit.displace { 1 } else { 0 })
            .arg(self.session_key_prefix(replica_set))
            .arg(self.user_key_prefix(replica_set))
            .arg(if moved { 1 } else { 0 })
            .arg(user_key_field(&session.items));
        let answer: Vec<Value> = self.write(&call).await?;
        match (status_of(&answer), answer.get(1)) {
            (0, _) => Ok(ReplaceOutcome::NotFound),
            (1, Some(stored)) => Ok(ReplaceOutcome::VersionMismatch {
                stored: redis::from_redis_value(stored).unwrap_or(0),
            }),
            (2, _) => Ok(ReplaceOutcome::Replaced {
                displaced: ids_after_status(&answer),
            }),
            (3, _) => Ok(ReplaceOutcome::LimitReached),
            _ => Err(StoreError::Corrupt("unexpected answer from the replace script".into())),
        }
    }

    async fn update_items(
        &self,
        replica_set: &str,
        session_id: &str,
        update: &ItemUpdate<'_>,
    ) -> Result<UpdateOutcome, StoreError> {
        let entry = self
            .sealing
            .seal_change(replica_set, session_id, encode_items(update.items));
        let next_version = update.expected_version + 1;
        let mut call = self.scripts.update.key(self.session_key(replica_set, session_id));
        call.arg(update.expected_version)
            .arg(next_version)
            .arg(update.now)
            .arg(log_entry(&entry));
        for item in update.items {
            call.arg(item_field(&item.data_class, &item.instance));
        }
        match self.write(&call).await? {
            Value::Int(0) => Ok(UpdateOutcome::NotFound),
            Value::Array(answer) if status_of(&answer) == 1 && answer.len() == 2 => {
                Ok(UpdateOutcome::VersionMismatch {
                    stored: redis::from_redis_value(&answer[1]).unwrap_or(0),
                })
            }
            Value::Int(2) => Ok(UpdateOutcome::Updated { version: next_version }),
            Value::Int(3) => Ok(UpdateOutcome::NeedsReplacement),
            _ => Err(StoreError::Corrupt("unexpected answer from the update script".into())),
        }
    }

    async fn delete_session(&self, replica_set: &str, session_id: &str) -> Result<bool, StoreError> {
        let mut call = self.scripts.delete.key(self.session_key(replica_set, session_id));
        call.arg(self.user_key_prefix(replica_set)).arg(session_id);
        let deleted: i64 = self.write(&call).await?;
        Ok(deleted == 1)
    }

    async fn end_if_unchanged(&self, replica_set: &str, session_id: &str, seen: &Session) -> Result<bool, StoreError> {
        let mut conn = self.conn().await?;
        let ended: i64 = self
            .scripts
            .end_if_unchanged
            .key(self.session_key(replica_set, session_id))
            .arg(seen.version)
            .arg(seen.touched)
            .arg(seen.incarnation.to_string())
            .arg(self.user_key_prefix(replica_set))
            .arg(session_id)
            .invoke_async(&mut conn)
            .await
            .map_err(|e| self.failed(e))?;
        Ok(ended == 1)
    }

    async fn user_sessions(&self, replica_set: &str, user: &str, now: i64) -> Result<Vec<String>, StoreError> {
        let mut conn = self.conn().await?;
        let ids: Vec<String> = conn
            .zrange(self.user_key(replica_set, user), 0, -1)
            .await
            .map_err(|e| self.failed(e))?;
        self.live_of_user(replica_set, user, ids, now, &mut conn).await
    }

    async fn scan_sessions(
        &self,
        replica_set: &str,
        now: i64,
        visit: &mut SessionVisitor<'_>,
    ) -> Result<(), StoreError> {
        let mut conn = self.conn().await?;
        let prefix = self.session_key_prefix(replica_set);
        let pattern = format!("{}*", glob_escape(&prefix));
        let mut cursor = 0;
        loop {
            let (next, keys) = self.scan_page(&pattern, cursor, &mut conn).await?;
            let mut pipe = redis::pipe();
            for key in &keys {
                pipe.cmd("HMGET").arg(key).arg(&SESSION_FIELDS);
            }
            let pages: Vec<Vec<Option<Vec<u8>>>> = pipe.query_async(&mut conn).await.map_err(|e| self.failed(e))?;
            for (key, fields) in keys.iter().zip(pages) {
                let Some(id) = key.strip_prefix(&prefix).and_then(|r| r.strip_suffix('}')) else {
                    continue;
                };
                // SCAN may name a key twice while Redis resizes its table; without holding
                // every key seen, a listing then counts that session twice (rare, harmless).
                if let Some(session) = self.decode_session(replica_set, id, fields)? {
                    if session.is_live(now) {
                        visit(id, &session);
                    }
                }
            }
            if next == 0 {
                return Ok(());
            }
            cursor = next;
        }
    }

    async fn scan_users(
        &self,
        replica_set: &str,
        pattern: &str,
        now: i64,
        visit: &mut UserVisitor<'_>,
    ) -> Result<(), StoreError> {
        let mut conn = self.conn().await?;
        let prefix = self.user_key_prefix(replica_set);
        let glob = format!("{}{}}}", glob_escape(&prefix), pattern_glob(pattern));
        let mut cursor = 0;
        loop {
            let (next, keys) = self.scan_page(&glob, cursor, &mut conn).await?;
            let mut pipe = redis::pipe();
            for key in &keys {
                pipe.zrange(key, 0, -1);
            }
            let indexes: Vec<Vec<String>> = pipe.query_async(&mut conn).await.map_err(|e| self.failed(e))?;
            for (key, ids) in keys.iter().zip(indexes) {
                let Some(user) = key.strip_prefix(&prefix).and_then(|r| r.strip_suffix('}')) else {
                    continue;
                };
                let live = self.live_of_user(replica_set, user, ids, now, &mut conn).await?;
                if !live.is_empty() {
                    visit(user, &live);
                }
            }
            if next == 0 {
                return Ok(());
            }
            cursor = next;
        }
    }

    async fn join(
        &self,
        replica_set: &str,
        member: &Member,
        capabilities: u64,
        stale_before: i64,
        max_members: u32,
    ) -> Result<JoinOutcome, StoreError> {
        let mut conn = self.conn().await?;
        let mut call = self.scripts.join.key(self.set_key(replica_set));
        self.membership(&mut call, replica_set)
            .key(self.sets_key())
            .arg(&member.replica)
            .arg(&member.instance)
            .arg(capabilities)
            .arg(member.joined)
            .arg(stale_before)
            .arg(replica_set)
            .arg(max_members);
        let answer: Vec<String> = call.invoke_async(&mut conn).await.map_err(|e| self.failed(e))?;
        match answer.as_slice() {
            [s] if s == "0" => Ok(JoinOutcome::Joined),
            [s, caps] if s == "1" => Ok(JoinOutcome::CapabilityMismatch {
                expected: caps.parse().unwrap_or(0),
            }),
            [s, owner] if s == "2" => Ok(JoinOutcome::InstanceOwnedBy { replica: owner.clone() }),
            [s] if s == "3" => Ok(JoinOutcome::Full { max: max_members }),
            _ => Err(StoreError::Corrupt("unexpected answer from the join script".into())),
        }
    }

    async fn heartbeat(&self, replica_set: &str, replica: &str, now: i64) -> Result<bool, StoreError> {
        let mut conn = self.conn().await?;
        let mut call = self.scripts.heartbeat.prepare_invoke();
        self.membership(&mut call, replica_set).arg(replica).arg(now);
        let member: i64 = call.invoke_async(&mut conn).await.map_err(|e| self.failed(e))?;
        Ok(member == 1)
    }

    async fn leave(&self, replica: &str) -> Result<Vec<String>, StoreError> {
        let mut conn = self.conn().await?;
        let mut sets: Vec<String> = conn.smembers(self.sets_key()).await.map_err(|e| self.failed(e))?;
        sets.sort();
        let mut left = Vec::new();
        for set in sets {
            let mut call = self.scripts.leave.prepare_invoke();
            self.membership(&mut call, &set).arg(replica);
            let removed: i64 = call.invoke_async(&mut conn).await.map_err(|e| self.failed(e))?;
            if removed == 1 {
                left.push(set);
            }
        }
        Ok(left)
    }

    async fn members(&self, replica_set: &str, stale_before: i64) -> Result<Vec<Member>, StoreError> {
        let mut conn = self.conn().await?;
        let mut call = self.scripts.members.prepare_invoke();
        self.membership(&mut call, replica_set).arg(stale_before);
        let live: Vec<(String, String)> = call.invoke_async(&mut conn).await.map_err(|e| self.failed(e))?;
        let mut members: Vec<Member> = live
            .into_iter()
            .filter_map(|(replica, value)| parse_member(replica, &value))
            .collect();
        members.sort_by(|a, b| a.joined.cmp(&b.joined).then_with(|| a.replica.cmp(&b.replica)));
        Ok(members)
    }

    async fn replica_sets(&self) -> Result<Vec<String>, StoreError> {
        let mut conn = self.conn().await?;
        let mut sets: Vec<String> = conn.smembers(self.sets_key()).await.map_err(|e| self.failed(e))?;
        sets.sort();
        Ok(sets)
    }

    async fn key_material(&self, replica_set: &str, candidate: &str, now: i64) -> Result<KeyMaterial, StoreError> {
        let mut conn = self.conn().await?;
        let values: Vec<String> = self
            .scripts
            .keys
            .key(self.set_key(replica_set))
            .key(self.sets_key())
            .arg(candidate)
            .arg(now)
            .arg(replica_set)
            .invoke_async(&mut conn)
            .await
            .map_err(|e| self.failed(e))?;
        keys_from(values)
    }

    async fn rotate_key(
        &self,
        replica_set: &str,
        candidate: &str,
        now: i64,
        interval_secs: i64,
    ) -> Result<Option<KeyMaterial>, StoreError> {
        let mut conn = self.conn().await?;
        let mut values: Vec<String> = self
            .scripts
            .rotate
            .key(self.set_key(replica_set))
            .arg(candidate)
            .arg(now)
            .arg(interval_secs)
            .arg(self.rotation_channel())
            .arg(replica_set)
            .invoke_async(&mut conn)
            .await
            .map_err(|e| self.failed(e))?;
        if values.first().map(String::as_str) != Some("1") {
            return Ok(None);
        }
        values.remove(0);
        keys_from(values).map(Some)
    }

    fn rotations(&self) -> broadcast::Receiver<Rotation> {
        self.rotations.subscribe()
    }

    async fn ping(&self) -> Result<(), StoreError> {
        let mut conn = self.conn().await?;
        let _: String = redis::cmd("PING")
            .query_async(&mut conn)
            .await
            .map_err(|e| self.failed(e))?;
        Ok(())
    }

    async fn health(&self) -> Result<Option<ServerHealth>, StoreError> {
        let mut conn = self.conn().await?;
        let info: String = redis::cmd("INFO")
            .arg("replication")
            .arg("memory")
            .query_async(&mut conn)
            .await
            .map_err(|e| self.failed(e))?;
        Ok(Some(ServerHealth::from_info(&info)))
    }
}

/// A SessionDataValue pattern as a Redis glob: `*` stays a wildcard, every other glob
/// character is literal.
fn pattern_glob(pattern: &str) -> String {
    pattern.split('*').map(glob_escape).collect::<Vec<_>>().join("*")
}

/// Escapes Redis glob characters so a literal prefix matches only itself.
fn glob_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

// The Lua helpers the session scripts share, one macro each (so `concat!` can join them): a
// script begins with the ones it calls, since Redis makes each helper's closure anew on every
// call. `live` is `Session::is_live`, `admit` the memory store's `State::admit`, and `index`
// keeps the order `memory::IndexEntry` does: 1048576 is `memory::ARRIVALS_PER_SECOND`.
/// `ends_of(e, i, t)`: when a session last active at `t` ends (`Lifetime::expires_at`).
macro_rules! lua_ends_of {
    () => {
        r#"
local function ends_of(e, i, t)
  local ends, idle = tonumber(e), tonumber(i)
  if idle > 0 and tonumber(t) + idle < ends then ends = tonumber(t) + idle end
  return ends
end
"#
    };
}

/// `pexpire_at(key, seconds)`: PEXPIREAT with the time written as an integer. Redis writes a
/// Lua number argument with a float format (`%.17g`), which costs more than a script's rules.
macro_rules! lua_pexpire_at {
    () => {
        r#"
local function pexpire_at(key, seconds)
  return redis.call('PEXPIREAT', key, string.format('%d000', seconds))
end
"#
    };
}

/// `live(key, now, user)`; needs `lua_ends_of`.
macro_rules! lua_live {
    () => {
        r#"
-- Whether the session is live at `now` and, when `user` is given, still that user's.
local function live(key, now, user)
  local f = redis.call('HMGET', key, 'e', 'i', 't', 'u')
  if not f[1] then return false end
  if user and f[4] ~= user then return false end
  return ends_of(f[1], f[2], f[3]) > now
end
"#
    };
}

/// `drop(key, user_prefix, id)`.
macro_rules! lua_drop {
    () => {
        r#"
-- Deletes a session and its user index entry.
local function drop(key, user_prefix, id)
  local u = redis.call('HGET', key, 'u')
  local n = redis.call('DEL', key)
  if u and u ~= '' then redis.call('ZREM', user_prefix .. u .. '}', id) end
  return n
end
"#
    };
}

/// `admit(...)`; needs `lua_live` and `lua_drop`.
macro_rules! lua_admit {
    () => {
        r#"
-- The concurrent-session rule for one more session of `user` (other than `except`): the IDs
-- it displaced, or nil when the limit refuses. Entries of ended sessions go: all of them
-- under a limit, else among the eight oldest (the likeliest to have ended), which keeps a
-- create O(log n) in the user's index while dead entries still drain.
local function admit(index, user, limit, displace, session_prefix, user_prefix, except, now)
  local last = 7
  if limit > 0 then last = -1 end
  local ids = {}
  for _, id in ipairs(redis.call('ZRANGE', index, 0, last)) do
    if live(session_prefix .. id .. '}', now, user) then
      if id ~= except then ids[#ids + 1] = id end
    else
      redis.call('ZREM', index, id)
    end
  end
  local displaced = {}
  if limit == 0 or #ids < limit then return displaced end
  if displace ~= '1' then return nil end
  for n = 1, #ids - limit + 1 do
    drop(session_prefix .. ids[n] .. '}', user_prefix, ids[n])
    displaced[#displaced + 1] = ids[n]
  end
  return displaced
end
"#
    };
}

/// `index(key, created, id, keep_ms)`.
macro_rules! lua_index {
    () => {
        r#"
-- Adds `id` to a user index: scored by its creation second, plus its arrival within that
-- second when the newest entry was made in the same second.
local function index(key, created, id, keep_ms)
  local step = 1 / 1048576
  local score = created
  local top = redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')
  if top[2] then
    local newest = tonumber(top[2])
    if math.floor(newest) == created then
      score = newest
      if newest + step < created + 1 then score = newest + step end
    end
  end
  redis.call('ZADD', key, string.format('%.17g', score), id)
  if keep_ms > 0 and redis.call('PTTL', key) < keep_ms then redis.call('PEXPIRE', key, keep_ms) end
end
"#
    };
}

/// KEYS: session, [user index]. ARGV: items, ends_at, idle, touched, created, user,
/// expires_ms, limit, displace, id, session key prefix, now, index keep_ms, incarnation,
/// creator, user index prefix, user key item.
/// Answers {0} ID in use, {1} limit reached, {2, displaced...} created. A session key whose
/// session ended by the shim's clock (Redis has not dropped it yet) is not in use.
const CREATE: &str = concat!(
    lua_ends_of!(),
    lua_live!(),
    lua_drop!(),
    lua_admit!(),
    lua_index!(),
    r#"
local now = tonumber(ARGV[12])
if redis.call('EXISTS', KEYS[1]) == 1 then
  if live(KEYS[1], now) then return {0} end
  drop(KEYS[1], ARGV[16], ARGV[10])
end
local displaced = {}
if #KEYS > 1 then
  displaced = admit(KEYS[2], ARGV[6], tonumber(ARGV[8]), ARGV[9], ARGV[11], ARGV[16], ARGV[10], now)
  if not displaced then return {1} end
  index(KEYS[2], tonumber(ARGV[5]), ARGV[10], tonumber(ARGV[13]))
end
redis.call('HSET', KEYS[1], 'v', 0, 'd', ARGV[1], 'e', ARGV[2], 'i', ARGV[3], 't', ARGV[4], 'c', ARGV[5],
  'u', ARGV[6], 'n', ARGV[14], 'r', ARGV[15], 'k', ARGV[17])
redis.call('PEXPIREAT', KEYS[1], ARGV[7])
local answer = {2}
for _, id in ipairs(displaced) do answer[#answer + 1] = id end
return answer
"#
);

/// KEYS: session. ARGV: now. Records activity at `now` and extends the TTL with it, unless
/// activity at `now` or later is recorded already; answers 1 while the session is live, 0
/// when it is gone or ended (a touch never revives one).
const TOUCH: &str = concat!(
    lua_ends_of!(),
    lua_pexpire_at!(),
    r#"
local f = redis.call('HMGET', KEYS[1], 'e', 'i', 't')
if not f[1] then return 0 end
local now = tonumber(ARGV[1])
local e, i, t = tonumber(f[1]), tonumber(f[2]), tonumber(f[3])
if ends_of(e, i, t) <= now then return 0 end
if t < now then
  redis.call('HSET', KEYS[1], 't', ARGV[1])
  pexpire_at(KEYS[1], ends_of(e, i, now))
end
return 1
"#
);

/// KEYS: session, old user index, new user index, where an index that is not there is the
/// session key again (the old one is named only when the user changes).
/// ARGV: expected version, new version, items, ends_at, idle, touched, user, expires_ms, id,
/// index keep_ms, now, incarnation, limit, displace, session key prefix, user index prefix,
/// moved (1 when the user changes), user key item. The items written are whole, so the change
/// log goes.
/// Answers {0} not found, {1, stored} version or incarnation mismatch, {2, displaced...}
/// replaced, {3} the new user is at the limit.
const REPLACE: &str = concat!(
    lua_ends_of!(),
    lua_live!(),
    lua_drop!(),
    lua_admit!(),
    lua_index!(),
    r#"
local now = tonumber(ARGV[11])
local f = redis.call('HMGET', KEYS[1], 'v', 'n', 'c', 'e', 'i', 't')
if not f[1] or ends_of(f[4], f[5], f[6]) <= now then return {0} end
if f[1] ~= ARGV[1] or (f[2] or '0') ~= ARGV[12] then return {1, tonumber(f[1])} end
local moved = ARGV[17] == '1'
local displaced = {}
if moved and KEYS[3] ~= KEYS[1] then
  displaced = admit(KEYS[3], ARGV[7], tonumber(ARGV[13]), ARGV[14], ARGV[15], ARGV[16], ARGV[9], now)
  if not displaced then return {3} end
end
redis.call('HSET', KEYS[1], 'v', ARGV[2], 'd', ARGV[3], 'e', ARGV[4], 'i', ARGV[5], 't', ARGV[6], 'u', ARGV[7],
  'k', ARGV[18])
redis.call('HDEL', KEYS[1], 'x', 'xv')
redis.call('PEXPIREAT', KEYS[1], ARGV[8])
if moved and KEYS[2] ~= KEYS[1] then redis.call('ZREM', KEYS[2], ARGV[9]) end
if KEYS[3] ~= KEYS[1] then
  local keep = tonumber(ARGV[10])
  if moved then
    index(KEYS[3], tonumber(f[3]), ARGV[9], keep)
  elseif keep > 0 and ARGV[4] ~= f[4] and redis.call('PTTL', KEYS[3]) < keep then
    -- The index outlives every session it names from when it named them; only a session
    -- whose end moves can need it longer.
    redis.call('PEXPIRE', KEYS[3], keep)
  end
end
local answer = {2}
for _, id in ipairs(displaced) do answer[#answer + 1] = id end
return answer
"#
);

/// A change log longer than this (in bytes) is merged into the record instead (a
/// replacement): every read replays the log, so it stays a few entries (about 16
/// last-access updates, 5 sealed). A macro, to be written into the update script's text.
macro_rules! max_change_log {
    () => {
        256
    };
}

/// KEYS: session. ARGV: expected version, new version, now, log entry, then the names of the
/// updated items (`item_field`). Appends the entry to the change log (a log left by an older
/// version starts again), moves the version and the activity, extends the TTL; e and i, and
/// with them the lifetime, stay. Answers 0 not found, {1, stored} version mismatch, 2 updated,
/// 3 replace instead: the update names the user's key item, the log would pass its bound
/// (`max_change_log`, written into the script: Lua reads a number argument with strtod), or
/// the record does not say its key item (an earlier shim's). A number, not a table, on the
/// common paths: the table and its reply cost Redis and the client more than the script's
/// rules do.
const UPDATE: &str = concat!(
    lua_ends_of!(),
    lua_pexpire_at!(),
    r#"
local now = tonumber(ARGV[3])
local f = redis.call('HMGET', KEYS[1], 'v', 'e', 'i', 't', 'k', 'xv', 'x')
if not f[1] then return 0 end
-- Numbers once: Lua reads each string with strtod.
local e, i = tonumber(f[2]), tonumber(f[3])
if ends_of(e, i, f[4]) <= now then return 0 end
if f[1] ~= ARGV[1] then return {1, tonumber(f[1])} end
if not f[5] then return 3 end
for n = 5, #ARGV do
  if ARGV[n] == f[5] then return 3 end
end
local log = ''
if f[6] == f[1] and f[7] then log = f[7] end
if #log + #ARGV[4] > "#,
    max_change_log!(),
    r#" then return 3 end
redis.call('HSET', KEYS[1], 'v', ARGV[2], 'xv', ARGV[2], 'x', log .. ARGV[4], 't', ARGV[3])
pexpire_at(KEYS[1], ends_of(e, i, now))
return 2
"#
);

/// KEYS: session. ARGV: user index prefix, id. Deletes the session and its index entry.
const DELETE: &str = concat!(lua_drop!(), "\nreturn drop(KEYS[1], ARGV[1], ARGV[2])\n");

/// KEYS: session. ARGV: version, touched, incarnation, user index prefix, id. Deletes the
/// session only if it is still the one read: the idle decision's second half.
const END_IF_UNCHANGED: &str = concat!(
    lua_drop!(),
    r#"
local f = redis.call('HMGET', KEYS[1], 'v', 't', 'n')
if not f[1] or f[1] ~= ARGV[1] or f[2] ~= ARGV[2] or (f[3] or '0') ~= ARGV[3] then return 0 end
return drop(KEYS[1], ARGV[4], ARGV[5])
"#
);

/// KEYS: members hash, liveness, instances. ARGV: stale_before. Answers the live members
/// (replica, value pairs) and removes the others in the same step.
const MEMBERS: &str = r#"
local all = redis.call('HGETALL', KEYS[1])
local live = {}
for n = 1, #all, 2 do
  local replica, value = all[n], all[n + 1]
  local instance, seen = string.match(value, '^(.*)\t%d+\t(%d+)$')
  if seen and tonumber(seen) >= tonumber(ARGV[1]) then
    live[#live + 1] = replica
    live[#live + 1] = value
  else
    redis.call('HDEL', KEYS[1], replica)
    redis.call('ZREM', KEYS[2], replica)
    if instance and redis.call('HGET', KEYS[3], instance) == replica then redis.call('HDEL', KEYS[3], instance) end
  end
end
return live
"#;

/// KEYS: set hash, members hash, liveness, instances, sets. ARGV: replica, instance, caps,
/// now, stale_before, set, max members (0 = no bound).
/// Answers {'0'} joined, {'1', caps} capability mismatch, {'2', owner} instance taken,
/// {'3'} the set is full. Stale members leave first, each once, found by the liveness index
/// (a member a shim without that index heard from is put back in it): O(log n) amortized.
const JOIN: &str = r#"
local stale_before = tonumber(ARGV[5])
for _, r in ipairs(redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', '(' .. ARGV[5])) do
  local value = redis.call('HGET', KEYS[2], r)
  local instance, seen
  if value then instance, seen = string.match(value, '^(.*)\t%d+\t(%d+)$') end
  if seen and tonumber(seen) >= stale_before then
    redis.call('ZADD', KEYS[3], seen, r)
  else
    redis.call('HDEL', KEYS[2], r)
    redis.call('ZREM', KEYS[3], r)
    if instance and redis.call('HGET', KEYS[4], instance) == r then redis.call('HDEL', KEYS[4], instance) end
  end
end
local owner = redis.call('HGET', KEYS[4], ARGV[2])
if owner and owner ~= ARGV[1] and redis.call('HEXISTS', KEYS[2], owner) == 1 then return {'2', owner} end
local known = redis.call('ZSCORE', KEYS[3], ARGV[1])
local others = redis.call('ZCARD', KEYS[3])
if known then others = others - 1 end
local caps = redis.call('HGET', KEYS[1], 'caps')
if caps and caps ~= ARGV[3] and others > 0 then return {'1', caps} end
local max = tonumber(ARGV[7])
if not known and max > 0 and others >= max then return {'3'} end
local previous = redis.call('HGET', KEYS[2], ARGV[1])
if previous then
  local old = string.match(previous, '^(.*)\t%d+\t%d+$')
  if old and old ~= ARGV[2] and redis.call('HGET', KEYS[4], old) == ARGV[1] then redis.call('HDEL', KEYS[4], old) end
end
redis.call('HSET', KEYS[1], 'caps', ARGV[3])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2] .. '\t' .. ARGV[4] .. '\t' .. ARGV[4])
redis.call('ZADD', KEYS[3], ARGV[4], ARGV[1])
redis.call('HSET', KEYS[4], ARGV[2], ARGV[1])
redis.call('SADD', KEYS[5], ARGV[6])
return {'0'}
"#;

/// KEYS: members hash, liveness, instances. ARGV: replica, now. Moves last_seen forward for
/// a member (indexing it, if a shim without the indexes made it).
const HEARTBEAT: &str = r#"
local value = redis.call('HGET', KEYS[1], ARGV[1])
if not value then return 0 end
local instance, joined, seen = string.match(value, '^(.*)\t(%d+)\t(%d+)$')
if not seen then return 1 end
if tonumber(seen) < tonumber(ARGV[2]) then
  redis.call('HSET', KEYS[1], ARGV[1], instance .. '\t' .. joined .. '\t' .. ARGV[2])
  redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
else
  redis.call('ZADD', KEYS[2], 'NX', seen, ARGV[1])
end
redis.call('HSETNX', KEYS[3], instance, ARGV[1])
return 1
"#;

/// KEYS: members hash, liveness, instances. ARGV: replica. Removes it; 1 when it was one.
const LEAVE: &str = r#"
local value = redis.call('HGET', KEYS[1], ARGV[1])
if not value then return 0 end
local instance = string.match(value, '^(.*)\t%d+\t%d+$')
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
if instance and redis.call('HGET', KEYS[3], instance) == ARGV[1] then redis.call('HDEL', KEYS[3], instance) end
return 1
"#;

/// KEYS: set hash, sets. ARGV: candidate, now, set. The key material, made on first use
/// (which counts the set among the cache's sets).
const KEYS: &str = r#"
local k = redis.call('HMGET', KEYS[1], 'cur', 'cur_id', 'old', 'old_id', 'created')
if k[1] then return k end
redis.call('HSET', KEYS[1], 'cur', ARGV[1], 'cur_id', 0, 'old', ARGV[1], 'old_id', 0, 'created', ARGV[2])
redis.call('SADD', KEYS[2], ARGV[3])
return {ARGV[1], '0', ARGV[1], '0', ARGV[2]}
"#;

/// KEYS: set hash. ARGV: candidate, now, interval, channel, set. Rotates when due and
/// announces it; answers {'1', material...} on rotation, {'0'} otherwise.
const ROTATE: &str = r#"
local k = redis.call('HMGET', KEYS[1], 'cur', 'cur_id', 'old', 'old_id', 'created')
if not k[1] then
  redis.call('HSET', KEYS[1], 'cur', ARGV[1], 'cur_id', 0, 'old', ARGV[1], 'old_id', 0, 'created', ARGV[2])
  return {'0'}
end
if tonumber(k[5]) + tonumber(ARGV[3]) > tonumber(ARGV[2]) then return {'0'} end
local id = tostring(tonumber(k[2]) + 1)
redis.call('HSET', KEYS[1], 'cur', ARGV[1], 'cur_id', id, 'old', k[1], 'old_id', k[2], 'created', ARGV[2])
redis.call('PUBLISH', ARGV[4], ARGV[5])
return {'1', ARGV[1], id, k[1], k[2], ARGV[2]}
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_passwords_in_urls() {
        assert_eq!(
            redact_url("redis://shim:s3cret@redis:6379/0"),
            "redis://shim:<redacted>@redis:6379/0"
        );
        assert_eq!(redact_url("redis://redis:6379"), "redis://redis:6379");
    }

    #[test]
    fn members_parse_with_tabs_in_instances() {
        let m = parse_member("web".into(), "a\tb:web\t10\t20").unwrap();
        assert_eq!((m.instance.as_str(), m.joined, m.last_seen), ("a\tb:web", 10, 20));
        assert!(parse_member("web".into(), "garbage").is_none());
    }

    #[test]
    fn the_scripts_keep_the_memory_stores_arrival_order() {
        let resolution = crate::store::memory::ARRIVALS_PER_SECOND.to_string();
        assert!(CREATE.contains(&format!("1 / {resolution}")));
    }

    #[test]
    fn patterns_become_globs_with_only_the_star_free() {
        assert_eq!(pattern_glob("a*b?[c]"), "a*b\\?\\[c\\]");
    }

    #[test]
    fn glob_escaping_keeps_prefixes_literal() {
        assert_eq!(glob_escape("p:s:{3:a*b:"), "p:s:{3:a\\*b:");
    }
}
