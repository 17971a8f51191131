//! The shim's configuration: flags, or `REDSESS_*` environment variables, validated at start
//! with errors that name the setting. Secrets (passwords) come from files or the environment,
//! never from the command line, so they show in no process list.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use crate::session::Settings;
use crate::store::redis::{RedisSettings, SentinelAuth};
use crate::store::SessionLimit;

/// The settings as given; no `Debug`, since the Redis URL may carry a password (the validated
/// [`Config`] redacts it).
#[derive(Clone, Args)]
pub struct ServeArgs {
    /// Address and port to listen on.
    #[arg(long, env = "REDSESS_LISTEN", default_value = "0.0.0.0:8080")]
    pub listen: String,

    /// Redis URL (redis:// or rediss://, user and password allowed); none = the embedded
    /// in-memory store. Prefer the environment variable: a URL with a password on the
    /// command line is visible to every user of the machine.
    // hide_env_values: clap would print the URL, password and all, in --help.
    #[arg(long, env = "REDSESS_REDIS_URL", hide_env_values = true)]
    pub redis_url: Option<String>,

    /// Comma-separated Sentinels (host:port) to ask for the current primary; the URL then
    /// supplies only the user, password, database and TLS.
    #[arg(long, env = "REDSESS_REDIS_SENTINELS", value_delimiter = ',')]
    pub redis_sentinels: Vec<String>,

    /// The primary's name as the Sentinels monitor it.
    #[arg(long, env = "REDSESS_REDIS_SENTINEL_PRIMARY", default_value = "redsess")]
    pub redis_sentinel_primary: String,

    /// The Sentinels speak TLS (verified with --redis-tls-ca-file, host names included).
    #[arg(long, env = "REDSESS_REDIS_SENTINEL_TLS", default_value_t = false)]
    pub redis_sentinel_tls: bool,

    /// PEM file with the CA certificates that Redis's (rediss://) and the Sentinels'
    /// certificates must chain to; host names are verified. Default: the web PKI roots.
    #[arg(long, env = "REDSESS_REDIS_TLS_CA_FILE")]
    pub redis_tls_ca_file: Option<PathBuf>,

    /// ACL user to authenticate to the Sentinels as (Sentinels with `user` or `requirepass`).
    #[arg(long, env = "REDSESS_REDIS_SENTINEL_USER")]
    pub redis_sentinel_user: Option<String>,

    /// File holding the Sentinels' password (or set REDSESS_REDIS_SENTINEL_PASSWORD); none =
    /// the Sentinels are asked without authentication.
    #[arg(long, env = "REDSESS_REDIS_SENTINEL_PASSWORD_FILE")]
    pub redis_sentinel_password_file: Option<PathBuf>,

    /// Sealing of session records in Redis (AES-256-GCM): plain, sealed, or one of the two
    /// migrating modes, which read both forms and write sealed (seal-migrating) or plain.
    #[arg(long, env = "REDSESS_RECORD_ENCRYPTION", value_enum, default_value = "plain")]
    pub record_encryption: crate::store::sealing::Mode,

    /// Key file for record encryption: lines `<key ID> <base64 key>`, the first seals, all
    /// open (`redsess-shim keygen` prints one); read again when it changes.
    #[arg(long, env = "REDSESS_RECORD_KEYS_FILE")]
    pub record_keys_file: Option<PathBuf>,

    /// How often the record key file is checked for a new version.
    #[arg(long, env = "REDSESS_RECORD_KEYS_CHECK", default_value = "10s", value_parser = parse_duration)]
    pub record_keys_check: Duration,

    /// File holding the Redis password (for ACL users, with the user in the URL).
    #[arg(long, env = "REDSESS_REDIS_PASSWORD_FILE")]
    pub redis_password_file: Option<PathBuf>,

    /// Prefix of every Redis key, so several caches can share one Redis.
    #[arg(long, env = "REDSESS_KEY_PREFIX", default_value = "redsess:")]
    pub key_prefix: String,

    /// Session realm answered to getRealmName.
    #[arg(long, env = "REDSESS_REALM", default_value = "ISAM-Distributed-Session-Cache")]
    pub realm: String,

    /// Comma-separated replica sets to serve; empty = any.
    #[arg(long, env = "REDSESS_REPLICA_SETS", value_delimiter = ',')]
    pub replica_sets: Vec<String>,

    /// Longest a session may live, whatever its expiry item says (e.g. 8h).
    #[arg(long, env = "REDSESS_MAX_LIFETIME", default_value = "24h", value_parser = parse_duration)]
    pub max_lifetime: Duration,

    /// Tolerance for clocks that differ between WebSEAL hosts and the shim.
    #[arg(long, env = "REDSESS_CLOCK_SKEW", default_value = "3m", value_parser = parse_duration)]
    pub clock_skew: Duration,

    /// The shim's own concurrent-session limit per user (0 = only WebSEAL's).
    #[arg(long, env = "REDSESS_MAX_SESSIONS_PER_USER", default_value_t = 0)]
    pub max_sessions_per_user: u32,

    /// Past the shim's own limit, end the user's oldest sessions instead of refusing.
    #[arg(long, env = "REDSESS_DISPLACE_SESSIONS", default_value_t = false)]
    pub displace_sessions: bool,

    /// Rotate each replica set's key this often (0 = never).
    #[arg(long, env = "REDSESS_KEY_ROTATION", default_value = "0", value_parser = parse_duration)]
    pub key_rotation: Duration,

    /// Replicas not heard from for this long leave their replica sets.
    #[arg(long, env = "REDSESS_REPLICA_TIMEOUT", default_value = "10m", value_parser = parse_duration)]
    pub replica_timeout: Duration,

    /// Refuse session operations from replicas that have not joined the replica set
    /// (answers "client not registered" / "replica set not joined").
    #[arg(long, env = "REDSESS_STRICT_MEMBERSHIP", default_value_t = false)]
    pub strict_membership: bool,

    /// Longest a request may wait on the store before it is answered with a fault.
    #[arg(long, env = "REDSESS_REQUEST_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    pub request_timeout: Duration,

    /// Largest accepted request body, in bytes.
    #[arg(long, env = "REDSESS_MAX_BODY_BYTES", default_value_t = 1024 * 1024)]
    pub max_body_bytes: usize,

    /// Longest a client may take to send a request body: a slow sender is answered 408 and
    /// holds nothing longer.
    #[arg(long, env = "REDSESS_BODY_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub body_timeout: Duration,

    /// Session writes (createSession, changeSession, terminateSession) answer success only
    /// once this many Redis replicas have them (`WAIT`), else a fault (cause `not_durable`);
    /// an acknowledged session then survives the primary's loss. 0 = once the primary has it.
    #[arg(long, env = "REDSESS_REDIS_WAIT_REPLICAS", default_value_t = 0)]
    pub redis_wait_replicas: u32,

    /// How long a write waits for those replicas; less than --request-timeout.
    #[arg(long, env = "REDSESS_REDIS_WAIT_TIMEOUT", default_value = "1s", value_parser = parse_duration)]
    pub redis_wait_timeout: Duration,

    /// Without --replica-sets, the most replica sets the cache takes on from joins and polls;
    /// a new one past it is refused ("replica set not configured"). 0 = no bound.
    #[arg(long, env = "REDSESS_MAX_REPLICA_SETS", default_value_t = 64)]
    pub max_replica_sets: usize,

    /// The most live replicas (WebSEAL servers) in one replica set; a new one past it is
    /// refused ("replica set not configured"). 0 = no bound.
    #[arg(long, env = "REDSESS_MAX_REPLICAS", default_value_t = 256)]
    pub max_replicas: u32,

    /// The most sessions the embedded store keeps; past it the least recently used session
    /// goes (counted in `redsess_shim_sessions_evicted_total`). 0 = no bound. Default 100000
    /// (about 300 MB of WebSEAL sessions). Not for Redis, whose bound is its `maxmemory`.
    #[arg(long, env = "REDSESS_MAX_SESSIONS")]
    pub max_sessions: Option<usize>,

    /// Requests handled at once, waiting long polls included; past it a request is answered
    /// 503 at once (counted as a fault, cause `overloaded`) instead of queueing.
    #[arg(long, env = "REDSESS_MAX_IN_FLIGHT", default_value_t = 4096)]
    pub max_in_flight: usize,

    /// Threads that answer requests; 0 = one per CPU this process may use (a container's CPU
    /// limit counts). Fewer threads than CPUs suit a shim that shares its CPUs with Redis or
    /// WebSEAL: less handing of work between threads.
    #[arg(long, env = "REDSESS_WORKER_THREADS", default_value_t = 0,
          value_parser = clap::value_parser!(u16).range(0..=1024))]
    pub worker_threads: u16,

    /// PEM certificate chain for HTTPS; with --tls-key.
    #[arg(long, env = "REDSESS_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key for HTTPS.
    #[arg(long, env = "REDSESS_TLS_KEY")]
    pub tls_key: Option<PathBuf>,

    /// PEM CA bundle; when set, every client must present a certificate it signed.
    #[arg(long, env = "REDSESS_TLS_CLIENT_CA")]
    pub tls_client_ca: Option<PathBuf>,

    /// User WebSEAL sends with HTTP Basic (`[dsess-cluster] basic-auth-user`).
    #[arg(long, env = "REDSESS_BASIC_AUTH_USER")]
    pub basic_auth_user: Option<String>,

    /// File holding the Basic-auth password (or set REDSESS_BASIC_AUTH_PASSWORD).
    #[arg(long, env = "REDSESS_BASIC_AUTH_PASSWORD_FILE")]
    pub basic_auth_password_file: Option<PathBuf>,

    /// Log lines as plain text (colours only on a terminal) or as one JSON object each.
    #[arg(long, env = "REDSESS_LOG_FORMAT", value_enum, default_value = "plain")]
    pub log_format: LogFormat,

    /// Which replica sets each authenticated identity (the Basic user, a client
    /// certificate's subject) may use, one `user NAME: SETS` or `certificate SUBJECT: SETS`
    /// line each; others are answered "not authorized" (see docs/security.md).
    #[arg(long, env = "REDSESS_AUTHORIZATION_FILE")]
    pub authorization_file: Option<PathBuf>,

    /// How long shutdown waits for in-flight requests.
    #[arg(long, env = "REDSESS_SHUTDOWN_GRACE", default_value = "20s", value_parser = parse_duration)]
    pub shutdown_grace: Duration,

    /// After SIGTERM, go on serving this long before shutting down, so that the removal of the
    /// pod's endpoint reaches every proxy first (a few seconds on Kubernetes).
    #[arg(long, env = "REDSESS_SHUTDOWN_DELAY", default_value = "0s", value_parser = parse_duration)]
    pub shutdown_delay: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Plain,
    Json,
}

/// Where sessions are kept.
#[derive(Debug, Clone)]
pub enum StoreConfig {
    /// In this process, keeping at most `max_sessions` (0 = no bound).
    Memory {
        max_sessions: usize,
    },
    Redis(Box<RedisSettings>),
}

/// The embedded store's bound when none is given: about 300 MB of WebSEAL sessions.
pub const DEFAULT_MAX_SESSIONS: usize = 100_000;

#[derive(Debug, Clone)]
pub struct TlsConfig {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_ca: Option<PathBuf>,
}

#[derive(Clone)]
pub struct BasicAuth {
    pub user: String,
    pub password: String,
}

impl std::fmt::Debug for BasicAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BasicAuth")
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

impl ServeArgs {
    fn authorization(
        &self,
        tls: &Option<TlsConfig>,
        basic_auth: &Option<BasicAuth>,
    ) -> Result<Option<crate::authorization::Authorization>, ConfigError> {
        const SETTING: &str = "--authorization-file (REDSESS_AUTHORIZATION_FILE)";
        let Some(path) = &self.authorization_file else {
            return Ok(None);
        };
        if basic_auth.is_none() && tls.as_ref().and_then(|t| t.client_ca.as_ref()).is_none() {
            return Err(bad(
                SETTING,
                "needs an identity to authorize: --basic-auth-user or --tls-client-ca",
            ));
        }
        crate::authorization::Authorization::load(path)
            .map(Some)
            .map_err(|e| bad(SETTING, e.to_string()))
    }
}

/// The validated configuration the server runs with.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub store: StoreConfig,
    pub session: Settings,
    pub tls: Option<TlsConfig>,
    pub basic_auth: Option<BasicAuth>,
    /// Which replica sets each identity may use; `None` = any.
    pub authorization: Option<crate::authorization::Authorization>,
    pub request_timeout: Duration,
    pub max_body_bytes: usize,
    pub body_timeout: Duration,
    pub max_in_flight: usize,
    pub shutdown_grace: Duration,
    pub shutdown_delay: Duration,
}

#[derive(Debug, thiserror::Error)]
#[error("{setting}: {problem}")]
pub struct ConfigError {
    pub setting: &'static str,
    pub problem: String,
}

fn bad(setting: &'static str, problem: impl Into<String>) -> ConfigError {
    ConfigError {
        setting,
        problem: problem.into(),
    }
}

fn read_secret(setting: &'static str, path: &PathBuf) -> Result<String, ConfigError> {
    let text =
        std::fs::read_to_string(path).map_err(|e| bad(setting, format!("cannot read {}: {e}", path.display())))?;
    let secret = text.trim_end_matches(['\r', '\n']).to_string();
    if secret.is_empty() {
        return Err(bad(setting, format!("{} is empty", path.display())));
    }
    Ok(secret)
}

fn readable(setting: &'static str, path: &PathBuf) -> Result<(), ConfigError> {
    std::fs::metadata(path)
        .map(|_| ())
        .map_err(|e| bad(setting, format!("cannot read {}: {e}", path.display())))
}

impl ServeArgs {
    /// The CA bundle for TLS to Redis and Sentinel, read and checked now.
    fn redis_tls_ca(&self, url: &str) -> Result<Option<Vec<u8>>, ConfigError> {
        const SETTING: &str = "--redis-tls-ca-file (REDSESS_REDIS_TLS_CA_FILE)";
        if self.redis_sentinel_tls && self.redis_sentinels.is_empty() {
            return Err(bad(
                "--redis-sentinel-tls (REDSESS_REDIS_SENTINEL_TLS)",
                "is set, but there are no --redis-sentinels",
            ));
        }
        let Some(path) = &self.redis_tls_ca_file else {
            return Ok(None);
        };
        if !url.starts_with("rediss://") && !self.redis_sentinel_tls {
            return Err(bad(
                SETTING,
                "is set, but nothing uses TLS: --redis-url is not rediss:// and --redis-sentinel-tls is off",
            ));
        }
        let pem = std::fs::read(path).map_err(|e| bad(SETTING, format!("cannot read {}: {e}", path.display())))?;
        let certificates = rustls_pemfile::certs(&mut pem.as_slice())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| bad(SETTING, format!("{} is not PEM: {e}", path.display())))?;
        if certificates.is_empty() {
            return Err(bad(SETTING, format!("{} holds no certificate", path.display())));
        }
        Ok(Some(pem))
    }

    /// The record key file, checked now so that a bad one stops the start naming the setting.
    fn record_keys(&self) -> Result<Option<PathBuf>, ConfigError> {
        const FILE: &str = "--record-keys-file (REDSESS_RECORD_KEYS_FILE)";
        const MODE: &str = "--record-encryption (REDSESS_RECORD_ENCRYPTION)";
        match (&self.record_keys_file, self.record_encryption.needs_keys()) {
            (None, true) => Err(bad(MODE, "needs a key file: set --record-keys-file")),
            (Some(_), false) => Err(bad(
                FILE,
                "is set, but --record-encryption is plain: choose seal-migrating to seal (or plain-migrating to read sealed records)",
            )),
            (Some(path), true) => {
                let ring = crate::store::sealing::KeyRing::load(path).map_err(|e| bad(FILE, e.to_string()))?;
                tracing::debug!(keys = ?ring.ids(), "record keys");
                Ok(Some(path.clone()))
            }
            (None, false) => Ok(None),
        }
    }

    /// The Sentinels' credentials: a password from the file or the environment, and the
    /// optional user; only where there are Sentinels to ask.
    fn sentinel_auth(
        &self,
        sentinels: &[String],
        env: &impl Fn(&str) -> Option<String>,
    ) -> Result<Option<SentinelAuth>, ConfigError> {
        const FILE: &str = "--redis-sentinel-password-file (REDSESS_REDIS_SENTINEL_PASSWORD_FILE)";
        const USER: &str = "--redis-sentinel-user (REDSESS_REDIS_SENTINEL_USER)";
        let password = match &self.redis_sentinel_password_file {
            Some(p) => Some(read_secret(FILE, p)?),
            None => env("REDSESS_REDIS_SENTINEL_PASSWORD").filter(|p| !p.is_empty()),
        };
        let user = self.redis_sentinel_user.clone().filter(|u| !u.is_empty());
        if sentinels.is_empty() && (password.is_some() || user.is_some()) {
            let setting = if user.is_some() { USER } else { FILE };
            return Err(bad(
                setting,
                "is set, but there are no --redis-sentinels to authenticate to",
            ));
        }
        match (user, password) {
            (Some(_), None) => Err(bad(
                USER,
                "needs a password: set --redis-sentinel-password-file or REDSESS_REDIS_SENTINEL_PASSWORD",
            )),
            (user, Some(password)) => Ok(Some(SentinelAuth { user, password })),
            (None, None) => Ok(None),
        }
    }

    /// Checks every setting; `env` supplies REDSESS_BASIC_AUTH_PASSWORD and
    /// REDSESS_REDIS_PASSWORD (a parameter so tests need not touch the process environment).
    pub fn validate(&self, env: impl Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let listen: SocketAddr = self.listen.parse().map_err(|_| {
            bad(
                "--listen (REDSESS_LISTEN)",
                format!("{:?} is not an address:port", self.listen),
            )
        })?;

        let sentinels: Vec<String> = self
            .redis_sentinels
            .iter()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect();
        for s in &sentinels {
            if s.rsplit_once(':').and_then(|(_, p)| p.parse::<u16>().ok()).is_none() {
                return Err(bad(
                    "--redis-sentinels (REDSESS_REDIS_SENTINELS)",
                    format!("{s:?} is not host:port"),
                ));
            }
        }
        if !sentinels.is_empty() && self.redis_url.is_none() {
            return Err(bad(
                "--redis-sentinels (REDSESS_REDIS_SENTINELS)",
                "needs --redis-url (REDSESS_REDIS_URL) for the user, password and database",
            ));
        }
        let store = match &self.redis_url {
            None if self.record_encryption.needs_keys() || self.record_keys_file.is_some() => {
                return Err(bad(
                    "--record-encryption (REDSESS_RECORD_ENCRYPTION)",
                    "seals records in Redis; the embedded store keeps them in this process's memory only",
                ))
            }
            None if self.redis_wait_replicas > 0 => {
                return Err(bad(
                    "--redis-wait-replicas (REDSESS_REDIS_WAIT_REPLICAS)",
                    "waits for Redis replicas; the embedded store has none",
                ))
            }
            None => StoreConfig::Memory {
                max_sessions: self.max_sessions.unwrap_or(DEFAULT_MAX_SESSIONS),
            },
            Some(_) if self.max_sessions.is_some() => {
                return Err(bad(
                    "--max-sessions (REDSESS_MAX_SESSIONS)",
                    "bounds the embedded store; with Redis, bound memory with Redis's maxmemory",
                ))
            }
            Some(url) => {
                if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
                    return Err(bad(
                        "--redis-url (REDSESS_REDIS_URL)",
                        "must start with redis:// or rediss://",
                    ));
                }
                let password = match &self.redis_password_file {
                    Some(p) => Some(read_secret("--redis-password-file (REDSESS_REDIS_PASSWORD_FILE)", p)?),
                    None => env("REDSESS_REDIS_PASSWORD").filter(|p| !p.is_empty()),
                };
                StoreConfig::Redis(Box::new(RedisSettings {
                    url: url.clone(),
                    password,
                    key_prefix: self.key_prefix.clone(),
                    sentinels: sentinels.clone(),
                    sentinel_primary: self.redis_sentinel_primary.clone(),
                    sentinel_auth: self.sentinel_auth(&sentinels, &env)?,
                    sentinel_tls: self.redis_sentinel_tls,
                    tls_ca: self.redis_tls_ca(url)?,
                    record_encryption: self.record_encryption,
                    record_keys_file: self.record_keys()?,
                    record_keys_check: self.record_keys_check,
                    connect_timeout: self.request_timeout,
                    response_timeout: self.request_timeout,
                    wait_replicas: self.redis_wait_replicas,
                    wait_timeout: self.redis_wait_timeout,
                }))
            }
        };
        if self.redis_wait_replicas > 0
            && (self.redis_wait_timeout < Duration::from_millis(10) || self.redis_wait_timeout >= self.request_timeout)
        {
            return Err(bad(
                "--redis-wait-timeout (REDSESS_REDIS_WAIT_TIMEOUT)",
                "must be at least 10ms and less than --request-timeout (REDSESS_REQUEST_TIMEOUT)",
            ));
        }
        if self.key_prefix.contains(['{', '}']) {
            return Err(bad(
                "--key-prefix (REDSESS_KEY_PREFIX)",
                "must not contain { or } (Redis hash tags)",
            ));
        }

        let tls = match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => {
                readable("--tls-cert (REDSESS_TLS_CERT)", cert)?;
                readable("--tls-key (REDSESS_TLS_KEY)", key)?;
                if let Some(ca) = &self.tls_client_ca {
                    readable("--tls-client-ca (REDSESS_TLS_CLIENT_CA)", ca)?;
                }
                Some(TlsConfig {
                    cert: cert.clone(),
                    key: key.clone(),
                    client_ca: self.tls_client_ca.clone(),
                })
            }
            (None, None) if self.tls_client_ca.is_some() => {
                return Err(bad(
                    "--tls-client-ca (REDSESS_TLS_CLIENT_CA)",
                    "client certificates need HTTPS: set --tls-cert and --tls-key too",
                ))
            }
            (None, None) => None,
            (Some(_), None) => {
                return Err(bad(
                    "--tls-key (REDSESS_TLS_KEY)",
                    "--tls-cert is set, the key is missing",
                ))
            }
            (None, Some(_)) => {
                return Err(bad(
                    "--tls-cert (REDSESS_TLS_CERT)",
                    "--tls-key is set, the certificate is missing",
                ))
            }
        };

        let basic_auth = match &self.basic_auth_user {
            None => None,
            Some(user) if user.is_empty() || user.contains(':') => {
                return Err(bad(
                    "--basic-auth-user (REDSESS_BASIC_AUTH_USER)",
                    "must be non-empty and hold no ':'",
                ))
            }
            Some(user) => {
                let password = match &self.basic_auth_password_file {
                    Some(p) => read_secret("--basic-auth-password-file (REDSESS_BASIC_AUTH_PASSWORD_FILE)", p)?,
                    None => env("REDSESS_BASIC_AUTH_PASSWORD")
                        .filter(|p| !p.is_empty())
                        .ok_or_else(|| {
                            bad(
                                "--basic-auth-user (REDSESS_BASIC_AUTH_USER)",
                                "needs a password: set REDSESS_BASIC_AUTH_PASSWORD or --basic-auth-password-file",
                            )
                        })?,
                };
                Some(BasicAuth {
                    user: user.clone(),
                    password,
                })
            }
        };
        if self.basic_auth_user.is_none() && self.basic_auth_password_file.is_some() {
            return Err(bad(
                "--basic-auth-password-file (REDSESS_BASIC_AUTH_PASSWORD_FILE)",
                "is set but --basic-auth-user is not",
            ));
        }

        let secs = |d: Duration| d.as_secs() as i64;
        if self.max_lifetime < Duration::from_secs(60) {
            return Err(bad("--max-lifetime (REDSESS_MAX_LIFETIME)", "must be at least 1m"));
        }
        if self.replica_timeout < Duration::from_secs(10) {
            return Err(bad(
                "--replica-timeout (REDSESS_REPLICA_TIMEOUT)",
                "must be at least 10s",
            ));
        }
        if !self.key_rotation.is_zero() && self.key_rotation < Duration::from_secs(1) {
            return Err(bad(
                "--key-rotation (REDSESS_KEY_ROTATION)",
                "must be 0 (never) or at least 1s",
            ));
        }
        if self.request_timeout < Duration::from_millis(100) || self.request_timeout > Duration::from_secs(120) {
            return Err(bad(
                "--request-timeout (REDSESS_REQUEST_TIMEOUT)",
                "must be between 100ms and 2m",
            ));
        }
        if self.max_body_bytes < 4096 {
            return Err(bad(
                "--max-body-bytes (REDSESS_MAX_BODY_BYTES)",
                "must be at least 4096",
            ));
        }
        if self.body_timeout < Duration::from_millis(100) || self.body_timeout > Duration::from_secs(300) {
            return Err(bad(
                "--body-timeout (REDSESS_BODY_TIMEOUT)",
                "must be between 100ms and 5m",
            ));
        }
        if !(1..=1_000_000).contains(&self.max_in_flight) {
            return Err(bad(
                "--max-in-flight (REDSESS_MAX_IN_FLIGHT)",
                "must be between 1 and 1000000",
            ));
        }
        let replica_sets: Vec<String> = self
            .replica_sets
            .iter()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect();

        Ok(Config {
            listen,
            store,
            session: Settings {
                realm: self.realm.clone(),
                replica_sets: (!replica_sets.is_empty()).then_some(replica_sets),
                max_lifetime_secs: secs(self.max_lifetime),
                clock_skew_secs: secs(self.clock_skew),
                session_limit: SessionLimit {
                    max: self.max_sessions_per_user,
                    displace: self.displace_sessions,
                },
                key_rotation_secs: (!self.key_rotation.is_zero()).then(|| secs(self.key_rotation).max(1)),
                replica_timeout_secs: secs(self.replica_timeout),
                strict_membership: self.strict_membership,
                max_replica_sets: self.max_replica_sets,
                max_replicas: self.max_replicas,
            },
            authorization: self.authorization(&tls, &basic_auth)?,
            tls,
            basic_auth,
            request_timeout: self.request_timeout,
            max_body_bytes: self.max_body_bytes,
            body_timeout: self.body_timeout,
            max_in_flight: self.max_in_flight,
            shutdown_grace: self.shutdown_grace,
            shutdown_delay: self.shutdown_delay,
        })
    }
}

/// `90`, `90s`, `500ms`, `5m`, `12h`, `1d`.
const MAX_DURATION_MS: u64 = 100 * 365 * 86_400_000;

pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{text:?} is not a duration (like 90s, 5m, 12h)"))?;
    let millis_per_unit: u64 = match unit {
        "ms" => 1,
        "" | "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(format!("{text:?} has an unknown unit (use ms, s, m, h or d)")),
    };
    // Bounded so that every use (seconds as i64, added to a unix time) stays far from overflow.
    match n.checked_mul(millis_per_unit) {
        Some(ms) if ms <= MAX_DURATION_MS => Ok(Duration::from_millis(ms)),
        _ => Err(format!("{text:?} is longer than 100 years")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        serve: ServeArgs,
    }

    fn args(list: &[&str]) -> ServeArgs {
        let mut argv = vec!["redsess-shim"];
        argv.extend_from_slice(list);
        Cli::try_parse_from(argv).unwrap().serve
    }

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert!(parse_duration("5 weeks").is_err());
        // Huge numbers are refused, not wrapped around.
        assert!(parse_duration("213503982334602d")
            .unwrap_err()
            .contains("longer than 100 years"));
        assert!(parse_duration("18446744073709551615s").is_err());
        assert_eq!(parse_duration("36500d").unwrap(), Duration::from_secs(36500 * 86400));
        assert!(parse_duration("m").is_err());
    }

    #[test]
    fn defaults_run_on_the_embedded_store() {
        let c = args(&[]).validate(no_env).unwrap();
        assert!(matches!(
            c.store,
            StoreConfig::Memory {
                max_sessions: DEFAULT_MAX_SESSIONS
            }
        ));
        assert_eq!(c.session.clock_skew_secs, 180);
        assert_eq!(c.max_body_bytes, 1024 * 1024);
        assert!(c.tls.is_none() && c.basic_auth.is_none());
    }

    #[test]
    fn max_sessions_bounds_only_the_embedded_store() {
        let c = args(&["--max-sessions", "0"]).validate(no_env).unwrap();
        assert!(matches!(c.store, StoreConfig::Memory { max_sessions: 0 }));
        let e = args(&["--max-sessions", "10", "--redis-url", "redis://r:6379"])
            .validate(no_env)
            .unwrap_err();
        assert!(
            e.to_string().starts_with("--max-sessions (REDSESS_MAX_SESSIONS)"),
            "{e}"
        );
        assert!(e.to_string().contains("maxmemory"), "{e}");
    }

    #[test]
    fn durable_writes_need_redis_and_a_wait_within_the_request_timeout() {
        let c = args(&["--redis-url", "redis://r:6379", "--redis-wait-replicas", "1"])
            .validate(no_env)
            .unwrap();
        let StoreConfig::Redis(redis) = c.store else {
            panic!("{:?}", c.store)
        };
        assert_eq!((redis.wait_replicas, redis.wait_timeout), (1, Duration::from_secs(1)));
        let e = args(&["--redis-wait-replicas", "1"]).validate(no_env).unwrap_err();
        assert!(e.to_string().starts_with("--redis-wait-replicas"), "{e}");
        let waiting = ["--redis-url", "redis://r:6379", "--redis-wait-replicas", "1"];
        let e = args(&[&waiting[..], &["--redis-wait-timeout", "5s"]].concat())
            .validate(no_env)
            .unwrap_err();
        assert!(e.to_string().starts_with("--redis-wait-timeout"), "{e}");
    }

    #[test]
    fn errors_name_the_setting() {
        let e = args(&["--listen", "nowhere"]).validate(no_env).unwrap_err();
        assert!(e.to_string().starts_with("--listen (REDSESS_LISTEN)"), "{e}");
        let e = args(&["--redis-url", "http://x"]).validate(no_env).unwrap_err();
        assert!(e.to_string().starts_with("--redis-url"), "{e}");
        let e = args(&["--tls-cert", "/nonexistent"]).validate(no_env).unwrap_err();
        assert!(e.to_string().starts_with("--tls-key"), "{e}");
        let e = args(&["--basic-auth-user", "webseal"]).validate(no_env).unwrap_err();
        assert!(e.to_string().contains("REDSESS_BASIC_AUTH_PASSWORD"), "{e}");
        let e = args(&["--max-body-bytes", "10"]).validate(no_env).unwrap_err();
        assert!(e.to_string().starts_with("--max-body-bytes"), "{e}");
    }

    /// Every secret setting at once: none of them in the validated configuration's Debug.
    #[test]
    fn no_secret_setting_reaches_debug_output() {
        let dir = std::env::temp_dir().join(format!("redsess-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("basic");
        std::fs::write(&file, "file-pass-5d1e\n").unwrap();
        let sentinel_file = dir.join("sentinel");
        std::fs::write(&sentinel_file, "sentinel-file-pass-0b7c\n").unwrap();
        let env = |k: &str| match k {
            "REDSESS_REDIS_PASSWORD" => Some("env-pass-91c2".to_string()),
            "REDSESS_REDIS_SENTINEL_PASSWORD" => Some("sentinel-env-pass-44e1".to_string()),
            _ => None,
        };
        let with_url = args(&[
            "--redis-url",
            "redis://redsess:url-pass-7f3a@redis:6379",
            "--redis-sentinels",
            "sentinel:26379",
            "--redis-sentinel-password-file",
            sentinel_file.to_str().unwrap(),
            "--basic-auth-user",
            "webseal",
            "--basic-auth-password-file",
            file.to_str().unwrap(),
        ])
        .validate(env)
        .unwrap();
        let from_env = args(&[
            "--redis-url",
            "redis://redsess@redis:6379",
            "--redis-sentinels",
            "sentinel:26379",
            "--redis-sentinel-user",
            "shim",
        ])
        .validate(env)
        .unwrap();
        for (c, secrets) in [
            (
                &with_url,
                ["url-pass-7f3a", "file-pass-5d1e", "sentinel-file-pass-0b7c"],
            ),
            (&from_env, ["env-pass-91c2", "sentinel-env-pass-44e1", "env-pass-91c2"]),
        ] {
            let debug = format!("{c:?}");
            for secret in secrets {
                assert!(!debug.contains(secret), "{secret} in {debug}");
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn sentinel_credentials_need_sentinels_and_a_password() {
        let e = args(&["--redis-url", "redis://r:6379", "--redis-sentinel-user", "shim"])
            .validate(no_env)
            .unwrap_err();
        assert!(e.to_string().starts_with("--redis-sentinel-user"), "{e}");
        assert!(e.to_string().contains("no --redis-sentinels"), "{e}");
        let with_sentinels = ["--redis-url", "redis://r:6379", "--redis-sentinels", "s:26379"];
        let e = args(&[&with_sentinels[..], &["--redis-sentinel-user", "shim"]].concat())
            .validate(no_env)
            .unwrap_err();
        assert!(e.to_string().contains("needs a password"), "{e}");
        let env = |k: &str| (k == "REDSESS_REDIS_SENTINEL_PASSWORD").then(|| "pw".to_string());
        let c = args(&[&with_sentinels[..], &["--redis-sentinel-user", "shim"]].concat())
            .validate(env)
            .unwrap();
        let StoreConfig::Redis(redis) = c.store else {
            panic!("a Redis store")
        };
        let auth = redis.sentinel_auth.expect("Sentinel credentials");
        assert_eq!((auth.user.as_deref(), auth.password.as_str()), (Some("shim"), "pw"));
        // No password and no user: the Sentinels are asked as before.
        let c = args(&with_sentinels).validate(no_env).unwrap();
        let StoreConfig::Redis(redis) = c.store else {
            panic!("a Redis store")
        };
        assert!(redis.sentinel_auth.is_none());
    }

    #[test]
    fn secrets_come_from_the_environment_and_stay_out_of_debug_output() {
        let env = |k: &str| (k == "REDSESS_BASIC_AUTH_PASSWORD").then(|| "pa55".to_string());
        let c = args(&["--basic-auth-user", "webseal"]).validate(env).unwrap();
        assert_eq!(c.basic_auth.as_ref().unwrap().password, "pa55");
        assert!(!format!("{c:?}").contains("pa55"));
    }
}
