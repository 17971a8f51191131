//! One ConfigMap per `spec.clients` entry, holding the configuration fragment that proxy needs
//! to use this SessionCache: WebSEAL speaking DSC to the shim, WebSEAL 10.0.1+ using Redis
//! natively, or IBM Application Gateway. Fragments name Secrets and keys, never their values.
//! The status reports `fragment_hash` of each fragment so consumers can roll when it changes;
//! the fragments are deterministic (no timestamps) so the hash moves only with the plan.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use serde_yaml::{Mapping, Value};
use sha2::{Digest, Sha256};

use super::network_policy::CLIENT_LABEL;
use super::secrets::BASIC_AUTH_USER;
use super::webseal_conf::WebSealConf;
use super::{metadata, shim, Emitted};
use crate::crd::ClientKind;
use crate::names;
use crate::validate::{ClientPlan, Plan};

/// Annotation on each client ConfigMap: the SHA-256 of its fragment, as in the status.
pub const FRAGMENT_HASH_ANNOTATION: &str = "redsess.io/fragment-sha256";

/// Data keys of the three kinds of fragment.
pub const WEBSEAL_DSC_KEY: &str = "webseald-dsess.conf";
pub const WEBSEAL_REDIS_KEY: &str = "webseald-redis.conf";
pub const IAG_KEY: &str = "iag-redis.yaml";
/// Beside a WebSEAL fragment: the same entries for IBM's `ibmvia_autoconf`.
pub const AUTOCONF_KEY: &str = "ibmvia-autoconf.yaml";

/// `[dsess-cluster]` tuning written for WebSEAL (PROTOCOL.md's values).
const RESPONSE_BY: u32 = 60;
const HANDLE_POOL_SIZE: u32 = 10;
const DSC_TIMEOUT: u32 = 30;

/// Redis pool and timeouts written for WebSEAL and IAG (IAG's documented defaults).
const MAX_POOLED_CONNECTIONS: u32 = 50;
const IDLE_TIMEOUT: u32 = 10;
const CONNECT_TIMEOUT: u32 = 2;
const IO_TIMEOUT: u32 = 30;
const HEALTH_CHECK_INTERVAL: u32 = 10;
const CLIENT_LIST_CACHE_LIFETIME: u32 = 10;
/// The credential attribute IAG counts concurrent sessions by.
const USER_IDENTITY_ATTRIBUTE: &str = "AZN_CRED_PRINCIPAL_NAME";

/// One ConfigMap per client, in the order of `plan.clients`.
pub fn build(plan: &Plan, owner: &OwnerReference) -> Vec<Emitted> {
    plan.clients
        .iter()
        .map(|client| {
            let (_, content) = fragment(plan, client);
            let mut meta = metadata(
                plan,
                names::client_config(&plan.name, &client.name),
                names::component::CLIENT_CONFIG,
                owner,
            );
            meta.annotations = Some(BTreeMap::from([(
                FRAGMENT_HASH_ANNOTATION.to_string(),
                fragment_hash(&content),
            )]));
            Emitted::ConfigMap(ConfigMap {
                metadata: meta,
                data: Some(data(plan, client)),
                ..ConfigMap::default()
            })
        })
        .collect()
}

/// The data key of a client's fragment.
pub fn fragment_key(kind: ClientKind) -> &'static str {
    match kind {
        ClientKind::WebSealDsc => WEBSEAL_DSC_KEY,
        ClientKind::WebSealRedis => WEBSEAL_REDIS_KEY,
        ClientKind::Iag => IAG_KEY,
    }
}

/// The client's data key and fragment.
pub fn fragment(plan: &Plan, client: &ClientPlan) -> (String, String) {
    let content = match webseal_conf(plan, client) {
        Some(conf) => conf.stanza_text(&webseal_header(plan, client)),
        None => iag(plan, client),
    };
    (fragment_key(client.kind).into(), content)
}

/// Every data key of a client's ConfigMap: the fragment, and for WebSEAL the same entries as
/// `ibmvia_autoconf` YAML.
pub fn data(plan: &Plan, client: &ClientPlan) -> BTreeMap<String, String> {
    let (key, content) = fragment(plan, client);
    let mut data = BTreeMap::from([(key, content)]);
    if let Some(conf) = webseal_conf(plan, client) {
        data.insert(AUTOCONF_KEY.into(), webseal_autoconf(plan, client, &conf));
    }
    data
}

/// Hex SHA-256 of a fragment.
pub fn fragment_hash(content: &str) -> String {
    Sha256::digest(content.as_bytes())
        .iter()
        .fold(String::with_capacity(64), |mut hex, byte| {
            let _ = write!(hex, "{byte:02x}");
            hex
        })
}

/// Key prefix of WebSEAL's native Redis sessions for this cache. Distinct from the shim's
/// `redsess:`, so the Redis ACL of the shared user must allow both.
pub fn webseal_key_prefix(plan: &Plan) -> String {
    format!("webseal-{}:", plan.name)
}

/// Key prefix of IAG's Redis sessions for this cache.
pub fn iag_key_prefix(plan: &Plan) -> String {
    format!("iag-{}:", plan.name)
}

/// Every key prefix clients of this plan write under (the shim's included), for the Redis ACL.
pub fn key_prefixes(plan: &Plan) -> Vec<String> {
    let mut prefixes = vec![shim::KEY_PREFIX.to_string()];
    if plan.clients.iter().any(|c| c.kind == ClientKind::WebSealRedis) {
        prefixes.push(webseal_key_prefix(plan));
    }
    if plan.clients.iter().any(|c| c.kind == ClientKind::Iag) {
        prefixes.push(iag_key_prefix(plan));
    }
    prefixes
}

/// A Redis endpoint as a native client is given it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisEndpoint {
    /// Name of the server entry (`[redis-server:<name>]`, IAG `servers[].name`).
    pub name: String,
    pub host: String,
    pub port: i32,
}

/// The Redis endpoints native clients connect to: the client Service when standalone; with
/// Sentinel, every Redis pod by its stable name under the headless Service
/// (`<redis>-N.<headless>.<ns>.svc`), because neither WebSEAL nor IAG speaks Sentinel: they
/// find the writable primary among the servers of a collection themselves.
pub fn redis_endpoints(plan: &Plan) -> Vec<RedisEndpoint> {
    let redis = names::redis(&plan.name);
    if plan.sentinel.is_none() {
        return vec![RedisEndpoint {
            host: names::service_host(&redis, &plan.namespace),
            name: redis,
            port: names::REDIS_PORT,
        }];
    }
    let headless = names::service_host(&names::redis_headless(&plan.name), &plan.namespace);
    (0..plan.redis.replicas)
        .map(|i| {
            let pod = format!("{redis}-{i}");
            RedisEndpoint {
                host: format!("{pod}.{headless}"),
                name: pod,
                port: names::REDIS_PORT,
            }
        })
        .collect()
}

fn header(out: &mut String, plan: &Plan, client: &ClientPlan, kind: &str, target: &str) {
    let _ = writeln!(
        out,
        "# Generated by redsess-operator from SessionCache {}/{}, client {} ({kind}).",
        plan.namespace, plan.name, client.name
    );
    let _ = writeln!(
        out,
        "# Merge into {target}. The operator rewrites this ConfigMap; edit the SessionCache instead."
    );
    let _ = writeln!(
        out,
        "# Secrets are named here, never copied: set their values where the proxy keeps secrets."
    );
}

/// Native clients talk to Redis directly; the NetworkPolicy admits only labelled pods.
fn native_access(out: &mut String, plan: &Plan, client: &ClientPlan) {
    let _ = writeln!(
        out,
        "# Network: the proxy pods must run in namespace {}, with the label {CLIENT_LABEL}={}",
        plan.namespace, plan.name
    );
    match &client.pod_selector {
        Some(selector) => {
            let _ = writeln!(
                out,
                "# or matching spec.clients[{}].podSelector ({}); the NetworkPolicy admits no other pods to Redis.",
                client.name,
                serde_json::to_string(selector).expect("a label selector serializes")
            );
        }
        None => out.push_str(
            "# (or set spec.clients[].podSelector to their own labels); the NetworkPolicy admits no other pods to Redis.\n",
        ),
    }
}

/// WebSEAL speaking the DSC protocol to the shim Service.
fn webseal_dsc_conf(plan: &Plan, client: &ClientPlan) -> WebSealConf {
    let shim = &plan.shim;
    let mut c = WebSealConf::default();
    c.set("session", "dsess-enabled", "yes");
    c.set_noted(
        "session",
        "dsess-auto-update",
        "no",
        &["WebSEAL in a container would otherwise rewrite the server list from the appliance's DSC configuration."],
    );
    c.set("session", "standard-junction-replica-set", client.replica_set.clone());
    for set in &shim.replica_sets {
        c.set("replica-sets", "replica-set", set.clone());
    }
    c.set("dsess", "dsess-cluster-name", "dsess");
    // No replica count here: scaling the shim must not change the hash and roll the proxies.
    c.set_noted(
        "dsess-cluster",
        "server",
        format!("9,{}", shim::dsc_url(plan)),
        &["Every shim pod is behind this one Service (active-active): one server line."],
    );
    c.set("dsess-cluster", "response-by", RESPONSE_BY.to_string());
    c.set("dsess-cluster", "handle-pool-size", HANDLE_POOL_SIZE.to_string());
    c.set("dsess-cluster", "timeout", DSC_TIMEOUT.to_string());
    c.set("dsess-cluster", "load-balance", "yes");
    if shim.generate_basic_auth {
        c.set_noted(
            "dsess-cluster",
            "basic-auth-user",
            BASIC_AUTH_USER,
            &[&format!(
                "The user and password are in Secret {}, generated by the operator.",
                shim.basic_auth_secret
            )],
        );
    } else {
        c.set_secret("dsess-cluster", "basic-auth-user", &shim.basic_auth_secret, "username");
    }
    c.set_secret(
        "dsess-cluster",
        "basic-auth-passwd",
        &shim.basic_auth_secret,
        "password",
    );
    match &shim.tls_secret {
        Some(tls) => {
            c.note(
                "dsess-cluster",
                format!("The shim serves HTTPS with the certificate in Secret {tls} (key tls.crt)."),
            );
            c.note(
                "dsess-cluster",
                "ssl-keyfile: a key database (with its ssl-keyfile-stash) that trusts the issuer of that certificate",
            );
            c.note(
                "dsess-cluster",
                "ssl-valid-server-dn: the subject DN of that certificate, to accept no other server",
            );
            if let Some(ca) = &shim.client_ca_secret {
                c.note(
                    "dsess-cluster",
                    format!("ssl-keyfile-label: a client certificate in that key database signed by the CA in Secret {ca} (key ca.crt); the shim refuses connections without one"),
                );
            }
        }
        None => {
            c.note(
                "dsess-cluster",
                "Plain HTTP: the Basic-auth password and the sessions cross the network unencrypted;",
            );
            c.note("dsess-cluster", "set spec.shim.security.tlsSecret to serve HTTPS.");
        }
    }
    c
}

/// WebSEAL 10.0.1+ using this Redis natively.
fn webseal_redis_conf(plan: &Plan, client: &ClientPlan) -> WebSealConf {
    let collection = &plan.name;
    let endpoints = redis_endpoints(plan);
    let mut c = WebSealConf::default();
    c.set("session", "dsess-enabled", "yes");
    c.set("session", "dsess-server-type", "redis");
    c.set("session", "standard-junction-replica-set", client.replica_set.clone());
    // WebSEAL refuses to start on a junction replica set that [replica-sets] does not list.
    c.set("replica-sets", "replica-set", client.replica_set.clone());
    c.set("redis", "key-prefix", webseal_key_prefix(plan));
    c.set("redis", "default-collection-name", collection.clone());
    c.set(
        "redis",
        "client-list-cache-lifetime",
        CLIENT_LIST_CACHE_LIFETIME.to_string(),
    );
    let collection_stanza = format!("redis-collection:{collection}");
    let mut first = true;
    for e in &endpoints {
        let notes: &[&str] = if plan.sentinel.is_some() && first {
            &[
                "Redis is replicated and Sentinel promotes a replica when the primary fails. WebSEAL",
                "does not ask Sentinel: it is given every Redis pod by its stable DNS name and finds the",
                "writable primary among them itself (ROLE), so a failover needs no change here. The",
                "client Service is not listed because it may route to a read-only replica.",
            ]
        } else {
            &[]
        };
        first = false;
        c.set_noted(&collection_stanza, "server", e.name.clone(), notes);
    }
    for (key, value) in [
        ("max-pooled-connections", MAX_POOLED_CONNECTIONS),
        ("idle-timeout", IDLE_TIMEOUT),
        ("connect-timeout", CONNECT_TIMEOUT),
        ("io-timeout", IO_TIMEOUT),
        ("health-check-interval", HEALTH_CHECK_INTERVAL),
    ] {
        c.set(&collection_stanza, key, value.to_string());
    }
    let mut first = true;
    for e in &endpoints {
        let stanza = format!("redis-server:{}", e.name);
        c.set(&stanza, "server", e.host.clone());
        c.set(&stanza, "port", e.port.to_string());
        c.set(&stanza, "username", names::client_redis_user(&client.name));
        c.set_secret(
            &stanza,
            "password",
            &names::client_redis_secret(&plan.name, &client.name),
            "password",
        );
        if let Some(tls) = &plan.redis.tls {
            let notes = [
                "Redis speaks TLS only (spec.redis.tls). Create a key database of this name that holds".to_string(),
                format!(
                    "the CA in Secret {} (key ca.crt) as a signer certificate: in Verify Access, an",
                    tls.ca_secret
                ),
                "SSL certificate database (LMI, or ibmvia_autoconf ssl_certificates).".to_string(),
            ];
            let notes: Vec<&str> = notes.iter().map(String::as_str).collect();
            let notes: &[&str] = if first { &notes } else { &[] };
            c.set_noted(&stanza, "ssl-keyfile", webseal_redis_key_database(plan), notes);
        }
        first = false;
    }
    c
}

/// The key database name the WebSEAL fragment asks for when Redis speaks TLS.
fn webseal_redis_key_database(plan: &Plan) -> String {
    format!("redsess-{}-redis.kdb", plan.name)
}

/// The WebSEAL entries of a WebSEAL client.
pub fn webseal_conf(plan: &Plan, client: &ClientPlan) -> Option<WebSealConf> {
    match client.kind {
        ClientKind::WebSealDsc => Some(webseal_dsc_conf(plan, client)),
        ClientKind::WebSealRedis => Some(webseal_redis_conf(plan, client)),
        ClientKind::Iag => None,
    }
}

fn webseal_header(plan: &Plan, client: &ClientPlan) -> String {
    let mut out = String::new();
    match client.kind {
        ClientKind::WebSealDsc => header(&mut out, plan, client, "WebSEALDSC", "webseald-<instance>.conf"),
        _ => {
            header(
                &mut out,
                plan,
                client,
                "WebSEALRedis",
                "webseald-<instance>.conf (WebSEAL 10.0.1 or later)",
            );
            native_access(&mut out, plan, client);
        }
    }
    out
}

/// The same entries as IBM's `ibmvia_autoconf` YAML (`webseal.reverse_proxy[].stanza_configuration`).
fn webseal_autoconf(plan: &Plan, client: &ClientPlan, conf: &WebSealConf) -> String {
    let mut head = String::new();
    let _ = writeln!(
        head,
        "# Generated by redsess-operator from SessionCache {}/{}, client {}: the entries of {}",
        plan.namespace,
        plan.name,
        client.name,
        fragment_key(client.kind)
    );
    head.push_str(
        "# for IBM's ibmvia_autoconf, which sets them through the management REST API and publishes
",
    );
    head.push_str(
        "# the configuration snapshot that Verify Access containers read. Merge this reverse_proxy
",
    );
    head.push_str(
        "# entry into yours (name: your WebSEAL instance; IBM's containers call it \"default\").
",
    );
    head.push_str(
        "# !secret values are read by ibmvia_autoconf from the Kubernetes Secrets they name.
",
    );
    conf.autoconf_yaml(&head, "default", &plan.namespace)
}

fn map(entries: Vec<(&str, Value)>) -> Value {
    let mut m = Mapping::new();
    for (k, v) in entries {
        m.insert(Value::String(k.into()), v);
    }
    Value::Mapping(m)
}

fn string(s: impl Into<String>) -> Value {
    Value::String(s.into())
}

fn number(n: impl Into<i64>) -> Value {
    Value::Number(n.into().into())
}

/// IBM Application Gateway: `services.redis` (current releases) and `server.session.redis`.
fn iag(plan: &Plan, client: &ClientPlan) -> String {
    let collection = plan.name.clone();
    let secret = names::client_redis_secret(&plan.name, &client.name);
    let password = format!("secret:{secret}/password");
    let servers = redis_endpoints(plan)
        .into_iter()
        .map(|e| {
            let mut server = vec![
                ("name", string(e.name)),
                ("host", string(e.host.clone())),
                ("port", number(e.port)),
                ("username", string(names::client_redis_user(&client.name))),
                ("password", string(password.clone())),
            ];
            if let Some(tls) = &plan.redis.tls {
                server.push((
                    "ssl",
                    map(vec![
                        (
                            "trust_certificates",
                            Value::Sequence(vec![string(format!("secret:{}/ca.crt", tls.ca_secret))]),
                        ),
                        ("sni", string(e.host)),
                    ]),
                ));
            }
            map(server)
        })
        .collect();
    let limit = plan.shim.max_sessions_per_user;
    let document = map(vec![
        (
            "services",
            map(vec![(
                "redis",
                map(vec![
                    ("key_prefix", string(iag_key_prefix(plan))),
                    ("default_collection", string(collection.clone())),
                    (
                        "collections",
                        Value::Sequence(vec![map(vec![
                            ("name", string(collection)),
                            ("max_pooled_connections", number(MAX_POOLED_CONNECTIONS)),
                            ("idle_timeout", number(IDLE_TIMEOUT)),
                            ("connect_timeout", number(CONNECT_TIMEOUT)),
                            ("io_timeout", number(IO_TIMEOUT)),
                            ("health_check_interval", number(HEALTH_CHECK_INTERVAL)),
                            ("servers", Value::Sequence(servers)),
                        ])]),
                    ),
                ]),
            )]),
        ),
        (
            "server",
            map(vec![(
                "session",
                map(vec![(
                    "redis",
                    map(vec![
                        ("enabled", Value::Bool(true)),
                        ("client_list_cache_lifetime", number(CLIENT_LIST_CACHE_LIFETIME)),
                        (
                            "concurrent_sessions",
                            map(vec![
                                ("enabled", Value::Bool(limit > 0)),
                                ("prompt_for_displacement", Value::Bool(!plan.shim.displace)),
                                ("max_user_sessions", number(limit)),
                                ("user_identity_attribute_name", string(USER_IDENTITY_ATTRIBUTE)),
                            ]),
                        ),
                    ]),
                )]),
            )]),
        ),
    ]);

    let mut out = String::new();
    header(
        &mut out,
        plan,
        client,
        "IAG",
        "the IBM Application Gateway configuration",
    );
    native_access(&mut out, plan, client);
    let _ = writeln!(
        out,
        "# password: a reference to Secret {} (key password); IAG resolves secret:<name>/<key> from its own",
        secret
    );
    out.push_str("# namespace, so it must run in this namespace or hold a copy of that Secret.\n");
    if let Some(tls) = &plan.redis.tls {
        let _ = writeln!(
            out,
            "# Redis speaks TLS only: ssl.trust_certificates is the CA in Secret {} (key ca.crt), the",
            tls.ca_secret
        );
        out.push_str("# same way; sni is the server's name in its certificate.\n");
    }
    if plan.sentinel.is_some() {
        out.push_str("# Redis is replicated: every Redis pod is listed by its stable DNS name; IAG finds the\n");
        out.push_str("# writable primary among them after a Sentinel failover.\n");
    }
    out.push_str("# concurrent_sessions follows spec.shim.session: maxSessionsPerUser (0 = off) and displace\n");
    out.push_str("# (displace ends older sessions without asking; otherwise the user is asked).\n");
    out.push_str(&serde_yaml::to_string(&document).expect("YAML values serialize"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::redis::tests::{owner, plan};

    fn client<'a>(plan: &'a Plan, name: &str) -> &'a ClientPlan {
        plan.clients.iter().find(|c| c.name == name).unwrap()
    }

    /// A WebSEAL stanza file: `[stanza]` headers, `key = value` entries, `#` comments.
    #[derive(Debug)]
    struct Stanzas {
        entries: Vec<(String, String, String)>,
        comments: Vec<String>,
    }

    impl Stanzas {
        fn parse(text: &str) -> Stanzas {
            let mut stanza: Option<String> = None;
            let mut entries = Vec::new();
            let mut comments = Vec::new();
            for (n, line) in text.lines().enumerate() {
                let line = line.trim();
                if line.is_empty() {
                    continue;
                }
                if let Some(comment) = line.strip_prefix('#') {
                    comments.push(comment.trim().to_string());
                } else if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
                    assert!(!name.is_empty(), "line {}: empty stanza name", n + 1);
                    stanza = Some(name.to_string());
                } else {
                    let (key, value) = line
                        .split_once('=')
                        .unwrap_or_else(|| panic!("line {}: not `key = value`: {line}", n + 1));
                    let stanza = stanza
                        .clone()
                        .unwrap_or_else(|| panic!("line {}: entry outside a stanza", n + 1));
                    let (key, value) = (key.trim(), value.trim());
                    assert!(!key.is_empty() && !key.contains(' '), "line {}: bad key {key:?}", n + 1);
                    entries.push((stanza, key.to_string(), value.to_string()));
                }
            }
            Stanzas { entries, comments }
        }

        fn stanzas(&self) -> Vec<&str> {
            let mut names: Vec<&str> = Vec::new();
            for (s, _, _) in &self.entries {
                if !names.contains(&s.as_str()) {
                    names.push(s);
                }
            }
            names
        }

        fn all(&self, stanza: &str, key: &str) -> Vec<&str> {
            self.entries
                .iter()
                .filter(|(s, k, _)| s == stanza && k == key)
                .map(|(_, _, v)| v.as_str())
                .collect()
        }

        fn one(&self, stanza: &str, key: &str) -> &str {
            match self.all(stanza, key).as_slice() {
                [v] => v,
                other => panic!("[{stanza}] {key}: expected one value, found {other:?}"),
            }
        }

        fn has_key(&self, key: &str) -> bool {
            self.entries.iter().any(|(_, k, _)| k == key)
        }
    }

    fn webseal_dsc(spec: &str) -> (Plan, Stanzas) {
        let p = plan(spec);
        let (key, content) = fragment(&p, client(&p, "web"));
        assert_eq!(key, "webseald-dsess.conf");
        (p, Stanzas::parse(&content))
    }

    #[test]
    fn webseal_dsc_points_at_the_shim_service() {
        let (_, s) = webseal_dsc(
            "  shim: {replicaSets: [default, admin]}\n  clients: [{name: web, kind: WebSEALDSC, replicaSet: admin}]",
        );
        assert_eq!(s.stanzas(), ["session", "replica-sets", "dsess", "dsess-cluster"]);
        assert_eq!(s.one("session", "dsess-enabled"), "yes");
        assert_eq!(s.one("session", "standard-junction-replica-set"), "admin");
        assert_eq!(s.all("replica-sets", "replica-set"), ["default", "admin"]);
        assert_eq!(s.one("dsess", "dsess-cluster-name"), "dsess");
        assert_eq!(
            s.one("dsess-cluster", "server"),
            "9,http://cache-shim.isam.svc:8443/DSess/services/DSess"
        );
        assert_eq!(s.one("dsess-cluster", "response-by"), "60");
        assert_eq!(s.one("dsess-cluster", "handle-pool-size"), "10");
        assert_eq!(s.one("dsess-cluster", "timeout"), "30");
        assert_eq!(s.one("dsess-cluster", "load-balance"), "yes");
        assert_eq!(s.one("dsess-cluster", "basic-auth-user"), "webseal");
        // The password is only named, never written.
        assert!(!s.has_key("basic-auth-passwd"));
        assert!(s
            .comments
            .iter()
            .any(|c| c.starts_with("basic-auth-passwd: from Secret cache-shim-auth, key password")));
        assert!(s.comments.iter().any(|c| c.starts_with("Plain HTTP")));
        assert!(!s.has_key("ssl-keyfile"));
    }

    #[test]
    fn webseal_dsc_with_the_users_own_secret_and_tls() {
        let (p, s) = webseal_dsc(
            "  shim: {security: {basicAuthSecret: dsc-auth, tlsSecret: shim-tls, clientCaSecret: ca}}\n  clients: [{name: web, kind: WebSEALDSC}]",
        );
        assert_eq!(s.one("session", "standard-junction-replica-set"), "default");
        assert_eq!(s.one("dsess-cluster", "server"), format!("9,{}", shim::dsc_url(&p)));
        assert!(s.one("dsess-cluster", "server").starts_with("9,https://"));
        // The user is in the user's Secret: named in a comment, not guessed.
        assert!(!s.has_key("basic-auth-user"));
        assert!(s
            .comments
            .iter()
            .any(|c| c.starts_with("basic-auth-user: from Secret dsc-auth, key username")));
        assert!(s
            .comments
            .iter()
            .any(|c| c.starts_with("basic-auth-passwd: from Secret dsc-auth, key password")));
        assert!(s.comments.iter().any(|c| c.starts_with("ssl-keyfile:")));
        assert!(s.comments.iter().any(|c| c.starts_with("ssl-valid-server-dn:")));
        assert!(s.comments.iter().any(|c| c.contains("Secret ca (key ca.crt)")));
        assert!(!s.comments.iter().any(|c| c.starts_with("Plain HTTP")));
    }

    /// The ibmvia_autoconf YAML carries exactly the entries of the stanza fragment.
    #[test]
    fn autoconf_yaml_has_the_fragments_entries_and_names_secrets() {
        for (spec, secret) in [
            (
                "  clients: [{name: web, kind: WebSEALDSC}]",
                "isam/cache-shim-auth:password",
            ),
            (
                "  clients: [{name: web, kind: WebSEALRedis}]",
                "isam/cache-client-web-redis-auth:password",
            ),
        ] {
            let p = plan(spec);
            let c = client(&p, "web");
            let data = data(&p, c);
            let yaml = &data[AUTOCONF_KEY];
            assert!(yaml.contains(&format!("value: !secret {secret}")), "{yaml}");
            let parsed: Value = serde_yaml::from_str(yaml).unwrap();
            let proxy = &parsed["webseal"]["reverse_proxy"][0];
            assert_eq!(proxy["name"], "default");
            let mut from_yaml: Vec<(String, String, String)> = Vec::new();
            for e in proxy["stanza_configuration"].as_sequence().unwrap() {
                let op = e["operation"].as_str().unwrap();
                assert!(["add", "update", "delete"].contains(&op), "{op}");
                // Secrets are tagged (`!secret …`): the stanza text names them in comments.
                if let Some(Value::String(value)) = e.get("value") {
                    from_yaml.push((
                        e["stanza"].as_str().unwrap().into(),
                        e["entry_id"].as_str().unwrap().into(),
                        value.into(),
                    ));
                }
            }
            let (_, text) = fragment(&p, c);
            let from_text: Vec<(String, String, String)> = Stanzas::parse(&text).entries;
            assert_eq!(from_yaml, from_text, "{spec}");
        }
    }

    #[test]
    fn webseal_dsc_in_sidecar_mode_points_at_its_own_pod() {
        let p = plan("  shim: {mode: Sidecar, sidecar: {port: 18500}}\n  clients: [{name: web, kind: WebSEALDSC}]");
        let (_, content) = fragment(&p, client(&p, "web"));
        let s = Stanzas::parse(&content);
        assert_eq!(
            s.one("dsess-cluster", "server"),
            "9,http://127.0.0.1:18500/DSess/services/DSess"
        );
        assert_eq!(s.one("session", "dsess-auto-update"), "no");
    }

    #[test]
    fn webseal_dsc_keeps_its_server_list() {
        let p = plan("  clients: [{name: web, kind: WebSEALDSC}]");
        let (_, content) = fragment(&p, client(&p, "web"));
        let s = Stanzas::parse(&content);
        // Without it WebSEAL in a container rewrites [dsess-cluster] from the appliance's DSC.
        assert_eq!(s.one("session", "dsess-auto-update"), "no");
    }

    #[test]
    fn webseal_redis_standalone_uses_the_client_service() {
        let p = plan("  clients: [{name: web, kind: WebSEALRedis}]");
        let (key, content) = fragment(&p, client(&p, "web"));
        assert_eq!(key, "webseald-redis.conf");
        let s = Stanzas::parse(&content);
        assert_eq!(
            s.stanzas(),
            [
                "session",
                "replica-sets",
                "redis",
                "redis-collection:cache",
                "redis-server:cache-redis"
            ]
        );
        assert_eq!(s.one("session", "dsess-enabled"), "yes");
        assert_eq!(s.one("session", "dsess-server-type"), "redis");
        assert_eq!(s.one("session", "standard-junction-replica-set"), "default");
        // WebSEAL refuses a junction replica set that [replica-sets] does not list.
        assert_eq!(s.all("replica-sets", "replica-set"), ["default"]);
        assert_eq!(s.one("redis", "key-prefix"), "webseal-cache:");
        assert_eq!(s.one("redis", "default-collection-name"), "cache");
        assert_eq!(s.one("redis", "client-list-cache-lifetime"), "10");
        let c = "redis-collection:cache";
        assert_eq!(s.all(c, "server"), ["cache-redis"]);
        for key in [
            "max-pooled-connections",
            "idle-timeout",
            "connect-timeout",
            "io-timeout",
            "health-check-interval",
        ] {
            s.one(c, key).parse::<u32>().unwrap();
        }
        let srv = "redis-server:cache-redis";
        assert_eq!(s.one(srv, "server"), "cache-redis.isam.svc");
        assert_eq!(s.one(srv, "port"), "6379");
        assert_eq!(s.one(srv, "username"), "client-web");
        assert!(!s.has_key("password"));
        assert!(s
            .comments
            .iter()
            .any(|c| c.starts_with("password: from Secret cache-client-web-redis-auth, key password")));
    }

    #[test]
    fn webseal_redis_with_sentinel_lists_every_pod() {
        let p = plan("  redis: {replicas: 3, passwordSecret: rpw}\n  clients: [{name: web, kind: WebSEALRedis}]");
        let (_, content) = fragment(&p, client(&p, "web"));
        let s = Stanzas::parse(&content);
        let servers = s.all("redis-collection:cache", "server");
        assert_eq!(servers, ["cache-redis-0", "cache-redis-1", "cache-redis-2"]);
        for (i, name) in servers.iter().enumerate() {
            let stanza = format!("redis-server:{name}");
            assert_eq!(
                s.one(&stanza, "server"),
                format!("cache-redis-{i}.cache-redis-headless.isam.svc")
            );
            assert_eq!(s.one(&stanza, "port"), "6379");
            assert_eq!(s.one(&stanza, "username"), "client-web");
        }
        assert!(s.comments.iter().any(|c| c.contains("writable primary")));
        assert!(s.comments.iter().any(|c| c.contains("redsess.io/client=cache")));
        // The client's own user and Secret, not the shim's (spec.redis.passwordSecret).
        assert!(s
            .comments
            .iter()
            .any(|c| c.contains("Secret cache-client-web-redis-auth, key password")));
        assert!(!content.contains("rpw"));
        assert!(!s.has_key("password"));
        // Not the client Service.
        assert!(!content.contains("server = cache-redis.isam.svc"));
    }

    fn iag(spec: &str) -> Value {
        let p = plan(spec);
        let (key, content) = fragment(&p, client(&p, "gw"));
        assert_eq!(key, "iag-redis.yaml");
        serde_yaml::from_str(&content).unwrap()
    }

    fn at<'a>(v: &'a Value, path: &str) -> &'a Value {
        path.split('.').fold(v, |v, step| {
            let found = match step.parse::<usize>() {
                Ok(i) => v.get(i),
                Err(_) => v.get(step),
            };
            found.unwrap_or_else(|| panic!("{path}: no {step}"))
        })
    }

    #[test]
    fn iag_uses_the_documented_key_paths() {
        let doc = iag("  shim: {session: {maxSessionsPerUser: 2, displace: true}}\n  clients: [{name: gw, kind: IAG}]");
        let top: Vec<_> = doc.as_mapping().unwrap().keys().map(|k| k.as_str().unwrap()).collect();
        assert_eq!(top, ["services", "server"]);
        let redis_keys: Vec<_> = at(&doc, "services.redis")
            .as_mapping()
            .unwrap()
            .keys()
            .map(|k| k.as_str().unwrap())
            .collect();
        assert_eq!(redis_keys, ["key_prefix", "default_collection", "collections"]);
        assert_eq!(at(&doc, "services.redis.key_prefix").as_str(), Some("iag-cache:"));
        assert_eq!(at(&doc, "services.redis.default_collection").as_str(), Some("cache"));
        let c = "services.redis.collections.0";
        assert_eq!(at(&doc, &format!("{c}.name")).as_str(), Some("cache"));
        for key in [
            "max_pooled_connections",
            "idle_timeout",
            "connect_timeout",
            "io_timeout",
            "health_check_interval",
        ] {
            assert!(at(&doc, &format!("{c}.{key}")).is_u64(), "{key}");
        }
        let server = at(&doc, &format!("{c}.servers.0"));
        assert_eq!(at(server, "name").as_str(), Some("cache-redis"));
        assert_eq!(at(server, "host").as_str(), Some("cache-redis.isam.svc"));
        assert_eq!(at(server, "port").as_u64(), Some(6379));
        assert_eq!(at(server, "username").as_str(), Some("client-gw"));
        assert_eq!(
            at(server, "password").as_str(),
            Some("secret:cache-client-gw-redis-auth/password")
        );

        let r = "server.session.redis";
        assert_eq!(at(&doc, &format!("{r}.enabled")).as_bool(), Some(true));
        assert!(at(&doc, &format!("{r}.client_list_cache_lifetime")).is_u64());
        let cs = format!("{r}.concurrent_sessions");
        assert_eq!(at(&doc, &format!("{cs}.enabled")).as_bool(), Some(true));
        assert_eq!(
            at(&doc, &format!("{cs}.prompt_for_displacement")).as_bool(),
            Some(false)
        );
        assert_eq!(at(&doc, &format!("{cs}.max_user_sessions")).as_i64(), Some(2));
        assert_eq!(
            at(&doc, &format!("{cs}.user_identity_attribute_name")).as_str(),
            Some("AZN_CRED_PRINCIPAL_NAME")
        );
    }

    #[test]
    fn iag_without_a_limit_and_with_sentinel() {
        let doc = iag("  redis: {replicas: 2}\n  clients: [{name: gw, kind: IAG}]");
        let cs = "server.session.redis.concurrent_sessions";
        assert_eq!(at(&doc, &format!("{cs}.enabled")).as_bool(), Some(false));
        assert_eq!(at(&doc, &format!("{cs}.max_user_sessions")).as_i64(), Some(0));
        let servers = at(&doc, "services.redis.collections.0.servers").as_sequence().unwrap();
        let hosts: Vec<_> = servers.iter().map(|s| at(s, "host").as_str().unwrap()).collect();
        assert_eq!(
            hosts,
            [
                "cache-redis-0.cache-redis-headless.isam.svc",
                "cache-redis-1.cache-redis-headless.isam.svc"
            ]
        );
        for s in servers {
            assert!(at(s, "password").as_str().unwrap().starts_with("secret:"));
        }
    }

    #[test]
    fn native_clients_with_redis_tls_trust_the_caches_ca() {
        let doc = iag("  redis: {replicas: 2, tls: {enabled: true}}\n  clients: [{name: gw, kind: IAG}]");
        for (i, s) in at(&doc, "services.redis.collections.0.servers")
            .as_sequence()
            .unwrap()
            .iter()
            .enumerate()
        {
            assert_eq!(
                at(s, "ssl.trust_certificates").as_sequence().unwrap(),
                &[Value::String("secret:cache-redis-ca/ca.crt".into())]
            );
            let host = format!("cache-redis-{i}.cache-redis-headless.isam.svc");
            assert_eq!(at(s, "ssl.sni").as_str(), Some(host.as_str()));
            assert_eq!(at(s, "host").as_str(), Some(host.as_str()));
        }
        assert!(at(
            &iag("  clients: [{name: gw, kind: IAG}]"),
            "services.redis.collections.0.servers.0"
        )
        .get("ssl")
        .is_none());

        let p = plan("  redis: {replicas: 3, tls: {enabled: true}}\n  clients: [{name: web, kind: WebSEALRedis}]");
        let (_, content) = fragment(&p, client(&p, "web"));
        let s = Stanzas::parse(&content);
        for i in 0..3 {
            assert_eq!(
                s.one(&format!("redis-server:cache-redis-{i}"), "ssl-keyfile"),
                "redsess-cache-redis.kdb"
            );
        }
        assert!(
            s.comments
                .iter()
                .any(|c| c.contains("Secret cache-redis-ca (key ca.crt)")),
            "{content}"
        );
    }

    #[test]
    fn one_config_map_per_client_with_its_hash() {
        let p = plan(
            "  clients: [{name: web, kind: WebSEALDSC}, {name: native, kind: WebSEALRedis}, {name: gw, kind: IAG}]",
        );
        let objects = build(&p, &owner());
        assert_eq!(objects.len(), 3);
        let expected = [
            ("cache-client-web", "webseald-dsess.conf"),
            ("cache-client-native", "webseald-redis.conf"),
            ("cache-client-gw", "iag-redis.yaml"),
        ];
        for ((object, (name, key)), client) in objects.iter().zip(expected).zip(&p.clients) {
            let Emitted::ConfigMap(cm) = object else {
                panic!("not a ConfigMap: {}", object.kind())
            };
            assert_eq!(cm.metadata.name.as_deref(), Some(name));
            assert_eq!(cm.metadata.namespace.as_deref(), Some("isam"));
            assert_eq!(
                cm.metadata.labels,
                Some(names::labels("cache", names::component::CLIENT_CONFIG))
            );
            let data = cm.data.as_ref().unwrap();
            if client.kind == ClientKind::Iag {
                assert_eq!(data.keys().collect::<Vec<_>>(), [key]);
            } else {
                assert_eq!(data.keys().collect::<Vec<_>>(), [AUTOCONF_KEY, key]);
            }
            let (_, content) = fragment(&p, client);
            assert_eq!(data[key], content);
            assert_eq!(
                cm.metadata.annotations.as_ref().unwrap()[FRAGMENT_HASH_ANNOTATION],
                fragment_hash(&content)
            );
        }
        assert!(build(&plan("  {}"), &owner()).is_empty());
    }

    #[test]
    fn the_hash_follows_the_plan() {
        assert_eq!(
            fragment_hash(""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        let hash = |spec: &str, name: &str| {
            let p = plan(spec);
            fragment_hash(&fragment(&p, client(&p, name)).1)
        };
        let dsc = "  clients: [{name: web, kind: WebSEALDSC}]";
        assert_eq!(hash(dsc, "web"), hash(dsc, "web"), "deterministic");
        // What the proxy does not see must not roll it.
        assert_eq!(
            hash(dsc, "web"),
            hash(&format!("  shim: {{replicas: 5, image: other:1}}\n{dsc}"), "web")
        );
        assert_ne!(
            hash(dsc, "web"),
            hash(&format!("  shim: {{security: {{tlsSecret: t}}}}\n{dsc}"), "web")
        );
        let native = "  clients: [{name: web, kind: WebSEALRedis}]";
        assert_ne!(
            hash(native, "web"),
            hash(&format!("  redis: {{replicas: 3}}\n{native}"), "web")
        );
        let gw = "  clients: [{name: gw, kind: IAG}]";
        assert_ne!(
            hash(gw, "gw"),
            hash(&format!("  shim: {{session: {{maxSessionsPerUser: 1}}}}\n{gw}"), "gw")
        );
    }

    #[test]
    fn key_prefixes_cover_every_writer() {
        assert_eq!(key_prefixes(&plan("  {}")), ["redsess:"]);
        assert_eq!(
            key_prefixes(&plan(
                "  clients: [{name: a, kind: WebSEALRedis}, {name: b, kind: IAG}, {name: c, kind: WebSEALDSC}]"
            )),
            ["redsess:", "webseal-cache:", "iag-cache:"]
        );
    }
}
