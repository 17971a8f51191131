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
//! | `P s:{<n>:<rs>:<id>}` | hash | one session: `v` version, `d` items (see `record`), `e` lifetime end, `i` idle seconds, `t` last activity, `c` creation, `u` user |
//! | `P u:{<n>:<rs>:<user>}` | sorted set | the user's session IDs scored by lifetime end (ms, so oldest first); every create drops entries whose lifetime ended and looks for sessions that ended early; the set itself expires with its longest-lived session |
//! | `P rs:{<rs>}` | hash | the set's capability mask `caps` and key material `cur`, `cur_id`, `old`, `old_id`, `created` |
//! | `P m:{<rs>}` | hash | members: replica → `instance \t joined \t last_seen` |
//! | `P sets` | set | every replica set ever joined |
//! | `P keys` | channel | key rotations, the message is the replica set |
//!
//! Every session key carries a TTL at the earlier of its lifetime end and its last activity
//! plus its inactivity timeout, so ended sessions vanish without any scan. getSession is one
//! script call (read and extend the TTL): one round trip. createSession (with the limit and
//! displacement), changeSession's compare-and-set on the version and terminateSession (with
//! the index) are one script each, so they are atomic.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{AsyncCommands, IntoConnectionInfo, Script, Value};
use std::sync::atomic::{AtomicBool, Ordering};

use redis::sentinel::{SentinelClient, SentinelClientBuilder, SentinelServerType};
use tokio::sync::{broadcast, Mutex, RwLock};

use super::record::{decode_items, encode_items};
use super::sealing::{KeyRing, Mode, Sealing};
use super::{
    CreateOutcome, JoinOutcome, KeyMaterial, Lifetime, Member, ReplaceOutcome, Rotation, Session, SessionLimit, Store,
    StoreError,
};

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
    connection: RwLock<Option<ConnectionManager>>,
    /// Set when a failure suggests the primary moved (Sentinel): the next call asks again.
    rediscover: AtomicBool,
    rotations: broadcast::Sender<Rotation>,
    scripts: Scripts,
    sealing: Arc<Sealing>,
}

struct Scripts {
    create: Script,
    get: Script,
    replace: Script,
    delete: Script,
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
            settings,
            connection: RwLock::new(None),
            rediscover: AtomicBool::new(false),
            rotations: broadcast::channel(64).0,
            scripts: Scripts {
                create: Script::new(CREATE),
                get: Script::new(GET),
                replace: Script::new(REPLACE),
                delete: Script::new(DELETE),
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
        if !self.rediscover.load(Ordering::Relaxed) {
            if let Some(manager) = self.connection.read().await.as_ref() {
                return Ok(manager.clone());
            }
        }
        let mut slot = self.connection.write().await;
        if self.rediscover.swap(false, Ordering::Relaxed) {
            *slot = None;
        }
        if let Some(manager) = slot.as_ref() {
            return Ok(manager.clone());
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
        *slot = Some(manager.clone());
        Ok(manager)
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
            self.rediscover.store(true, Ordering::Relaxed);
        }
        unavailable(e)
    }

    fn session_key(&self, replica_set: &str, id: &str) -> String {
        format!("{}{}}}", self.session_key_prefix(replica_set), id)
    }

    /// Everything of a session key before the session ID (the scripts build keys from IDs).
    fn session_key_prefix(&self, replica_set: &str) -> String {
        format!("{}s:{{{}:{}:", self.settings.key_prefix, replica_set.len(), replica_set)
    }

    fn user_key_prefix(&self, replica_set: &str) -> String {
        format!("{}u:{{{}:{}:", self.settings.key_prefix, replica_set.len(), replica_set)
    }

    fn user_key(&self, replica_set: &str, user: &str) -> String {
        format!("{}{}}}", self.user_key_prefix(replica_set), user)
    }

    fn set_key(&self, replica_set: &str) -> String {
        format!("{}rs:{{{}}}", self.settings.key_prefix, replica_set)
    }

    fn members_key(&self, replica_set: &str) -> String {
        format!("{}m:{{{}}}", self.settings.key_prefix, replica_set)
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
        let fields: Vec<Option<Vec<u8>>> = redis::cmd("HMGET")
            .arg(self.session_key(replica_set, session_id))
            .arg(&["v", "d", "e", "i", "t", "c", "u"])
            .query_async(conn)
            .await
            .map_err(|e| self.failed(e))?;
        self.decode_session(replica_set, session_id, fields)
    }

    /// A session from its hash fields; `None` when absent, or when its items do not open
    /// (see `sealing`: counted and logged there).
    fn decode_session(
        &self,
        replica_set: &str,
        session_id: &str,
        fields: Vec<Option<Vec<u8>>>,
    ) -> Result<Option<Session>, StoreError> {
        decode_session(fields, |stored| self.sealing.open(replica_set, session_id, stored))
    }

    /// The stored form of a session's items: encoded, and sealed where the mode says so.
    fn stored_items(&self, replica_set: &str, session_id: &str, session: &Session) -> Vec<u8> {
        self.sealing.seal(replica_set, session_id, encode_items(&session.items))
    }
}

/// A user index entry's score: the session's lifetime end in milliseconds, plus the
/// milliseconds of the current second so that sessions made in one second keep their order.
fn index_score(lifetime: &Lifetime) -> i64 {
    lifetime.ends_at * 1000 + unix_millis() % 1000
}

fn unix_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn unavailable(e: redis::RedisError) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

fn decode_session(
    fields: Vec<Option<Vec<u8>>>,
    open: impl FnOnce(Vec<u8>) -> Option<Vec<u8>>,
) -> Result<Option<Session>, StoreError> {
    let mut f = fields.into_iter();
    let mut next = || f.next().flatten();
    let Some(version) = next() else { return Ok(None) };
    let number = |b: Option<Vec<u8>>, name: &str| -> Result<i64, StoreError> {
        let b = b.ok_or_else(|| StoreError::Corrupt(format!("session field {name} is missing")))?;
        std::str::from_utf8(&b)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| StoreError::Corrupt(format!("session field {name} is not a number")))
    };
    let version = number(Some(version), "v")? as u64;
    let Some(items) = open(next().unwrap_or_default()) else {
        return Ok(None);
    };
    let items = decode_items(&items).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    let ends_at = number(next(), "e")?;
    let idle_secs = number(next(), "i")?;
    let touched = number(next(), "t")?;
    let created = number(next(), "c")?;
    let user = next().and_then(|u| String::from_utf8(u).ok()).filter(|u| !u.is_empty());
    Ok(Some(Session {
        version,
        items,
        lifetime: Lifetime { ends_at, idle_secs },
        touched,
        created,
        user,
    }))
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
        let mut conn = self.conn().await?;
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
            .arg(now * 1000)
            .arg(index_score(&session.lifetime));
        let answer: Vec<Value> = call.invoke_async(&mut conn).await.map_err(|e| self.failed(e))?;
        let status: i64 = answer
            .first()
            .and_then(|v| redis::from_redis_value(v).ok())
            .unwrap_or(-1);
        match status {
            0 => Ok(CreateOutcome::IdInUse),
            1 => Ok(CreateOutcome::LimitReached),
            2 => Ok(CreateOutcome::Created {
                displaced: answer[1..]
                    .iter()
                    .filter_map(|v| redis::from_redis_value::<String>(v).ok())
                    .collect(),
            }),
            _ => Err(StoreError::Corrupt("unexpected answer from the create script".into())),
        }
    }

    async fn get_session(
        &self,
        replica_set: &str,
        session_id: &str,
        touch: bool,
        now: i64,
    ) -> Result<Option<Session>, StoreError> {
        let mut conn = self.conn().await?;
        let key = self.session_key(replica_set, session_id);
        if !touch {
            return self.read_session(replica_set, session_id, &mut conn).await;
        }
        let fields: Vec<Option<Vec<u8>>> = self
            .scripts
            .get
            .key(key)
            .arg(now)
            .invoke_async(&mut conn)
            .await
            .map_err(|e| self.failed(e))?;
        self.decode_session(replica_set, session_id, fields)
    }

    async fn replace_session(
        &self,
        replica_set: &str,
        session_id: &str,
        expected_version: u64,
        previous_user: Option<&str>,
        session: &Session,
    ) -> Result<ReplaceOutcome, StoreError> {
        let mut conn = self.conn().await?;
        let session_key = self.session_key(replica_set, session_id);
        let mut call = self.scripts.replace.key(&session_key);
        // The index entry follows the session: its user, and its lifetime end (the score). An
        // index that is not there is named by the session key, not "": an ACL that limits the
        // shim to its prefix refuses a call naming a key outside it, the empty one too.
        let user_changed = previous_user != session.user.as_deref();
        if user_changed || session.user.is_some() {
            call.key(
                previous_user
                    .filter(|_| user_changed)
                    .map(|u| self.user_key(replica_set, u))
                    .unwrap_or_else(|| session_key.clone()),
            );
            call.key(
                session
                    .user
                    .as_ref()
                    .map(|u| self.user_key(replica_set, u))
                    .unwrap_or_else(|| session_key.clone()),
            );
        }
        call.arg(expected_version)
            .arg(session.version)
            .arg(self.stored_items(replica_set, session_id, session))
            .arg(session.lifetime.ends_at)
            .arg(session.lifetime.idle_secs)
            .arg(session.touched)
            .arg(session.user.as_deref().unwrap_or(""))
            .arg(session.lifetime.expires_at(session.touched) * 1000)
            .arg(session_id)
            .arg(index_score(&session.lifetime))
            .arg(crate::clock::now() * 1000);
        let answer: Vec<i64> = call.invoke_async(&mut conn).await.map_err(|e| self.failed(e))?;
        match answer.as_slice() {
            [0] => Ok(ReplaceOutcome::NotFound),
            [1, stored] => Ok(ReplaceOutcome::VersionMismatch { stored: *stored as u64 }),
            [2] => Ok(ReplaceOutcome::Replaced),
            _ => Err(StoreError::Corrupt("unexpected answer from the replace script".into())),
        }
    }

    async fn delete_session(&self, replica_set: &str, session_id: &str) -> Result<bool, StoreError> {
        let mut conn = self.conn().await?;
        let deleted: i64 = self
            .scripts
            .delete
            .key(self.session_key(replica_set, session_id))
            .arg(self.user_key_prefix(replica_set))
            .arg(session_id)
            .invoke_async(&mut conn)
            .await
            .map_err(|e| self.failed(e))?;
        Ok(deleted == 1)
    }

    async fn user_sessions(&self, replica_set: &str, user: &str) -> Result<Vec<String>, StoreError> {
        let mut conn = self.conn().await?;
        let ids: Vec<String> = conn
            .zrange(self.user_key(replica_set, user), 0, -1)
            .await
            .map_err(|e| self.failed(e))?;
        // The index may name sessions that ended on their TTL since the last create.
        let mut pipe = redis::pipe();
        for id in &ids {
            pipe.exists(self.session_key(replica_set, id));
        }
        let live: Vec<bool> = pipe.query_async(&mut conn).await.map_err(|e| self.failed(e))?;
        Ok(ids
            .into_iter()
            .zip(live)
            .filter(|(_, l)| *l)
            .map(|(id, _)| id)
            .collect())
    }

    async fn all_sessions(&self, replica_set: &str) -> Result<Vec<(String, Session)>, StoreError> {
        let mut conn = self.conn().await?;
        let prefix = self.session_key_prefix(replica_set);
        let pattern = format!("{}*", glob_escape(&prefix));
        let mut keys: Vec<String> = Vec::new();
        let mut cursor: u64 = 0;
        loop {
            let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut conn)
                .await
                .map_err(|e| self.failed(e))?;
            keys.extend(batch);
            if next == 0 {
                break;
            }
            cursor = next;
        }
        keys.sort();
        keys.dedup();
        let mut out = Vec::with_capacity(keys.len());
        for key in keys {
            let Some(id) = key.strip_prefix(&prefix).and_then(|r| r.strip_suffix('}')) else {
                continue;
            };
            if let Some(session) = self.read_session(replica_set, id, &mut conn).await? {
                out.push((id.to_string(), session));
            }
        }
        out.sort_by(|a, b| a.1.created.cmp(&b.1.created).then_with(|| a.0.cmp(&b.0)));
        Ok(out)
    }

    async fn join(
        &self,
        replica_set: &str,
        member: &Member,
        capabilities: u64,
        stale_before: i64,
    ) -> Result<JoinOutcome, StoreError> {
        let mut conn = self.conn().await?;
        let answer: Vec<String> = self
            .scripts
            .join
            .key(self.set_key(replica_set))
            .key(self.members_key(replica_set))
            .key(self.sets_key())
            .arg(&member.replica)
            .arg(&member.instance)
            .arg(capabilities)
            .arg(member.joined)
            .arg(stale_before)
            .arg(replica_set)
            .invoke_async(&mut conn)
            .await
            .map_err(|e| self.failed(e))?;
        match answer.as_slice() {
            [s] if s == "0" => Ok(JoinOutcome::Joined),
            [s, caps] if s == "1" => Ok(JoinOutcome::CapabilityMismatch {
                expected: caps.parse().unwrap_or(0),
            }),
            [s, owner] if s == "2" => Ok(JoinOutcome::InstanceOwnedBy { replica: owner.clone() }),
            _ => Err(StoreError::Corrupt("unexpected answer from the join script".into())),
        }
    }

    async fn heartbeat(&self, replica_set: &str, replica: &str, now: i64) -> Result<bool, StoreError> {
        let mut conn = self.conn().await?;
        let member: i64 = self
            .scripts
            .heartbeat
            .key(self.members_key(replica_set))
            .arg(replica)
            .arg(now)
            .invoke_async(&mut conn)
            .await
            .map_err(|e| self.failed(e))?;
        Ok(member == 1)
    }

    async fn leave(&self, replica: &str) -> Result<Vec<String>, StoreError> {
        let mut conn = self.conn().await?;
        let mut sets: Vec<String> = conn.smembers(self.sets_key()).await.map_err(|e| self.failed(e))?;
        sets.sort();
        let mut pipe = redis::pipe();
        for set in &sets {
            pipe.hdel(self.members_key(set), replica);
        }
        let removed: Vec<i64> = pipe.query_async(&mut conn).await.map_err(|e| self.failed(e))?;
        Ok(sets
            .into_iter()
            .zip(removed)
            .filter(|(_, n)| *n > 0)
            .map(|(s, _)| s)
            .collect())
    }

    async fn members(&self, replica_set: &str, stale_before: i64) -> Result<Vec<Member>, StoreError> {
        let mut conn = self.conn().await?;
        let key = self.members_key(replica_set);
        let all: Vec<(String, String)> = conn.hgetall(&key).await.map_err(|e| self.failed(e))?;
        let mut members = Vec::new();
        let mut stale = Vec::new();
        for (replica, value) in all {
            match parse_member(replica.clone(), &value) {
                Some(m) if m.last_seen >= stale_before => members.push(m),
                _ => stale.push(replica),
            }
        }
        if !stale.is_empty() {
            let _: i64 = conn.hdel(&key, stale).await.map_err(|e| self.failed(e))?;
        }
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
            .arg(candidate)
            .arg(now)
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

/// KEYS: session, [user index]. ARGV: items, ends_at, idle, touched, created, user,
/// expires_ms, limit, displace, id, session key prefix, now_ms, index score (lifetime end ms).
/// Answers {0} ID in use, {1} limit reached, {2, displaced...} created.
/// Index entries whose lifetime ended go by score; entries of sessions that ended early
/// (idle) are found by looking: all of them under a limit, else the eight nearest their end,
/// which keeps a create O(log n) in the user's index while dead entries still drain.
const CREATE: &str = r#"
if redis.call('EXISTS', KEYS[1]) == 1 then return {0} end
local displaced = {}
if #KEYS > 1 then
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', '(' .. ARGV[12])
  local limit = tonumber(ARGV[8])
  local last = 7
  if limit > 0 then last = -1 end
  local live = {}
  for _, id in ipairs(redis.call('ZRANGE', KEYS[2], 0, last)) do
    if redis.call('EXISTS', ARGV[11] .. id .. '}') == 1 then
      live[#live + 1] = id
    else
      redis.call('ZREM', KEYS[2], id)
    end
  end
  if limit > 0 and #live >= limit then
    if ARGV[9] ~= '1' then return {1} end
    for n = 1, #live - limit + 1 do
      redis.call('DEL', ARGV[11] .. live[n] .. '}')
      redis.call('ZREM', KEYS[2], live[n])
      displaced[#displaced + 1] = live[n]
    end
  end
  redis.call('ZADD', KEYS[2], ARGV[13], ARGV[10])
  local keep = tonumber(ARGV[2]) * 1000 - tonumber(ARGV[12])
  if redis.call('PTTL', KEYS[2]) < keep then redis.call('PEXPIRE', KEYS[2], keep) end
end
redis.call('HSET', KEYS[1], 'v', 0, 'd', ARGV[1], 'e', ARGV[2], 'i', ARGV[3], 't', ARGV[4], 'c', ARGV[5], 'u', ARGV[6])
redis.call('PEXPIREAT', KEYS[1], ARGV[7])
local answer = {2}
for _, id in ipairs(displaced) do answer[#answer + 1] = id end
return answer
"#;

/// KEYS: session. ARGV: now. Reads the session, records the activity and extends its TTL.
const GET: &str = r#"
local r = redis.call('HMGET', KEYS[1], 'v', 'd', 'e', 'i', 't', 'c', 'u')
if not r[1] then return r end
local now = tonumber(ARGV[1])
local at = tonumber(r[3])
local idle = tonumber(r[4])
if idle > 0 and now + idle < at then at = now + idle end
redis.call('HSET', KEYS[1], 't', now)
redis.call('PEXPIREAT', KEYS[1], at * 1000)
return r
"#;

/// KEYS: session, [old user index (when the user changed), new user index], where an index
/// that is not there is the session key again.
/// ARGV: expected version, new version, items, ends_at, idle, touched, user, expires_ms, id,
/// index score (lifetime end ms), now_ms.
/// Answers {0} not found, {1, stored} version mismatch, {2} replaced.
const REPLACE: &str = r#"
local v = redis.call('HGET', KEYS[1], 'v')
if not v then return {0} end
if v ~= ARGV[1] then return {1, tonumber(v)} end
redis.call('HSET', KEYS[1], 'v', ARGV[2], 'd', ARGV[3], 'e', ARGV[4], 'i', ARGV[5], 't', ARGV[6], 'u', ARGV[7])
redis.call('PEXPIREAT', KEYS[1], ARGV[8])
if #KEYS > 1 then
  if KEYS[2] ~= KEYS[1] then redis.call('ZREM', KEYS[2], ARGV[9]) end
  if KEYS[3] ~= KEYS[1] then
    redis.call('ZADD', KEYS[3], ARGV[10], ARGV[9])
    local keep = tonumber(ARGV[4]) * 1000 - tonumber(ARGV[11])
    if redis.call('PTTL', KEYS[3]) < keep then redis.call('PEXPIRE', KEYS[3], keep) end
  end
end
return {2}
"#;

/// KEYS: session. ARGV: user index prefix, id. Deletes the session and its index entry.
const DELETE: &str = r#"
local u = redis.call('HGET', KEYS[1], 'u')
local n = redis.call('DEL', KEYS[1])
if u and u ~= '' then redis.call('ZREM', ARGV[1] .. u .. '}', ARGV[2]) end
return n
"#;

/// KEYS: set hash, members hash, sets. ARGV: replica, instance, caps, now, stale_before, set.
/// Answers {'0'} joined, {'1', caps} capability mismatch, {'2', owner} instance taken.
const JOIN: &str = r#"
local all = redis.call('HGETALL', KEYS[2])
local others = 0
for n = 1, #all, 2 do
  local replica, value = all[n], all[n + 1]
  local instance, joined, seen = string.match(value, '^(.*)\t(%d+)\t(%d+)$')
  if not seen or tonumber(seen) < tonumber(ARGV[5]) then
    redis.call('HDEL', KEYS[2], replica)
  elseif replica ~= ARGV[1] then
    others = others + 1
    if instance == ARGV[2] then return {'2', replica} end
  end
end
local caps = redis.call('HGET', KEYS[1], 'caps')
if caps and caps ~= ARGV[3] and others > 0 then return {'1', caps} end
redis.call('HSET', KEYS[1], 'caps', ARGV[3])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2] .. '\t' .. ARGV[4] .. '\t' .. ARGV[4])
redis.call('SADD', KEYS[3], ARGV[6])
return {'0'}
"#;

/// KEYS: members hash. ARGV: replica, now. Moves last_seen forward for a member.
const HEARTBEAT: &str = r#"
local value = redis.call('HGET', KEYS[1], ARGV[1])
if not value then return 0 end
local head, seen = string.match(value, '^(.*\t%d+)\t(%d+)$')
if head and tonumber(seen) < tonumber(ARGV[2]) then
  redis.call('HSET', KEYS[1], ARGV[1], head .. '\t' .. ARGV[2])
end
return 1
"#;

/// KEYS: set hash. ARGV: candidate, now. The key material, made on first use.
const KEYS: &str = r#"
local k = redis.call('HMGET', KEYS[1], 'cur', 'cur_id', 'old', 'old_id', 'created')
if k[1] then return k end
redis.call('HSET', KEYS[1], 'cur', ARGV[1], 'cur_id', 0, 'old', ARGV[1], 'old_id', 0, 'created', ARGV[2])
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
    fn glob_escaping_keeps_prefixes_literal() {
        assert_eq!(glob_escape("p:s:{3:a*b:"), "p:s:{3:a\\*b:");
    }
}
