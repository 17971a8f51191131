//! The `SessionCache` custom resource (`redsess.io/v1alpha1`, short name `rsc`): what a user
//! asks for, with defaults that `kubectl explain` shows, and the status the operator reports.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Affinity, ResourceRequirements, Toleration, TopologySpreadConstraint};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Images the operator deploys unless the spec names others; pinned by tag.
pub const DEFAULT_REDIS_IMAGE: &str = "docker.io/library/redis:7.4.2-alpine";
pub const DEFAULT_SHIM_IMAGE: &str = "ghcr.io/redsess/redsess-shim:0.1.0";

/// A managed session store for WebSEAL and IBM Application Gateway: Redis (with Sentinel when
/// replicated), the redsess-shim speaking the DSC protocol, and the configuration each proxy
/// needs to use them.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "redsess.io",
    version = "v1alpha1",
    kind = "SessionCache",
    namespaced,
    shortname = "rsc",
    status = "SessionCacheStatus",
    printcolumn = r#"{"name":"Redis","type":"string","jsonPath":".status.redis.summary"}"#,
    printcolumn = r#"{"name":"Sentinel","type":"string","jsonPath":".status.sentinel.summary"}"#,
    printcolumn = r#"{"name":"Shim","type":"string","jsonPath":".status.shim.summary"}"#,
    printcolumn = r#"{"name":"Sidecars","type":"string","jsonPath":".status.sidecars.summary","priority":1}"#,
    printcolumn = r#"{"name":"Available","type":"string","jsonPath":".status.conditions[?(@.type==\"Available\")].status"}"#,
    printcolumn = r#"{"name":"Endpoint","type":"string","jsonPath":".status.endpoints.shim","priority":1}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct SessionCacheSpec {
    /// The Redis that holds the sessions.
    #[serde(default)]
    pub redis: RedisSpec,
    /// Sentinel, which watches a replicated Redis and promotes a replica when the primary fails.
    /// Used only when `redis.replicas` is 2 or more.
    #[serde(default)]
    pub sentinel: SentinelSpec,
    /// The redsess-shim, which speaks WebSEAL's DSC protocol and keeps sessions in this Redis.
    #[serde(default)]
    pub shim: ShimSpec,
    /// Reverse proxies to wire: the operator writes one ConfigMap per client holding the
    /// configuration fragment that proxy needs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub clients: Vec<ClientSpec>,
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RedisSpec {
    /// 1 runs a standalone Redis; 2 or more run one primary and replicas, watched by Sentinel.
    #[serde(default = "default_redis_replicas")]
    #[schemars(range(min = 1, max = 9))]
    pub replicas: i32,
    /// Redis container image.
    #[serde(default = "default_redis_image")]
    pub image: String,
    /// CPU and memory for each Redis container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Where Redis keeps its data.
    #[serde(default)]
    pub storage: StorageSpec,
    /// How Redis persists: append-only file (default), periodic snapshots, or not at all.
    #[serde(default)]
    pub persistence: PersistenceMode,
    /// Secret (key `password`) with the password of the shim's Redis ACL user. Generated once
    /// as `<name>-redis-auth` when absent, and never regenerated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_secret: Option<String>,
    /// Where Redis pods may run.
    #[serde(default)]
    pub scheduling: SchedulingSpec,
    /// Extra redis.conf settings, `name: value`. Settings the operator manages (port, dir,
    /// persistence, ACLs, replication) cannot be overridden here.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub config: BTreeMap<String, String>,
    /// TLS for every connection to Redis and Sentinel: clients, replication, Sentinel's own.
    #[serde(default)]
    pub tls: RedisTlsSpec,
    /// When a session write is acknowledged: once the primary has it, or once replicas have
    /// it too, so that it survives the primary's loss.
    #[serde(default)]
    pub durability: DurabilitySpec,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DurabilitySpec {
    /// Replicas that must have each session write (createSession, changeSession,
    /// terminateSession) before the shim answers success; past `timeout` the write is
    /// answered with a fault. Redis also refuses writes while fewer replicas are connected
    /// (`min-replicas-to-write`), native WebSEAL and IAG clients' included. Default: 1 with
    /// replicated Redis, 0 (once the primary has it) with a standalone one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 8))]
    pub replicas: Option<i32>,
    /// How long a write waits for those replicas (default 1s; less than 5s, the shim's
    /// request timeout).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RedisTlsSpec {
    /// Redis and Sentinel accept TLS only, on their usual ports (6379, 26379); the shim, the
    /// replicas, the Sentinels and the generated client configuration all use it. Turning it
    /// on or off changes those ports' protocol: native WebSEAL and IAG clients must take
    /// their new configuration at the same time (see docs/security.md).
    #[serde(default)]
    pub enabled: bool,
    /// Secret with the servers' certificate (`tls.crt`, `tls.key`) and its CA (`ca.crt`), as
    /// cert-manager writes it; it must name every Redis and Sentinel host (see
    /// docs/security.md). When absent, the operator makes a CA and a certificate
    /// (`<name>-redis-tls`) and renews the certificate a month before it expires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate_secret: Option<String>,
    /// A cert-manager issuer: the operator asks it for the certificate (a cert-manager
    /// `Certificate` for every Redis and Sentinel name, into `certificateSecret` or
    /// `<name>-redis-tls`), and cert-manager renews it. The issuer must write `ca.crt` (a CA
    /// or self-signed issuer does).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer_ref: Option<IssuerRef>,
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IssuerRef {
    pub name: String,
    /// `Issuer` (in the cache's namespace, the default) or `ClusterIssuer`.
    #[serde(default = "default_issuer_kind")]
    pub kind: String,
    #[serde(default = "default_issuer_group")]
    pub group: String,
}

fn default_issuer_kind() -> String {
    "Issuer".into()
}

fn default_issuer_group() -> String {
    "cert-manager.io".into()
}

impl Default for RedisSpec {
    fn default() -> Self {
        Self {
            replicas: default_redis_replicas(),
            image: default_redis_image(),
            resources: None,
            storage: StorageSpec::default(),
            persistence: PersistenceMode::default(),
            password_secret: None,
            scheduling: SchedulingSpec::default(),
            config: BTreeMap::new(),
            tls: RedisTlsSpec::default(),
            durability: DurabilitySpec::default(),
        }
    }
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StorageSpec {
    /// Size of each Redis pod's PersistentVolumeClaim (default 1Gi).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<Quantity>,
    /// StorageClass of the claims; the cluster default when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class_name: Option<String>,
    /// Run without persistent volumes: every session is lost when all Redis pods restart.
    /// Must be set explicitly.
    #[serde(default)]
    pub ephemeral: bool,
}

#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum PersistenceMode {
    /// Append-only file, fsync every second.
    #[default]
    #[serde(rename = "AOF")]
    Aof,
    /// Snapshots (RDB) every 60 s when at least 1000 keys changed.
    #[serde(rename = "RDB")]
    Rdb,
    /// Nothing on disk.
    None,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SchedulingSpec {
    /// Replaces the default soft anti-affinity (spread over nodes when possible).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub topology_spread_constraints: Vec<TopologySpreadConstraint>,
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SentinelSpec {
    /// Number of Sentinels (odd, at least 3 for a meaningful quorum).
    #[serde(default = "default_sentinel_replicas")]
    #[schemars(range(min = 1, max = 9))]
    pub replicas: i32,
    /// Sentinels that must agree the primary is down before a failover.
    #[serde(default = "default_quorum")]
    #[schemars(range(min = 1, max = 9))]
    pub quorum: i32,
    /// How long the primary must be unreachable before it is considered down (e.g. 5s).
    #[serde(default = "default_down_after")]
    pub down_after: String,
    /// Failover timeout (e.g. 60s).
    #[serde(default = "default_failover_timeout")]
    pub failover_timeout: String,
    /// CPU and memory for each Sentinel container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Secret (key `password`) with the password of the Sentinels' administrator user, which
    /// only the Sentinels know (clients ask them as the read-only Redis user). Generated once
    /// as `<name>-sentinel-auth` when absent, and never regenerated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_secret: Option<String>,
}

impl Default for SentinelSpec {
    fn default() -> Self {
        Self {
            replicas: default_sentinel_replicas(),
            quorum: default_quorum(),
            down_after: default_down_after(),
            failover_timeout: default_failover_timeout(),
            resources: None,
            password_secret: None,
        }
    }
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ShimSpec {
    /// `Deployment` runs the shim as its own pods behind a Service. `Sidecar` injects it into
    /// each selected reverse-proxy pod of this namespace, listening on 127.0.0.1 (the operator's
    /// admission webhook does it, in namespaces labelled `redsess.io/injection=enabled`).
    #[serde(default)]
    pub mode: ShimMode,
    /// Sidecar mode: which pods get the shim, and where it listens.
    #[serde(default)]
    pub sidecar: SidecarSpec,
    #[serde(default = "default_shim_replicas")]
    #[schemars(range(min = 1, max = 100))]
    pub replicas: i32,
    /// redsess-shim container image.
    #[serde(default = "default_shim_image")]
    pub image: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Session realm answered to WebSEAL.
    #[serde(default = "default_realm")]
    pub realm: String,
    /// Replica sets served (WebSEAL `[replica-sets]`).
    #[serde(default = "default_replica_sets")]
    pub replica_sets: Vec<String>,
    #[serde(default)]
    pub session: SessionSettings,
    /// Listener security: TLS and client authentication.
    #[serde(default)]
    pub security: ListenerSecurity,
    /// Sealing of session records in Redis (AES-256-GCM).
    #[serde(default)]
    pub encryption: EncryptionSpec,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EncryptionSpec {
    /// `Plain`; `Sealed`; or, on the way between them as a rolling change, `PlainMigrating`
    /// (reads both, writes plain) and `SealMigrating` (reads both, writes sealed). From
    /// `Plain`, go through `PlainMigrating` to `SealMigrating`, each rolled out before the
    /// next: a shim in `Plain` has no keys and cannot open what another seals. A new
    /// SessionCache without a mode is given `SealMigrating` by the operator's admission
    /// webhook; a cache that has none (one created before, or without the webhook) is `Plain`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "encryption_mode_schema")]
    pub mode: Option<EncryptionMode>,
    /// Secret (key `keys`) with the key file (`<key ID> <base64 key>` lines, the first seals).
    /// Generated once with one key as `<name>-record-keys` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keys_secret: Option<String>,
    /// How often the operator replaces the sealing key of the generated key file (e.g. 30d,
    /// the default; 0 never): it adds a new key, makes it the sealing key once every shim has
    /// it, and removes the old one when no record sealed with it can be alive. Not with
    /// `keysSecret`, which is yours to rotate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotate_every: Option<String>,
}

#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum EncryptionMode {
    #[default]
    Plain,
    PlainMigrating,
    SealMigrating,
    Sealed,
}

/// The mode's schema without the `null` schemars adds for an `Option` (`enum: [.., null]`),
/// which Kubernetes 1.20 refuses: absent means `Plain`, null is not a value to write.
fn encryption_mode_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
    generator.subschema_for::<EncryptionMode>()
}

impl EncryptionSpec {
    /// The mode in force: `Plain` when none is set (never defaulted otherwise here, so that a
    /// running cache is not switched by an upgrade; see `admission::default_session_cache`).
    pub fn mode(&self) -> EncryptionMode {
        self.mode.unwrap_or_default()
    }
}

impl EncryptionMode {
    /// The shim's `--record-encryption` value.
    pub fn shim_value(self) -> &'static str {
        match self {
            EncryptionMode::Plain => "plain",
            EncryptionMode::PlainMigrating => "plain-migrating",
            EncryptionMode::SealMigrating => "seal-migrating",
            EncryptionMode::Sealed => "sealed",
        }
    }
}

impl Default for ShimSpec {
    fn default() -> Self {
        Self {
            mode: ShimMode::default(),
            sidecar: SidecarSpec::default(),
            replicas: default_shim_replicas(),
            image: default_shim_image(),
            resources: None,
            realm: default_realm(),
            replica_sets: default_replica_sets(),
            session: SessionSettings::default(),
            security: ListenerSecurity::default(),
            encryption: EncryptionSpec::default(),
        }
    }
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SidecarSpec {
    /// The reverse-proxy pods of this namespace that get the shim, by the labels they already
    /// carry (IBM's operators fix them: e.g. `{matchLabels: {app: isamwebseal}}`). Pods with the
    /// annotation `redsess.io/inject: <this cache>` get it too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_selector: Option<LabelSelector>,
    /// The shim's port on 127.0.0.1 in the proxy pod; one that WebSEAL and IAG do not use.
    #[serde(default = "default_sidecar_port")]
    #[schemars(range(min = 1024, max = 65535))]
    pub port: i32,
}

impl Default for SidecarSpec {
    fn default() -> Self {
        Self {
            pod_selector: None,
            port: default_sidecar_port(),
        }
    }
}

fn default_sidecar_port() -> i32 {
    18443
}

#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum ShimMode {
    #[default]
    Deployment,
    Sidecar,
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SessionSettings {
    /// Longest a session may live, whatever WebSEAL asks (e.g. 8h).
    #[serde(default = "default_max_lifetime")]
    pub max_lifetime: String,
    /// Tolerance for clocks that differ between hosts (e.g. 3m).
    #[serde(default = "default_clock_skew")]
    pub clock_skew: String,
    /// Concurrent sessions per user (0 = only WebSEAL's own policy).
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub max_sessions_per_user: i32,
    /// Past the limit, end the user's oldest sessions instead of refusing a new login.
    #[serde(default)]
    pub displace: bool,
}

impl Default for SessionSettings {
    fn default() -> Self {
        Self {
            max_lifetime: default_max_lifetime(),
            clock_skew: default_clock_skew(),
            max_sessions_per_user: 0,
            displace: false,
        }
    }
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ListenerSecurity {
    /// Secret of type kubernetes.io/tls (`tls.crt`, `tls.key`): the shim serves HTTPS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_secret: Option<String>,
    /// Secret with `ca.crt`: every client must present a certificate this CA signed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_ca_secret: Option<String>,
    /// Secret with `username` and `password` for HTTP Basic (WebSEAL's `basic-auth-user` and
    /// `basic-auth-passwd`). Generated once as `<name>-shim-auth` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub basic_auth_secret: Option<String>,
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClientSpec {
    /// Names the client's ConfigMap: `<sessioncache>-client-<name>`.
    #[schemars(length(min = 1, max = 40), regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"))]
    pub name: String,
    pub kind: ClientKind,
    /// Replica set the proxy's sessions belong to (default: the first of `shim.replicaSets`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replica_set: Option<String>,
    /// Native clients (`WebSEALRedis`, `IAG`): the proxy pods in this namespace that the Redis
    /// NetworkPolicy admits, by labels they already carry (IBM's operators fix their pods'
    /// labels), e.g. `{matchLabels: {app: iag}}`. Pods labelled `redsess.io/client: <cache>`
    /// are admitted either way.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_selector: Option<LabelSelector>,
}

#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum ClientKind {
    /// WebSEAL speaking the DSC protocol to the shim (`[dsess-cluster]`).
    #[serde(rename = "WebSEALDSC")]
    WebSealDsc,
    /// WebSEAL 10.0.1+ using Redis natively (`[redis]`, `[redis-collection:…]`, `[redis-server:…]`).
    #[serde(rename = "WebSEALRedis")]
    WebSealRedis,
    /// IBM Application Gateway (`services.redis`, `server.session.redis`).
    #[serde(rename = "IAG")]
    Iag,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SessionCacheStatus {
    /// The generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Available`, `Progressing`, `Degraded`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redis: Option<ReadyCount>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sentinel: Option<ReadyCount>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shim: Option<ReadyCount>,
    /// Sidecar mode: the pods running the injected shim, and how many run an older one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sidecars: Option<SidecarCount>,
    /// Where clients connect.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoints: Option<Endpoints>,
    /// Client name → SHA-256 of its configuration fragment, so consumers can roll when it
    /// changes.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub client_config_hashes: BTreeMap<String, String>,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReadyCount {
    pub ready: i32,
    pub desired: i32,
    /// `ready/desired`, for `kubectl get`.
    pub summary: String,
}

impl ReadyCount {
    pub fn new(ready: i32, desired: i32) -> Self {
        Self {
            ready,
            desired,
            summary: format!("{ready}/{desired}"),
        }
    }
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SidecarCount {
    /// Pods of this namespace carrying this cache's shim.
    pub injected: i32,
    /// Of those, the pods whose shim is not what the spec and image give now: restart them
    /// (`kubectl rollout restart`) to take the new one.
    pub outdated: i32,
    /// `injected (outdated outdated)`, for `kubectl get`.
    pub summary: String,
}

impl SidecarCount {
    pub fn new(injected: i32, outdated: i32) -> Self {
        Self {
            injected,
            outdated,
            summary: format!("{injected} ({outdated} outdated)"),
        }
    }
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Endpoints {
    /// The shim's DSC URL for WebSEAL's `[dsess-cluster] server`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shim: Option<String>,
    /// Redis `host:port` (the primary when standalone).
    pub redis: String,
    /// Sentinel `host:port`, with the monitored primary's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sentinel: Option<String>,
}

fn default_redis_replicas() -> i32 {
    1
}
fn default_redis_image() -> String {
    DEFAULT_REDIS_IMAGE.into()
}
fn default_sentinel_replicas() -> i32 {
    3
}
fn default_quorum() -> i32 {
    2
}
fn default_down_after() -> String {
    "5s".into()
}
fn default_failover_timeout() -> String {
    "60s".into()
}
fn default_shim_replicas() -> i32 {
    2
}
fn default_shim_image() -> String {
    DEFAULT_SHIM_IMAGE.into()
}
fn default_realm() -> String {
    "ISAM-Distributed-Session-Cache".into()
}
fn default_replica_sets() -> Vec<String> {
    vec!["default".into()]
}
fn default_max_lifetime() -> String {
    "24h".into()
}
fn default_clock_skew() -> String {
    "3m".into()
}

/// The CRD as YAML, as `redsess-operator crd` prints it and `crds/` holds it.
pub fn crd_yaml() -> String {
    use kube::CustomResourceExt;
    let crd = SessionCache::crd();
    format!(
        "# Generated by `redsess-operator crd`; do not edit.\n{}",
        serde_yaml::to_string(&crd).expect("the CRD serializes")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_minimal_spec_gets_every_default() {
        let sc: SessionCache = serde_yaml::from_str(
            "apiVersion: redsess.io/v1alpha1\nkind: SessionCache\nmetadata: {name: cache, namespace: isam}\nspec: {}\n",
        )
        .unwrap();
        assert_eq!(sc.spec.redis.replicas, 1);
        assert_eq!(sc.spec.redis.persistence, PersistenceMode::Aof);
        assert_eq!(sc.spec.sentinel.replicas, 3);
        assert_eq!(sc.spec.shim.replicas, 2);
        assert_eq!(sc.spec.shim.replica_sets, ["default"]);
        assert_eq!(sc.spec.shim.session.clock_skew, "3m");
    }

    #[test]
    fn client_kinds_use_the_documented_names() {
        let c: ClientSpec = serde_yaml::from_str("{name: web, kind: WebSEALDSC}").unwrap();
        assert_eq!(c.kind, ClientKind::WebSealDsc);
        assert!(serde_yaml::from_str::<ClientSpec>("{name: web, kind: Apache}").is_err());
    }

    #[test]
    fn the_crd_is_namespaced_with_its_short_name() {
        let yaml = crd_yaml();
        assert!(yaml.contains("scope: Namespaced"));
        assert!(yaml.contains("- rsc"));
        assert!(yaml.contains("name: sessioncaches.redsess.io"));
    }
}
