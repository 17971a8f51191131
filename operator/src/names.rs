//! The names and labels of everything a SessionCache emits, in one place, so builders,
//! the controller and status agree.

use std::collections::BTreeMap;

pub const APP: &str = "redsess";
pub const MANAGER: &str = "redsess-operator";
/// The field manager of every server-side apply.
pub const FIELD_MANAGER: &str = "redsess-operator";

/// Component label values.
pub mod component {
    pub const REDIS: &str = "redis";
    pub const SENTINEL: &str = "sentinel";
    pub const SHIM: &str = "shim";
    pub const CLIENT_CONFIG: &str = "client-config";
    pub const SECRET: &str = "secret";
}

/// Port numbers, fixed so that fragments and policies agree.
pub const REDIS_PORT: i32 = 6379;
pub const SENTINEL_PORT: i32 = 26379;
pub const SHIM_PORT: i32 = 8443;
/// Name of the primary Sentinel monitors.
pub const SENTINEL_PRIMARY_NAME: &str = "redsess";
/// The Redis ACL user the shim (and WebSEAL/IAG natively) connects as.
pub const REDIS_USER: &str = "redsess";
/// Replicas authenticate to their primary as this user.
pub const REPLICATION_USER: &str = "redsess-replication";
/// Sentinel's user on Redis, also the start scripts' and probes'.
pub const MONITOR_USER: &str = "redsess-monitor";
/// The Sentinels' own ACL user, which they use among themselves; clients get a read-only
/// `REDIS_USER` on the Sentinels.
pub const SENTINEL_ADMIN_USER: &str = "redsess-sentinel";

pub fn redis(cache: &str) -> String {
    format!("{cache}-redis")
}
pub fn redis_headless(cache: &str) -> String {
    format!("{cache}-redis-headless")
}
pub fn redis_config(cache: &str) -> String {
    format!("{cache}-redis-config")
}
pub fn sentinel(cache: &str) -> String {
    format!("{cache}-sentinel")
}
pub fn sentinel_config(cache: &str) -> String {
    format!("{cache}-sentinel-config")
}
pub fn shim(cache: &str) -> String {
    format!("{cache}-shim")
}
pub fn redis_auth_secret(cache: &str) -> String {
    format!("{cache}-redis-auth")
}
pub fn redis_replication_secret(cache: &str) -> String {
    format!("{cache}-redis-replication-auth")
}
pub fn redis_monitor_secret(cache: &str) -> String {
    format!("{cache}-redis-monitor-auth")
}
/// A native client's Redis ACL user.
pub fn client_redis_user(client: &str) -> String {
    format!("client-{client}")
}
pub fn client_redis_secret(cache: &str, client: &str) -> String {
    format!("{cache}-client-{client}-redis-auth")
}
/// The Sentinels' administrator password (key `password`), which only the Sentinels mount.
pub fn sentinel_auth_secret(cache: &str) -> String {
    format!("{cache}-sentinel-auth")
}
/// The shim's record encryption key file (key `keys`).
pub fn record_keys_secret(cache: &str) -> String {
    format!("{cache}-record-keys")
}
/// Redis's and Sentinel's TLS certificate (`tls.crt`, `tls.key`, `ca.crt`), when generated.
pub fn redis_tls_secret(cache: &str) -> String {
    format!("{cache}-redis-tls")
}
/// The generated CA of that certificate (`ca.crt`, `ca.key`): read by the operator only.
pub fn redis_tls_issuer_secret(cache: &str) -> String {
    format!("{cache}-redis-tls-issuer")
}
/// The CA that vouches for Redis and Sentinel (`ca.crt` only): what the shim and the native
/// clients trust. Written from whichever certificate is in use.
pub fn redis_ca_secret(cache: &str) -> String {
    format!("{cache}-redis-ca")
}
pub fn shim_auth_secret(cache: &str) -> String {
    format!("{cache}-shim-auth")
}
pub fn client_config(cache: &str, client: &str) -> String {
    format!("{cache}-client-{client}")
}

/// `app.kubernetes.io/{name,instance,component,managed-by}`.
pub fn labels(cache: &str, component: &str) -> BTreeMap<String, String> {
    let mut l = selector(cache, component);
    l.insert("app.kubernetes.io/managed-by".into(), MANAGER.into());
    l
}

/// The subset of labels that selects a component's pods.
pub fn selector(cache: &str, component: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".into(), APP.into()),
        ("app.kubernetes.io/instance".into(), cache.into()),
        ("app.kubernetes.io/component".into(), component.into()),
    ])
}

/// Selects everything this operator emitted for one SessionCache.
pub fn owned_selector(cache: &str) -> String {
    format!("app.kubernetes.io/name={APP},app.kubernetes.io/instance={cache},app.kubernetes.io/managed-by={MANAGER}")
}

/// In-cluster DNS names.
pub fn service_host(service: &str, namespace: &str) -> String {
    format!("{service}.{namespace}.svc")
}
