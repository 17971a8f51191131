//! From a user's `SessionCache` to a validated plan the builders can use without further
//! checks. Every error names the field, so it can become a status condition and an event.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Affinity, ResourceRequirements, Toleration, TopologySpreadConstraint};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::ResourceExt;

use crate::crd::{ClientKind, EncryptionMode, PersistenceMode, SessionCache, ShimMode};
use crate::names;

/// Longest SessionCache name: the longest derived name (`<name>-redis-headless`, pod
/// ordinals, label values) must stay within Kubernetes' 63 characters.
pub const MAX_NAME: usize = 40;

/// redis.conf settings the operator owns; `spec.redis.config` cannot set them.
const MANAGED_REDIS_SETTINGS: &[&str] = &[
    "port",
    "bind",
    "dir",
    "appendonly",
    "appendfsync",
    "save",
    "aclfile",
    "user",
    "requirepass",
    "masterauth",
    "masteruser",
    "replicaof",
    "slaveof",
    "protected-mode",
    "daemonize",
    "include",
    "rename-command",
    "logfile",
    // spec.redis.durability
    "min-replicas-to-write",
    "min-slaves-to-write",
    "min-replicas-max-lag",
    "min-slaves-max-lag",
    // spec.redis.tls
    "tls-port",
    "tls-cert-file",
    "tls-key-file",
    "tls-ca-cert-file",
    "tls-ca-cert-dir",
    "tls-auth-clients",
    "tls-replication",
    "tls-cluster",
];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct ValidationError {
    pub field: String,
    pub problem: String,
}

impl ValidationError {
    pub fn new(field: impl Into<String>, problem: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            problem: problem.into(),
        }
    }
}

fn invalid(field: impl Into<String>, problem: impl Into<String>) -> ValidationError {
    ValidationError::new(field, problem)
}

/// Where the objects will run: OpenShift assigns each namespace's pods a UID and fsGroup
/// (restricted-v2 forbids fixed ones); plain Kubernetes runs an image's own user, and the
/// official Redis image's is root, so its pods need a UID and an fsGroup set for them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Platform {
    #[default]
    #[value(name = "openshift")]
    OpenShift,
    #[value(name = "kubernetes")]
    Kubernetes,
}

/// A validated SessionCache: what the builders emit objects from.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub name: String,
    pub namespace: String,
    pub platform: Platform,
    pub redis: RedisPlan,
    /// Present when Redis is replicated.
    pub sentinel: Option<SentinelPlan>,
    pub shim: ShimPlan,
    pub clients: Vec<ClientPlan>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RedisPlan {
    pub replicas: i32,
    pub image: String,
    pub resources: Option<ResourceRequirements>,
    /// `None` = ephemeral (emptyDir).
    pub volume: Option<VolumePlan>,
    pub persistence: PersistenceMode,
    /// Secret holding the shim's ACL password (key `password`).
    pub password_secret: String,
    /// The operator creates that Secret (the user named none).
    pub generate_password: bool,
    pub affinity: Option<Affinity>,
    pub tolerations: Vec<Toleration>,
    pub node_selector: BTreeMap<String, String>,
    pub topology_spread_constraints: Vec<TopologySpreadConstraint>,
    /// `spec.redis.config` but the memory settings, which `memory` holds.
    pub extra_config: BTreeMap<String, String>,
    pub memory: MemoryPlan,
    /// TLS-only Redis and Sentinel (`spec.redis.tls.enabled`).
    pub tls: Option<TlsPlan>,
    /// Replicas each session write must reach before it is acknowledged (0 = the primary's
    /// alone), and how long the shim waits for them.
    pub durability: DurabilityPlan,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DurabilityPlan {
    pub replicas: i32,
    pub timeout: Duration,
}

/// Where Redis's and Sentinel's certificate comes from, and where clients find its CA.
#[derive(Debug, Clone, PartialEq)]
pub struct TlsPlan {
    /// `tls.crt`, `tls.key` and `ca.crt`, mounted by the Redis and Sentinel pods.
    pub certificate_secret: String,
    /// The operator makes and renews it (its CA in `<name>-redis-tls-issuer`).
    pub generate: bool,
    /// `ca.crt` alone: what the shim and the native clients trust.
    pub ca_secret: String,
    /// cert-manager issues the certificate into `certificate_secret` (`spec.redis.tls.issuerRef`).
    pub issuer: Option<crate::crd::IssuerRef>,
}

/// Redis's memory bound and what happens at it.
#[derive(Debug, Clone, PartialEq)]
pub struct MemoryPlan {
    /// `maxmemory` in bytes: the user's, or derived from the container's memory limit; `None`
    /// without either (Redis then grows until the node has no memory left).
    pub max_bytes: Option<u64>,
    /// Derived from the limit (for the comment in redis.conf).
    pub derived: bool,
    /// `maxmemory-policy`.
    pub policy: String,
}

/// How often the operator replaces the sealing key of a generated key file by default.
pub const DEFAULT_KEY_ROTATION: Duration = Duration::from_secs(30 * 86_400);

/// Memory settings of `spec.redis.config` that validation reads and the plan carries.
const MEMORY_SETTINGS: [&str; 2] = ["maxmemory", "maxmemory-policy"];

/// Policies that only ever evict keys with a TTL. The shim's key material, members and replica
/// sets carry none, so they are never evicted; sessions and their user index may be.
const VOLATILE_POLICIES: [&str; 4] = ["volatile-ttl", "volatile-lru", "volatile-lfu", "volatile-random"];

/// The share of the container's memory limit given to the data set: the rest is for replication
/// and client buffers and for the copy-on-write pages of the fork that writes the AOF or RDB
/// file (which can approach the data set's size under a heavy write load).
fn data_share(persistence: PersistenceMode) -> (u64, u64) {
    match persistence {
        PersistenceMode::Aof | PersistenceMode::Rdb => (1, 2),
        PersistenceMode::None => (3, 4),
    }
}

/// Bytes of a Kubernetes quantity (`1536Mi`, `2G`, `1.5Gi`, `1073741824`).
pub fn quantity_bytes(text: &str) -> Option<u64> {
    let t = text.trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (number, suffix) = t.split_at(split);
    let factor: u64 = match suffix {
        "" => 1,
        "k" => 1000,
        "M" => 1000_u64.pow(2),
        "G" => 1000_u64.pow(3),
        "T" => 1000_u64.pow(4),
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "Ti" => 1 << 40,
        _ => return None,
    };
    let value: f64 = number.parse().ok()?;
    (value.is_finite() && value >= 0.0).then_some((value * factor as f64) as u64)
}

/// Bytes of a redis.conf memory value (`2gb`, `512mb`, `100000`; `1k` is 1000, `1kb` 1024).
fn redis_bytes(text: &str) -> Option<u64> {
    let t = text.trim().to_ascii_lowercase();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let factor: u64 = match unit {
        "" | "b" => 1,
        "k" => 1000,
        "kb" => 1 << 10,
        "m" => 1000_u64.pow(2),
        "mb" => 1 << 20,
        "g" => 1000_u64.pow(3),
        "gb" => 1 << 30,
        _ => return None,
    };
    number.parse::<u64>().ok()?.checked_mul(factor)
}

fn memory_plan(redis: &crate::crd::RedisSpec) -> Result<MemoryPlan, ValidationError> {
    let setting = |name: &str| {
        redis
            .config
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(k, v)| (format!("spec.redis.config.{k}"), v.trim().to_ascii_lowercase()))
    };
    let policy = match setting("maxmemory-policy") {
        None => "noeviction".to_string(),
        Some((field, p)) if p.starts_with("allkeys-") => {
            return Err(invalid(
                field,
                format!("{p} would evict the replica sets' key material and membership; use noeviction (the default: writes fail when full, no session is lost) or volatile-ttl (the sessions closest to their end go first)"),
            ))
        }
        Some((field, p)) if p != "noeviction" && !VOLATILE_POLICIES.contains(&p.as_str()) => {
            return Err(invalid(field, format!("{p} is not a maxmemory-policy")))
        }
        Some((_, p)) => p,
    };
    let limit = redis
        .resources
        .as_ref()
        .and_then(|r| r.limits.as_ref())
        .and_then(|l| l.get("memory"))
        .map(|q| {
            quantity_bytes(&q.0).ok_or_else(|| {
                invalid(
                    "spec.redis.resources.limits.memory",
                    format!("{} is not a memory quantity", q.0),
                )
            })
        })
        .transpose()?;
    let (max_bytes, derived) = match (setting("maxmemory"), limit) {
        (Some((field, value)), limit) => {
            let bytes = redis_bytes(&value)
                .ok_or_else(|| invalid(field.clone(), format!("{value} is not a size (e.g. 1gb, 512mb)")))?;
            if let Some(limit) = limit.filter(|l| bytes >= *l) {
                return Err(invalid(
                    field,
                    format!("{value} is not below the container's memory limit ({limit} bytes): the kernel would kill Redis before Redis refuses a write"),
                ));
            }
            (Some(bytes), false)
        }
        (None, Some(limit)) => {
            let (num, den) = data_share(redis.persistence);
            (Some(limit / den * num), true)
        }
        (None, None) => (None, false),
    };
    Ok(MemoryPlan {
        max_bytes,
        derived,
        policy,
    })
}

#[derive(Debug, Clone, PartialEq)]
pub struct VolumePlan {
    pub size: Quantity,
    pub storage_class_name: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SentinelPlan {
    pub replicas: i32,
    pub quorum: i32,
    pub down_after_ms: u64,
    pub failover_timeout_ms: u64,
    pub image: String,
    pub resources: Option<ResourceRequirements>,
    /// The Secret with the administrator's password (key `password`).
    pub password_secret: String,
    /// The operator creates `password_secret` when it does not exist.
    pub generate_password: bool,
}

/// Ports WebSEAL and IAG containers listen on (HTTP, HTTPS, the management and DSC ports).
const PROXY_PORTS: [i32; 8] = [8080, 8443, 9080, 9443, 9090, 2020, 2021, 8445];

/// The shim injected into reverse-proxy pods instead of a Deployment.
#[derive(Debug, Clone, PartialEq)]
pub struct SidecarPlan {
    /// On 127.0.0.1.
    pub port: i32,
    pub pod_selector: Option<LabelSelector>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ShimPlan {
    /// Sidecar mode; `None`: a Deployment of `replicas` pods.
    pub sidecar: Option<SidecarPlan>,
    pub replicas: i32,
    pub image: String,
    pub resources: Option<ResourceRequirements>,
    pub realm: String,
    pub replica_sets: Vec<String>,
    pub max_lifetime: String,
    pub clock_skew: String,
    pub max_sessions_per_user: i32,
    pub displace: bool,
    pub tls_secret: Option<String>,
    pub client_ca_secret: Option<String>,
    /// Secret with `username` and `password` for HTTP Basic.
    pub basic_auth_secret: String,
    pub generate_basic_auth: bool,
    /// Record encryption; `None` in `Plain` mode (no keys mounted).
    pub encryption: Option<EncryptionPlan>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct EncryptionPlan {
    pub mode: EncryptionMode,
    /// The Secret with the key file (key `keys`).
    pub keys_secret: String,
    pub generate_keys: bool,
    /// The operator rotates the generated key file this often (`None`: never).
    pub rotate_every: Option<Duration>,
    /// How long a key that no longer seals is kept: no record sealed with it outlives this.
    pub retain_for: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ClientPlan {
    pub name: String,
    pub kind: ClientKind,
    pub replica_set: String,
    /// Native clients: the pods the Redis NetworkPolicy admits besides labelled ones.
    pub pod_selector: Option<LabelSelector>,
}

/// Parses `500ms`, `5s`, `3m`, `12h`, `1d` (and bare seconds).
const MAX_DURATION_MS: u64 = 100 * 365 * 86_400_000;

pub fn parse_duration(field: &str, text: &str) -> Result<Duration, ValidationError> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let n: u64 = digits
        .parse()
        .map_err(|_| invalid(field, format!("{text:?} is not a duration (like 5s, 3m, 12h)")))?;
    let millis_per_unit: u64 = match unit {
        "ms" => 1,
        "" | "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => {
            return Err(invalid(
                field,
                format!("{text:?} has an unknown unit (use ms, s, m, h or d)"),
            ))
        }
    };
    // Bounded so that every use (milliseconds as u64, seconds as i64) stays far from overflow.
    match n.checked_mul(millis_per_unit) {
        Some(ms) if ms <= MAX_DURATION_MS => Ok(Duration::from_millis(ms)),
        _ => Err(invalid(field, format!("{text:?} is longer than 100 years"))),
    }
}

fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// Checks a SessionCache and fills in what it leaves to the operator.
/// `spec.redis.durability`, with its defaults: one replica's acknowledgement when there are
/// replicas, within 1 s.
fn durability(redis: &crate::crd::RedisSpec) -> Result<DurabilityPlan, ValidationError> {
    let spec = &redis.durability;
    let replicas = spec.replicas.unwrap_or(if redis.replicas >= 2 { 1 } else { 0 });
    if replicas < 0 || replicas >= redis.replicas {
        return Err(invalid(
            "spec.redis.durability.replicas",
            format!(
                "must be between 0 and {} (spec.redis.replicas less the primary)",
                redis.replicas - 1
            ),
        ));
    }
    let timeout = match &spec.timeout {
        Some(text) => parse_duration("spec.redis.durability.timeout", text)?,
        None => Duration::from_secs(1),
    };
    if timeout < Duration::from_millis(10) || timeout >= Duration::from_secs(5) {
        return Err(invalid(
            "spec.redis.durability.timeout",
            "must be at least 10ms and less than 5s (the shim's request timeout)",
        ));
    }
    Ok(DurabilityPlan { replicas, timeout })
}

pub fn validate(sc: &SessionCache) -> Result<Plan, ValidationError> {
    let name = sc.name_any();
    let namespace = sc.namespace().unwrap_or_else(|| "default".into());
    if name.len() > MAX_NAME || !is_dns_label(&name) {
        return Err(invalid(
            "metadata.name",
            format!("must be a DNS label of at most {MAX_NAME} characters (derived names add suffixes)"),
        ));
    }
    let spec = &sc.spec;

    let redis = &spec.redis;
    if !(1..=9).contains(&redis.replicas) {
        return Err(invalid("spec.redis.replicas", "must be between 1 and 9"));
    }
    if redis.image.trim().is_empty() {
        return Err(invalid("spec.redis.image", "must not be empty"));
    }
    let volume = if redis.storage.ephemeral {
        if redis.storage.size.is_some() || redis.storage.storage_class_name.is_some() {
            return Err(invalid(
                "spec.redis.storage",
                "ephemeral: true runs without volumes; remove size and storageClassName",
            ));
        }
        None
    } else {
        if redis.persistence == PersistenceMode::None {
            return Err(invalid(
                "spec.redis.persistence",
                "None keeps nothing on disk: set spec.redis.storage.ephemeral: true to confirm running without volumes",
            ));
        }
        Some(VolumePlan {
            size: redis.storage.size.clone().unwrap_or_else(|| Quantity("1Gi".into())),
            storage_class_name: redis.storage.storage_class_name.clone(),
        })
    };
    for key in redis.config.keys() {
        let lower = key.to_ascii_lowercase();
        if MANAGED_REDIS_SETTINGS.contains(&lower.as_str()) {
            return Err(invalid(
                format!("spec.redis.config.{key}"),
                "is managed by the operator and cannot be set here",
            ));
        }
        if key.is_empty() || key.contains(char::is_whitespace) {
            return Err(invalid(
                format!("spec.redis.config.{key}"),
                "is not a redis.conf setting name",
            ));
        }
    }
    for (key, value) in &redis.config {
        if value.contains(['\n', '\r']) {
            return Err(invalid(format!("spec.redis.config.{key}"), "must be one line"));
        }
    }
    if redis.tls.certificate_secret.is_some() && !redis.tls.enabled {
        return Err(invalid(
            "spec.redis.tls.certificateSecret",
            "is set, but spec.redis.tls.enabled is false: turn TLS on, or remove the Secret's name",
        ));
    }
    if let Some(issuer) = &redis.tls.issuer_ref {
        if !redis.tls.enabled {
            return Err(invalid(
                "spec.redis.tls.issuerRef",
                "is set, but spec.redis.tls.enabled is false: turn TLS on, or remove the issuer",
            ));
        }
        if !["Issuer", "ClusterIssuer"].contains(&issuer.kind.as_str()) || issuer.name.trim().is_empty() {
            return Err(invalid(
                "spec.redis.tls.issuerRef",
                "needs a name and kind Issuer (in this namespace) or ClusterIssuer",
            ));
        }
    }
    let memory = memory_plan(redis)?;
    let mut extra_config = redis.config.clone();
    extra_config.retain(|k, _| !MEMORY_SETTINGS.contains(&k.to_ascii_lowercase().as_str()));

    let durability = durability(redis)?;
    let sentinel = if redis.replicas >= 2 {
        let s = &spec.sentinel;
        if !(1..=9).contains(&s.replicas) {
            return Err(invalid("spec.sentinel.replicas", "must be between 1 and 9"));
        }
        if s.quorum < 1 || s.quorum > s.replicas {
            return Err(invalid(
                "spec.sentinel.quorum",
                format!("must be between 1 and spec.sentinel.replicas ({})", s.replicas),
            ));
        }
        let down_after = parse_duration("spec.sentinel.downAfter", &s.down_after)?;
        let failover = parse_duration("spec.sentinel.failoverTimeout", &s.failover_timeout)?;
        if down_after < Duration::from_millis(500) {
            return Err(invalid("spec.sentinel.downAfter", "must be at least 500ms"));
        }
        Some(SentinelPlan {
            replicas: s.replicas,
            quorum: s.quorum,
            down_after_ms: down_after.as_millis() as u64,
            failover_timeout_ms: failover.as_millis() as u64,
            image: redis.image.clone(),
            resources: s.resources.clone(),
            password_secret: s
                .password_secret
                .clone()
                .unwrap_or_else(|| names::sentinel_auth_secret(&name)),
            generate_password: s.password_secret.is_none(),
        })
    } else {
        None
    };

    let shim = &spec.shim;
    let sidecar = match shim.mode {
        ShimMode::Deployment => None,
        ShimMode::Sidecar => {
            let port = shim.sidecar.port;
            if !(1024..=65535).contains(&port) {
                return Err(invalid(
                    "spec.shim.sidecar.port",
                    "must be between 1024 and 65535 (the shim runs without privileges)",
                ));
            }
            if PROXY_PORTS.contains(&port) {
                return Err(invalid(
                    "spec.shim.sidecar.port",
                    format!("{port} is a port of WebSEAL or IAG containers; pick another (default 18443)"),
                ));
            }
            if shim.security.tls_secret.is_some() {
                return Err(invalid(
                    "spec.shim.security.tlsSecret",
                    "the sidecar listens on 127.0.0.1 and its traffic never leaves the pod; TLS is for mode Deployment",
                ));
            }
            Some(SidecarPlan {
                port,
                pod_selector: shim.sidecar.pod_selector.clone(),
            })
        }
    };
    if !(1..=100).contains(&shim.replicas) {
        return Err(invalid("spec.shim.replicas", "must be between 1 and 100"));
    }
    if shim.replica_sets.is_empty() {
        return Err(invalid("spec.shim.replicaSets", "must name at least one replica set"));
    }
    for (i, set) in shim.replica_sets.iter().enumerate() {
        if set.trim().is_empty() || set.contains([',', ' ', '{', '}']) {
            return Err(invalid(
                format!("spec.shim.replicaSets[{i}]"),
                "must be a name without spaces, commas or braces",
            ));
        }
    }
    let max_lifetime = parse_duration("spec.shim.session.maxLifetime", &shim.session.max_lifetime)?;
    if max_lifetime < Duration::from_secs(60) {
        return Err(invalid("spec.shim.session.maxLifetime", "must be at least 1m"));
    }
    let clock_skew = parse_duration("spec.shim.session.clockSkew", &shim.session.clock_skew)?;
    let rotate_every = match (&shim.encryption.rotate_every, &shim.encryption.keys_secret) {
        (Some(_), Some(_)) => {
            return Err(invalid(
                "spec.shim.encryption.rotateEvery",
                "is for the generated key file: with keysSecret, rotate your Secret yourself (docs/security.md)",
            ))
        }
        (Some(text), None) => parse_duration("spec.shim.encryption.rotateEvery", text)?,
        (None, None) => DEFAULT_KEY_ROTATION,
        (None, Some(_)) => Duration::ZERO,
    };
    if !rotate_every.is_zero() && rotate_every < max_lifetime {
        return Err(invalid(
            "spec.shim.encryption.rotateEvery",
            format!(
                "{} is shorter than spec.shim.session.maxLifetime ({}): old keys would pile up; rotate less often, or 0 for never",
                shim.encryption.rotate_every.as_deref().unwrap_or_default(),
                shim.session.max_lifetime
            ),
        ));
    }
    if shim.session.max_sessions_per_user < 0 {
        return Err(invalid("spec.shim.session.maxSessionsPerUser", "must not be negative"));
    }
    if shim.security.client_ca_secret.is_some() && shim.security.tls_secret.is_none() {
        return Err(invalid(
            "spec.shim.security.clientCaSecret",
            "client certificates need HTTPS: set spec.shim.security.tlsSecret too",
        ));
    }

    let mut clients = Vec::new();
    for (i, c) in spec.clients.iter().enumerate() {
        if !is_dns_label(&c.name) || c.name.len() > 40 {
            return Err(invalid(
                format!("spec.clients[{i}].name"),
                "must be a DNS label of at most 40 characters",
            ));
        }
        if clients.iter().any(|p: &ClientPlan| p.name == c.name) {
            return Err(invalid(
                format!("spec.clients[{i}].name"),
                format!("{} is used twice", c.name),
            ));
        }
        let replica_set = c.replica_set.clone().unwrap_or_else(|| shim.replica_sets[0].clone());
        if !shim.replica_sets.contains(&replica_set) {
            return Err(invalid(
                format!("spec.clients[{i}].replicaSet"),
                format!("{replica_set} is not one of spec.shim.replicaSets"),
            ));
        }
        if c.pod_selector.is_some() && c.kind == ClientKind::WebSealDsc {
            return Err(invalid(
                format!("spec.clients[{i}].podSelector"),
                "only native clients (WebSEALRedis, IAG) reach Redis; a WebSEALDSC client talks to the shim",
            ));
        }
        clients.push(ClientPlan {
            name: c.name.clone(),
            kind: c.kind,
            replica_set,
            pod_selector: c.pod_selector.clone(),
        });
    }

    Ok(Plan {
        redis: RedisPlan {
            replicas: redis.replicas,
            image: redis.image.clone(),
            resources: redis.resources.clone(),
            volume,
            persistence: redis.persistence,
            password_secret: redis
                .password_secret
                .clone()
                .unwrap_or_else(|| names::redis_auth_secret(&name)),
            generate_password: redis.password_secret.is_none(),
            affinity: redis.scheduling.affinity.clone(),
            tolerations: redis.scheduling.tolerations.clone(),
            node_selector: redis.scheduling.node_selector.clone(),
            topology_spread_constraints: redis.scheduling.topology_spread_constraints.clone(),
            extra_config,
            memory,
            durability,
            tls: redis.tls.enabled.then(|| TlsPlan {
                certificate_secret: redis
                    .tls
                    .certificate_secret
                    .clone()
                    .unwrap_or_else(|| names::redis_tls_secret(&name)),
                generate: redis.tls.certificate_secret.is_none() && redis.tls.issuer_ref.is_none(),
                ca_secret: names::redis_ca_secret(&name),
                issuer: redis.tls.issuer_ref.clone(),
            }),
        },
        sentinel,
        shim: ShimPlan {
            sidecar,
            replicas: shim.replicas,
            image: shim.image.clone(),
            resources: shim.resources.clone(),
            realm: shim.realm.clone(),
            replica_sets: shim.replica_sets.clone(),
            max_lifetime: shim.session.max_lifetime.clone(),
            clock_skew: shim.session.clock_skew.clone(),
            max_sessions_per_user: shim.session.max_sessions_per_user,
            displace: shim.session.displace,
            tls_secret: shim.security.tls_secret.clone(),
            client_ca_secret: shim.security.client_ca_secret.clone(),
            basic_auth_secret: shim
                .security
                .basic_auth_secret
                .clone()
                .unwrap_or_else(|| names::shim_auth_secret(&name)),
            generate_basic_auth: shim.security.basic_auth_secret.is_none(),
            encryption: (shim.encryption.mode() != EncryptionMode::Plain).then(|| EncryptionPlan {
                mode: shim.encryption.mode(),
                keys_secret: shim
                    .encryption
                    .keys_secret
                    .clone()
                    .unwrap_or_else(|| names::record_keys_secret(&name)),
                generate_keys: shim.encryption.keys_secret.is_none(),
                rotate_every: (!rotate_every.is_zero()).then_some(rotate_every),
                retain_for: max_lifetime + clock_skew,
            }),
        },
        clients,
        name,
        namespace,
        platform: Platform::default(),
    })
}

impl Plan {
    /// The same plan for another platform.
    pub fn on(mut self, platform: Platform) -> Self {
        self.platform = platform;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache(spec_yaml: &str) -> SessionCache {
        crate::fixtures::session_cache(spec_yaml, 1)
    }

    fn error(spec_yaml: &str) -> ValidationError {
        validate(&cache(spec_yaml)).unwrap_err()
    }

    #[test]
    fn defaults_give_a_standalone_redis_with_a_volume_and_generated_secrets() {
        let plan = validate(&cache("  {}")).unwrap();
        assert_eq!(plan.redis.replicas, 1);
        assert!(plan.sentinel.is_none());
        assert_eq!(plan.redis.volume.as_ref().unwrap().size, Quantity("1Gi".into()));
        assert_eq!(plan.redis.password_secret, "cache-redis-auth");
        assert!(plan.redis.generate_password && plan.shim.generate_basic_auth);
    }

    #[test]
    fn replicated_redis_brings_sentinel() {
        let plan = validate(&cache("  redis: {replicas: 3}\n  sentinel: {downAfter: 2s}")).unwrap();
        let s = plan.sentinel.unwrap();
        assert_eq!((s.replicas, s.quorum, s.down_after_ms), (3, 2, 2000));
    }

    #[test]
    fn errors_name_the_field() {
        for (spec, field) in [
            (
                "  redis: {replicas: 3, durability: {replicas: 3}}",
                "spec.redis.durability.replicas",
            ),
            ("  redis: {durability: {replicas: 1}}", "spec.redis.durability.replicas"),
            (
                "  redis: {replicas: 2, durability: {timeout: 5s}}",
                "spec.redis.durability.timeout",
            ),
            (
                "  redis: {config: {min-replicas-to-write: '0'}}",
                "spec.redis.config.min-replicas-to-write",
            ),
            (
                "  redis: {config: {maxmemory-policy: allkeys-lru}}",
                "spec.redis.config.maxmemory-policy",
            ),
            (
                "  redis: {config: {maxmemory-policy: forget-everything}}",
                "spec.redis.config.maxmemory-policy",
            ),
            ("  redis: {config: {maxmemory: lots}}", "spec.redis.config.maxmemory"),
            (
                "  redis: {config: {maxmemory: 2gb}, resources: {limits: {memory: 1Gi}}}",
                "spec.redis.config.maxmemory",
            ),
            (
                "  redis: {resources: {limits: {memory: plenty}}}",
                "spec.redis.resources.limits.memory",
            ),
        ] {
            assert_eq!(error(spec).field, field, "{spec}");
        }
        assert!(error("  redis: {config: {maxmemory-policy: allkeys-lru}}")
            .problem
            .contains("key material"));
        assert_eq!(quantity_bytes("1536Mi"), Some(1536 << 20));
        assert_eq!(quantity_bytes("2G"), Some(2_000_000_000));
        assert_eq!(quantity_bytes("1.5Gi"), Some(3 << 29));
        assert_eq!(quantity_bytes("1x"), None);
        assert_eq!(
            error("  shim: {mode: Sidecar, sidecar: {port: 8443}}").field,
            "spec.shim.sidecar.port"
        );
        assert_eq!(
            error("  shim: {mode: Sidecar, security: {tlsSecret: tls}}").field,
            "spec.shim.security.tlsSecret"
        );
        let sidecar = validate(&cache(
            "  shim: {mode: Sidecar, sidecar: {podSelector: {matchLabels: {app: isamwebseal}}}}",
        ))
        .unwrap()
        .shim
        .sidecar
        .unwrap();
        assert_eq!(sidecar.port, 18443);
        assert_eq!(
            sidecar.pod_selector.unwrap().match_labels.unwrap()["app"],
            "isamwebseal"
        );
        assert_eq!(error("  redis: {persistence: None}").field, "spec.redis.persistence");
        assert_eq!(
            error("  redis: {replicas: 2}\n  sentinel: {quorum: 5}").field,
            "spec.sentinel.quorum"
        );
        assert_eq!(
            error("  redis: {replicas: 2}\n  sentinel: {downAfter: soon}").field,
            "spec.sentinel.downAfter"
        );
        assert_eq!(
            error("  redis: {config: {appendonly: 'no'}}").field,
            "spec.redis.config.appendonly"
        );
        assert_eq!(
            error("  clients: [{name: a, kind: IAG}, {name: a, kind: IAG}]").field,
            "spec.clients[1].name"
        );
        assert_eq!(
            error("  clients: [{name: a, kind: IAG, replicaSet: other}]").field,
            "spec.clients[0].replicaSet"
        );
        assert_eq!(
            error("  shim: {security: {clientCaSecret: ca}}").field,
            "spec.shim.security.clientCaSecret"
        );
        assert_eq!(
            error("  shim: {session: {maxLifetime: 10s}}").field,
            "spec.shim.session.maxLifetime"
        );
        // A huge number is refused, not wrapped around into a short duration.
        let huge = error("  shim: {session: {clockSkew: 213503982334602d}}");
        assert_eq!(huge.field, "spec.shim.session.clockSkew");
        assert!(huge.to_string().contains("longer than 100 years"), "{huge}");
    }

    #[test]
    fn ephemeral_must_be_explicit_and_consistent() {
        let plan = validate(&cache("  redis: {persistence: None, storage: {ephemeral: true}}")).unwrap();
        assert!(plan.redis.volume.is_none());
        assert_eq!(
            error("  redis: {storage: {ephemeral: true, size: 5Gi}}").field,
            "spec.redis.storage"
        );
    }
}
