//! Redis: the ConfigMap with redis.conf and the start script, the StatefulSet, a headless
//! Service (stable pod names for replication and Sentinel), the client Service, and a
//! PodDisruptionBudget when replicated.
//!
//! How the passwords reach Redis: each ACL user's Secret (`build::acl`) is mounted as a file
//! of one projected volume. `start-redis.sh` (in the ConfigMap, so the script itself holds no
//! secret) reads them when the container starts and writes the complete redis.conf, ACL users
//! and `masterauth` included, into a memory-backed emptyDir only the container sees. No
//! password is in the ConfigMap, a command line, or an environment value of the pod spec; the
//! probes read the monitor user's file. Rotation is not orchestrated: Redis keeps the passwords
//! it started with until the pod restarts (after the monitor's changes, the failing probes
//! restart it).
//!
//! How a replica finds the primary: pod 0 is the first primary. A starting pod asks Sentinel
//! (when replicated) who the primary is now, since after a failover it is no longer pod 0;
//! when no Sentinel answers (they start with Redis), it asks the other Redis pods which one is
//! a primary; failing that it follows pod 0. Every pod announces its stable DNS name
//! (`<pod>.<headless>.<ns>.svc`), never its IP, so Sentinel's view survives pods moving.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{StatefulSet, StatefulSetSpec};
use k8s_openapi::api::core::v1::{
    Affinity, ConfigMap, ConfigMapVolumeSource, Container, ContainerPort, EmptyDirVolumeSource, EnvVar, EnvVarSource,
    ExecAction, ObjectFieldSelector, PersistentVolumeClaim, PersistentVolumeClaimSpec, PersistentVolumeClaimStatus,
    PodAffinityTerm, PodAntiAffinity, PodSpec, PodTemplateSpec, Probe, SecretVolumeSource, Service, ServicePort,
    ServiceSpec, Volume, VolumeMount, VolumeResourceRequirements, WeightedPodAffinityTerm,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use sha2::{Digest, Sha256};

use crate::build::{metadata, pod_security, Emitted, Observed};
use crate::crd::PersistenceMode;
use crate::names::{self, component};
use crate::redis_tls;
use crate::validate::Plan;

/// Pod-template annotation with the SHA-256 of the pod's ConfigMap: a configuration change
/// changes the template, so the StatefulSet rolls its pods.
pub const CONFIG_CHECKSUM_ANNOTATION: &str = "redsess.io/config-checksum";

/// Where the Secret with the ACL password is mounted (file `password`), in Redis and Sentinel pods.
pub use crate::build::acl::AUTH_DIR;
const CONFIG_DIR: &str = "/etc/redis";
/// Memory-backed and private to the container: holds the generated redis.conf (with the
/// password) and whatever Redis rewrites into it (`CONFIG REWRITE` after a failover).
const RUN_DIR: &str = "/run/redis";
const DATA_DIR: &str = "/data";

/// A Redis pod's stable DNS name, through the headless Service.
pub fn redis_pod_host(plan: &Plan, ordinal: i32) -> String {
    format!(
        "{}-{ordinal}.{}",
        names::redis(&plan.name),
        names::service_host(&names::redis_headless(&plan.name), &plan.namespace)
    )
}

pub fn build(plan: &Plan, owner: &OwnerReference, observed: &Observed) -> Vec<Emitted> {
    let config = config_map(plan, owner);
    let checksum = config_checksum(config.data.as_ref().expect("the ConfigMap has data"));
    let mut out = vec![
        Emitted::ConfigMap(config),
        Emitted::StatefulSet(stateful_set(plan, owner, checksum, observed)),
        Emitted::Service(headless_service(plan, owner)),
        Emitted::Service(client_service(plan, owner)),
    ];
    // One pod cannot be spared at all; a PDB for it would only block node drains forever.
    if plan.redis.replicas >= 2 {
        out.push(Emitted::PodDisruptionBudget(pod_disruption_budget(
            plan,
            owner,
            names::redis(&plan.name),
            component::REDIS,
        )));
    }
    out
}

// ---------------------------------------------------------------------------------------
// ConfigMap: redis.conf (no secrets), start-redis.sh, ping.sh

fn config_map(plan: &Plan, owner: &OwnerReference) -> ConfigMap {
    ConfigMap {
        metadata: metadata(plan, names::redis_config(&plan.name), component::REDIS, owner),
        data: Some(BTreeMap::from([
            ("redis.conf".to_string(), redis_conf(plan)),
            ("start-redis.sh".to_string(), start_script(plan)),
            ("ping.sh".to_string(), ping_script(plan)),
        ])),
        ..ConfigMap::default()
    }
}

/// The static part of redis.conf; start-redis.sh appends users and replication.
fn redis_conf(plan: &Plan) -> String {
    let mut conf = format!(
        "# redis.conf of SessionCache {ns}/{name}, written by redsess-operator: change the\n\
         # SessionCache, not this ConfigMap. start-redis.sh appends the ACL users and the\n\
         # replication settings at start, reading the passwords from the mounted Secrets.\n\
         {listen}\
         # Every IPv4 address, and every IPv6 address where the pod has IPv6 (`-` = optional).\n\
         bind * -::*\n\
         # Off because the ACL is on: the default user is disabled and every client\n\
         # authenticates as its own user (`{user}` for the shim).\n\
         protected-mode no\n\
         dir {DATA_DIR}\n",
        ns = plan.namespace,
        name = plan.name,
        listen = listen_conf(plan, names::REDIS_PORT),
        user = names::REDIS_USER,
    );
    conf.push_str(match plan.redis.persistence {
        // RDB snapshots would only write the same data a second time.
        PersistenceMode::Aof => "appendonly yes\nappendfsync everysec\nsave \"\"\n",
        PersistenceMode::Rdb => "appendonly no\nsave 60 1000\n",
        // A replica still receives its full sync as an RDB file; delete it once loaded, so
        // that nothing stays on disk (and a restart cannot load a stale copy).
        PersistenceMode::None => "appendonly no\nsave \"\"\nrdb-del-sync-files yes\n",
    });
    let memory = &plan.redis.memory;
    if let Some(bytes) = memory.max_bytes {
        if memory.derived {
            conf.push_str("# From the container's memory limit, leaving room for replication buffers and the\n");
            conf.push_str("# copy-on-write pages of the fork that rewrites the AOF or writes the RDB file.\n");
        }
        conf.push_str(&format!("maxmemory {bytes}\n"));
    }
    conf.push_str(&format!(
        "# {}\nmaxmemory-policy {}\n",
        if memory.policy == "noeviction" {
            "Full: refuse writes (new logins fail with a fault), never drop a live session or key material."
        } else {
            "Full: evict only keys with a TTL (sessions), never the key material or membership."
        },
        memory.policy
    ));
    let durability = &plan.redis.durability;
    if durability.replicas > 0 {
        conf.push_str(&format!(
            "# spec.redis.durability: the shim acknowledges a session write once {n} replica(s) have it;\n\
             # the primary refuses writes while fewer are connected and caught up (within 10 s).\n\
             min-replicas-to-write {n}\n\
             min-replicas-max-lag 10\n",
            n = durability.replicas
        ));
    }
    if !plan.redis.extra_config.is_empty() {
        conf.push_str("# spec.redis.config\n");
        for (key, value) in &plan.redis.extra_config {
            conf.push_str(&format!("{key} {value}\n"));
        }
    }
    conf
}

/// The listening lines of redis.conf and sentinel.conf: the plain port, or with TLS the same
/// port speaking TLS only, replication (and Sentinel's own connections) over TLS too.
/// Clients authenticate with their ACL passwords, not certificates.
pub(crate) fn listen_conf(plan: &Plan, port: i32) -> String {
    match plan.redis.tls {
        None => format!("port {port}\n"),
        Some(_) => format!(
            "# spec.redis.tls: TLS only, on the usual port.\n\
             port 0\n\
             tls-port {port}\n\
             tls-cert-file {dir}/tls.crt\n\
             tls-key-file {dir}/tls.key\n\
             tls-ca-cert-file {dir}/ca.crt\n\
             tls-auth-clients no\n\
             tls-replication yes\n",
            dir = redis_tls::SERVER_DIR,
        ),
    }
}

/// redis-cli's TLS options for the scripts and probes (nothing without TLS).
pub(crate) fn redis_cli_tls(plan: &Plan) -> String {
    match plan.redis.tls {
        None => String::new(),
        Some(_) => format!("--tls --cacert {}/ca.crt", redis_tls::SERVER_DIR),
    }
}

/// `read_secret FILE`: a mounted Secret's value without its final line end, as the shim reads
/// its password files, so that a Secret written with a final newline (or CRLF) gives both the
/// same password. An empty value, or one of more than one line, stops the start.
pub(crate) const READ_SECRET: &str = r#"read_secret() {
  value=$(cat "$1") || exit 1
  nl='
'
  cr=$(printf '\r')
  while :; do
    case "$value" in
      *"$cr" | *"$nl") value=${value%?} ;;
      *) break ;;
    esac
  done
  case "$value" in
    "" | *"
"*)
      printf '%s: %s must hold one non-empty line\n' "$0" "$1" >&2
      exit 1
      ;;
  esac
  printf '%s' "$value"
}
"#;

/// Shell shared by start-redis.sh and start-sentinel.sh (POSIX sh: busybox in the Alpine
/// image, dash in the Debian one). Expects `AUTH_FILE`, `MONITOR_USER`, `SENTINEL_HOST`,
/// `PRIMARY_NAME`, `REDIS_PODS`, `REDIS_DOMAIN`, `REDIS_REPLICAS`, `CLI_TLS` and (optionally)
/// `self`.
pub(crate) fn shell_common() -> String {
    [
        "\n",
        READ_SECRET,
        "\n# The scripts act as the monitor user; passwords come from the mounted Secrets only\n",
        "# (never from the pod spec).\n",
        "password=$(read_secret \"$AUTH_FILE\")\n",
        SHELL_FUNCTIONS,
    ]
    .concat()
}

const SHELL_FUNCTIONS: &str = r#"
# A string for redis.conf / sentinel.conf: in double quotes, backslashes and quotes escaped.
conf_string() {
  printf '"%s"' "$(printf '%s' "$1" | sed -e 's/\\/\\\\/g' -e 's/"/\\"/g')"
}

# redis-cli as the monitor user; the password is in redis-cli's environment only, not in its
# arguments (which every process can read) and not in this shell's exported environment.
redis_cli() {
  # shellcheck disable=SC2086 # CLI_TLS is empty or several options
  REDISCLI_AUTH="$password" timeout 3 redis-cli $CLI_TLS --user "$MONITOR_USER" "$@"
}

# The primary's host as the running Sentinels name it, or nothing (no Sentinel answers). The
# Sentinels know the monitor user too, allowed to ask and nothing else.
sentinel_primary() {
  [ -n "$SENTINEL_HOST" ] || return 0
  reply=$(redis_cli -h "$SENTINEL_HOST" -p 26379 --raw \
    sentinel get-master-addr-by-name "$PRIMARY_NAME" 2>/dev/null) || return 0
  # shellcheck disable=SC2086 # split "host port" into words
  set -- $reply
  if [ "$#" -eq 2 ]; then printf '%s\n' "$1"; fi
}

# The Redis pod that says it is a primary, or nothing.
peer_primary() {
  i=0
  while [ "$i" -lt "$REDIS_REPLICAS" ]; do
    peer="$REDIS_PODS-$i.$REDIS_DOMAIN"
    if [ "$peer" != "${self:-}" ]; then
      role=$(redis_cli -h "$peer" -p 6379 --raw role 2>/dev/null | head -n 1)
      if [ "$role" = master ]; then
        printf '%s\n' "$peer"
        return 0
      fi
    fi
    i=$((i + 1))
  done
}
"#;

/// The variables [`shell_common`] expects, for this plan.
pub(crate) fn shell_common_vars(plan: &Plan) -> String {
    let sentinel_host = match plan.sentinel {
        Some(_) => names::service_host(&names::sentinel(&plan.name), &plan.namespace),
        None => String::new(),
    };
    format!(
        "AUTH_FILE={AUTH_DIR}/{user}\n\
         MONITOR_USER={user}\n\
         PRIMARY_NAME={primary}\n\
         SENTINEL_HOST={sentinel_host}\n\
         REDIS_PODS={pods}\n\
         REDIS_DOMAIN={domain}\n\
         REDIS_REPLICAS={replicas}\n\
         CLI_TLS='{cli_tls}'\n",
        user = names::MONITOR_USER,
        primary = names::SENTINEL_PRIMARY_NAME,
        pods = names::redis(&plan.name),
        domain = names::service_host(&names::redis_headless(&plan.name), &plan.namespace),
        replicas = plan.redis.replicas,
        cli_tls = redis_cli_tls(plan),
    )
}

/// How long an empty pod that Sentinel still names the primary waits for a failover:
/// Sentinel's detection plus its failover timeout, and some slack.
fn failover_wait_secs(plan: &Plan) -> u64 {
    plan.sentinel
        .as_ref()
        .map_or(0, |s| (s.down_after_ms + s.failover_timeout_ms).div_ceil(1000) + 10)
}

fn start_script(plan: &Plan) -> String {
    let persistent = if plan.redis.persistence == PersistenceMode::None {
        "no"
    } else {
        "yes"
    };
    format!(
        "#!/bin/sh\n\
         # Starts one Redis of SessionCache {ns}/{name}: writes redis.conf with the ACL users\n\
         # and its role (primary, or replica of the current primary), then runs redis-server.\n\
         set -eu\n\
         {vars}\
         PERSISTENT={persistent}\n\
         FAILOVER_WAIT={wait}\n\
         REPLICATION_USER={replication}\n\
         {common}\n{acl}{START_REDIS_BODY}",
        ns = plan.namespace,
        name = plan.name,
        vars = shell_common_vars(plan),
        wait = failover_wait_secs(plan),
        replication = names::REPLICATION_USER,
        common = shell_common(),
        acl = crate::build::acl::write_acl_function(plan),
    )
}

/// The paths are the mounts of [`stateful_set`]: /etc/redis (ConfigMap), /run/redis (tmpfs),
/// /data (the volume).
const START_REDIS_BODY: &str = r#"
self="$POD_NAME.$REDIS_DOMAIN"
first="$REDIS_PODS-0.$REDIS_DOMAIN"

is_self() {
  [ "$1" = "$self" ] || [ "$1" = "$POD_NAME" ] || [ "$1" = "${POD_IP:-}" ]
}

# Data kept from an earlier run of this pod (not a pod re-created on an empty volume).
has_data() {
  [ "$PERSISTENT" = yes ] && [ -n "$(ls -A /data | grep -v '^lost+found$')" ]
}

# Who is the primary: Sentinel knows after a failover; while no Sentinel answers, a pod that
# says it is one; otherwise pod 0, the first primary.
primary=""
named_by_sentinel=no
if [ -n "$SENTINEL_HOST" ]; then
  primary=$(sentinel_primary)
  if [ -n "$primary" ]; then
    named_by_sentinel=yes
  else
    primary=$(peer_primary)
  fi
fi
primary=${primary:-$first}

# A primary that restarts empty before Sentinel noticed it was gone would make every replica
# drop its copy and sync the empty data set: every session lost. Wait for Sentinel to promote
# a replica instead, and follow it; if none is promoted, there was nothing to keep.
if [ "$named_by_sentinel" = yes ] && is_self "$primary" && ! has_data; then
  printf 'start-redis: Sentinel names this empty pod the primary; waiting up to %ss for a failover\n' \
    "$FAILOVER_WAIT" >&2
  waited=0
  while [ "$waited" -lt "$FAILOVER_WAIT" ]; do
    sleep 2
    waited=$((waited + 2))
    now=$(sentinel_primary)
    if [ -n "$now" ] && ! is_self "$now"; then
      primary=$now
      break
    fi
  done
fi

umask 077
conf=/run/redis/redis.conf
{
  cat /etc/redis/redis.conf
  printf '\n# Written by start-redis.sh at start.\n'
  write_acl
  # Every pod, the primary too: after a failover it becomes a replica and must authenticate.
  replication_password=$(read_secret "/etc/redis-auth/$REPLICATION_USER")
  printf 'masteruser %s\n' "$REPLICATION_USER"
  printf 'masterauth %s\n' "$(conf_string "$replication_password")"
  printf 'replica-announce-ip %s\n' "$self"
  if ! is_self "$primary"; then
    printf 'replicaof %s 6379\n' "$primary"
  fi
} >"$conf"

if is_self "$primary"; then
  printf 'start-redis: %s starts as the primary\n' "$self" >&2
else
  printf 'start-redis: %s starts as a replica of %s\n' "$self" "$primary" >&2
fi
exec redis-server "$conf"
"#;

/// The probes' check. `ready`: Redis answers PONG. `alive`: Redis answers at all, also while
/// loading its data or syncing from its primary, so a slow start is not killed.
fn ping_script(plan: &Plan) -> String {
    format!(
        r#"#!/bin/sh
# Health check of the local Redis: `ping.sh ready` or `ping.sh alive`.
{READ_SECRET}password=$(read_secret {AUTH_DIR}/{user})
reply=$(REDISCLI_AUTH="$password" timeout 4 redis-cli {tls}--user {user} -h 127.0.0.1 -p {port} ping 2>&1 | head -n 1)
case "$1:$reply" in
  *:PONG | alive:LOADING* | alive:MASTERDOWN*) exit 0 ;;
esac
printf '%s\n' "$reply"
exit 1
"#,
        user = names::MONITOR_USER,
        port = names::REDIS_PORT,
        tls = spaced(redis_cli_tls(plan)),
    )
}

/// `options` followed by a space, or nothing.
pub(crate) fn spaced(options: String) -> String {
    if options.is_empty() {
        options
    } else {
        options + " "
    }
}

/// SHA-256 (hex) of a ConfigMap's data, for [`CONFIG_CHECKSUM_ANNOTATION`].
pub fn config_checksum(data: &BTreeMap<String, String>) -> String {
    let mut hash = Sha256::new();
    for (key, value) in data {
        // Lengths first, so that no two different maps hash alike.
        hash.update((key.len() as u64).to_be_bytes());
        hash.update(key);
        hash.update((value.len() as u64).to_be_bytes());
        hash.update(value);
    }
    hash.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

// ---------------------------------------------------------------------------------------
// StatefulSet

fn stateful_set(plan: &Plan, owner: &OwnerReference, checksum: String, observed: &Observed) -> StatefulSet {
    let redis = &plan.redis;
    let selector = names::selector(&plan.name, component::REDIS);

    let mut volumes = vec![
        config_volume("config", names::redis_config(&plan.name)),
        crate::build::acl::passwords_volume("auth", &crate::build::acl::users(plan)),
        empty_dir("run", true),
        empty_dir("tmp", false),
    ];
    volumes.extend(tls_server_volume(plan));
    // The claim template is written as the API server stores it, defaults included (see
    // `Emitted::to_json`): a template without them counts as a change at every server-side
    // apply, and the server writes the StatefulSet again each time.
    let volume_claim_templates = match &redis.volume {
        Some(volume) => Some(vec![PersistentVolumeClaim {
            metadata: ObjectMeta {
                name: Some("data".into()),
                labels: Some(names::labels(&plan.name, component::REDIS)),
                ..ObjectMeta::default()
            },
            spec: Some(PersistentVolumeClaimSpec {
                access_modes: Some(vec!["ReadWriteOnce".into()]),
                storage_class_name: volume.storage_class_name.clone(),
                resources: Some(VolumeResourceRequirements {
                    requests: Some(BTreeMap::from([("storage".to_string(), volume.size.clone())])),
                    ..VolumeResourceRequirements::default()
                }),
                volume_mode: Some("Filesystem".into()),
                ..PersistentVolumeClaimSpec::default()
            }),
            status: Some(PersistentVolumeClaimStatus {
                phase: Some("Pending".into()),
                ..PersistentVolumeClaimStatus::default()
            }),
        }]),
        None => {
            volumes.push(empty_dir("data", false));
            None
        }
    };

    let ping = |mode: &str| vec!["sh".to_string(), format!("{CONFIG_DIR}/ping.sh"), mode.to_string()];
    // Long enough for the wait in start-redis.sh plus loading a large data set (after which
    // `alive` accepts LOADING anyway).
    let startup_failures = ((failover_wait_secs(plan) + 300) / 5) as i32;
    let container = Container {
        name: "redis".into(),
        image: Some(redis.image.clone()),
        command: Some(vec!["sh".into(), format!("{CONFIG_DIR}/start-redis.sh")]),
        env: Some(pod_identity_env()),
        ports: Some(vec![ContainerPort {
            name: Some("redis".into()),
            container_port: names::REDIS_PORT,
            protocol: Some("TCP".into()),
            ..ContainerPort::default()
        }]),
        startup_probe: Some(exec_probe(ping("alive"), 5, startup_failures)),
        readiness_probe: Some(exec_probe(ping("ready"), 5, 3)),
        // A minute of silence, not one slow answer (a fork or a long command can stall Redis).
        liveness_probe: Some(exec_probe(ping("alive"), 10, 6)),
        resources: redis.resources.clone(),
        volume_mounts: Some(
            [
                mount("data", DATA_DIR, false),
                mount("config", CONFIG_DIR, true),
                mount("auth", AUTH_DIR, true),
                mount("run", RUN_DIR, false),
                mount("tmp", "/tmp", false),
            ]
            .into_iter()
            .chain(tls_server_mount(plan))
            .collect(),
        ),
        security_context: Some(pod_security::container(true)),
        ..Container::default()
    };

    StatefulSet {
        metadata: metadata(plan, names::redis(&plan.name), component::REDIS, owner),
        spec: Some(StatefulSetSpec {
            service_name: Some(names::redis_headless(&plan.name)),
            replicas: Some(redis.replicas),
            // Replicas wait for nobody: each finds the primary itself (see start-redis.sh).
            pod_management_policy: Some("Parallel".into()),
            selector: LabelSelector {
                match_labels: Some(selector.clone()),
                ..LabelSelector::default()
            },
            template: PodTemplateSpec {
                metadata: Some(pod_template_metadata(plan, component::REDIS, checksum, observed)),
                spec: Some(PodSpec {
                    containers: vec![container],
                    volumes: Some(volumes),
                    security_context: Some(pod_security::pod_for_root_image(plan.platform)),
                    affinity: Some(redis.affinity.clone().unwrap_or_else(|| soft_anti_affinity(selector))),
                    tolerations: non_empty(redis.tolerations.clone()),
                    node_selector: (!redis.node_selector.is_empty()).then(|| redis.node_selector.clone()),
                    topology_spread_constraints: non_empty(redis.topology_spread_constraints.clone()),
                    // Redis needs neither the API nor the Service environment variables.
                    automount_service_account_token: Some(false),
                    enable_service_links: Some(false),
                    ..PodSpec::default()
                }),
            },
            volume_claim_templates,
            ..StatefulSetSpec::default()
        }),
        ..StatefulSet::default()
    }
}

// ---------------------------------------------------------------------------------------
// Services and PDB

/// Gives every pod a stable DNS name (`<pod>.<headless>.<ns>.svc`), also before it is ready:
/// replicas must reach a primary that is still loading, and Sentinel resolves these names.
fn headless_service(plan: &Plan, owner: &OwnerReference) -> Service {
    Service {
        metadata: metadata(plan, names::redis_headless(&plan.name), component::REDIS, owner),
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".into()),
            publish_not_ready_addresses: Some(true),
            selector: Some(names::selector(&plan.name, component::REDIS)),
            ports: Some(vec![service_port("redis", names::REDIS_PORT)]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

/// `<name>-redis:6379`. Standalone, it is the one Redis. Replicated, it selects every ready
/// Redis pod, primary and replicas alike, so it is only good for reads: clients that write
/// (the shim, WebSEAL, IAG) must ask Sentinel (`<name>-sentinel:26379`, primary `redsess`)
/// for the primary.
fn client_service(plan: &Plan, owner: &OwnerReference) -> Service {
    Service {
        metadata: metadata(plan, names::redis(&plan.name), component::REDIS, owner),
        spec: Some(ServiceSpec {
            selector: Some(names::selector(&plan.name, component::REDIS)),
            ports: Some(vec![service_port("redis", names::REDIS_PORT)]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

/// At most one pod of the component down for a voluntary disruption (a node drain).
pub(crate) fn pod_disruption_budget(
    plan: &Plan,
    owner: &OwnerReference,
    name: String,
    component: &str,
) -> PodDisruptionBudget {
    PodDisruptionBudget {
        metadata: metadata(plan, name, component, owner),
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(1)),
            selector: Some(LabelSelector {
                match_labels: Some(names::selector(&plan.name, component)),
                ..LabelSelector::default()
            }),
            // A pod that is not ready protects nothing; let drains evict it.
            unhealthy_pod_eviction_policy: Some("AlwaysAllow".into()),
            ..PodDisruptionBudgetSpec::default()
        }),
        ..PodDisruptionBudget::default()
    }
}

// ---------------------------------------------------------------------------------------
// Pieces shared with sentinel.rs

/// Labels, and the annotations whose change rolls the pods: the configuration's checksum and
/// (with TLS) the digest of the certificate the servers present.
pub(crate) fn pod_template_metadata(plan: &Plan, component: &str, checksum: String, observed: &Observed) -> ObjectMeta {
    let mut annotations = BTreeMap::from([(CONFIG_CHECKSUM_ANNOTATION.to_string(), checksum)]);
    if let (Some(_), Some(material)) = (&plan.redis.tls, &observed.redis_tls) {
        annotations.insert(
            redis_tls::CERTIFICATE_ANNOTATION.to_string(),
            material.certificate_digest(),
        );
    }
    ObjectMeta {
        labels: Some(names::labels(&plan.name, component)),
        annotations: Some(annotations),
        ..ObjectMeta::default()
    }
}

/// The servers' certificate, key and CA (Redis and Sentinel pods), when TLS is on.
pub(crate) fn tls_server_volume(plan: &Plan) -> Option<Volume> {
    let tls = plan.redis.tls.as_ref()?;
    Some(Volume {
        name: "tls".into(),
        secret: Some(SecretVolumeSource {
            secret_name: Some(tls.certificate_secret.clone()),
            items: Some(
                ["tls.crt", "tls.key", "ca.crt"]
                    .into_iter()
                    .map(|key| k8s_openapi::api::core::v1::KeyToPath {
                        key: key.into(),
                        path: key.into(),
                        ..Default::default()
                    })
                    .collect(),
            ),
            ..SecretVolumeSource::default()
        }),
        ..Volume::default()
    })
}

pub(crate) fn tls_server_mount(plan: &Plan) -> Option<VolumeMount> {
    plan.redis
        .tls
        .as_ref()
        .map(|_| mount("tls", redis_tls::SERVER_DIR, true))
}

/// Prefer one pod per node, but schedule anyway when there are fewer nodes.
pub(crate) fn soft_anti_affinity(selector: BTreeMap<String, String>) -> Affinity {
    Affinity {
        pod_anti_affinity: Some(PodAntiAffinity {
            preferred_during_scheduling_ignored_during_execution: Some(vec![WeightedPodAffinityTerm {
                weight: 100,
                pod_affinity_term: PodAffinityTerm {
                    topology_key: "kubernetes.io/hostname".into(),
                    label_selector: Some(LabelSelector {
                        match_labels: Some(selector),
                        ..LabelSelector::default()
                    }),
                    ..PodAffinityTerm::default()
                },
            }]),
            ..PodAntiAffinity::default()
        }),
        ..Affinity::default()
    }
}

/// `POD_NAME` and `POD_IP` from the downward API: the scripts build their DNS names from them.
pub(crate) fn pod_identity_env() -> Vec<EnvVar> {
    let field = |name: &str, path: &str| EnvVar {
        name: name.into(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: path.into(),
                ..ObjectFieldSelector::default()
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    };
    vec![field("POD_NAME", "metadata.name"), field("POD_IP", "status.podIP")]
}

pub(crate) fn exec_probe(command: Vec<String>, period_seconds: i32, failure_threshold: i32) -> Probe {
    Probe {
        exec: Some(ExecAction { command: Some(command) }),
        period_seconds: Some(period_seconds),
        timeout_seconds: Some(5),
        failure_threshold: Some(failure_threshold),
        ..Probe::default()
    }
}

pub(crate) fn config_volume(name: &str, config_map: String) -> Volume {
    Volume {
        name: name.into(),
        config_map: Some(ConfigMapVolumeSource {
            name: config_map,
            ..ConfigMapVolumeSource::default()
        }),
        ..Volume::default()
    }
}

/// The ACL password Secret, only its `password` key. Default file mode: with no fixed UID or
/// fsGroup (restricted-v2), a tighter mode could leave the file unreadable to the container.
pub(crate) fn secret_volume(name: &str, secret: &str) -> Volume {
    Volume {
        name: name.into(),
        secret: Some(SecretVolumeSource {
            secret_name: Some(secret.into()),
            items: Some(vec![k8s_openapi::api::core::v1::KeyToPath {
                key: "password".into(),
                path: "password".into(),
                ..Default::default()
            }]),
            ..SecretVolumeSource::default()
        }),
        ..Volume::default()
    }
}

/// `memory`: tmpfs, so a file with the password never reaches the node's disk. Small: it
/// counts against the container's memory.
pub(crate) fn empty_dir(name: &str, memory: bool) -> Volume {
    Volume {
        name: name.into(),
        empty_dir: Some(EmptyDirVolumeSource {
            medium: memory.then(|| "Memory".into()),
            size_limit: memory.then(|| Quantity("16Mi".into())),
        }),
        ..Volume::default()
    }
}

pub(crate) fn mount(name: &str, path: &str, read_only: bool) -> VolumeMount {
    VolumeMount {
        name: name.into(),
        mount_path: path.into(),
        read_only: read_only.then_some(true),
        ..VolumeMount::default()
    }
}

pub(crate) fn service_port(name: &str, port: i32) -> ServicePort {
    ServicePort {
        name: Some(name.into()),
        port,
        target_port: Some(IntOrString::String(name.into())),
        protocol: Some("TCP".into()),
        ..ServicePort::default()
    }
}

pub(crate) fn non_empty<T>(items: Vec<T>) -> Option<Vec<T>> {
    (!items.is_empty()).then_some(items)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::validate::validate;

    pub(crate) fn plan(spec_yaml: &str) -> Plan {
        validate(&crate::fixtures::session_cache(spec_yaml, 1)).unwrap()
    }

    pub(crate) fn owner() -> OwnerReference {
        OwnerReference {
            api_version: "redsess.io/v1alpha1".into(),
            kind: "SessionCache".into(),
            name: "cache".into(),
            uid: "5f1c2d3e-0000-4000-8000-000000000001".into(),
            controller: Some(true),
            block_owner_deletion: Some(true),
        }
    }

    /// The object as YAML-comparable JSON, with its apiVersion and kind.
    pub(crate) fn json(o: &Emitted) -> serde_json::Value {
        o.to_json()
    }

    /// Asserts `expected` (YAML) is contained in `actual`: every key it names has that
    /// value; keys it does not name are not checked. Lists must match element by element.
    #[track_caller]
    pub(crate) fn assert_contains(actual: &serde_json::Value, expected_yaml: &str) {
        let expected: serde_json::Value = serde_yaml::from_str(expected_yaml).unwrap();
        if let Err(path) = contains(actual, &expected, String::new()) {
            panic!(
                "mismatch at {path}\nexpected:\n{expected_yaml}\nactual:\n{}",
                serde_yaml::to_string(actual).unwrap()
            );
        }
    }

    fn contains(actual: &serde_json::Value, expected: &serde_json::Value, path: String) -> Result<(), String> {
        use serde_json::Value;
        match (actual, expected) {
            (Value::Object(a), Value::Object(e)) => e.iter().try_for_each(|(k, ev)| match a.get(k) {
                Some(av) => contains(av, ev, format!("{path}.{k}")),
                None => Err(format!("{path}.{k} (missing)")),
            }),
            (Value::Array(a), Value::Array(e)) if a.len() == e.len() => a
                .iter()
                .zip(e)
                .enumerate()
                .try_for_each(|(i, (av, ev))| contains(av, ev, format!("{path}[{i}]"))),
            _ if actual == expected => Ok(()),
            _ => Err(path),
        }
    }

    fn find<'a>(objects: &'a [Emitted], kind: &str, name: &str) -> &'a Emitted {
        objects
            .iter()
            .find(|o| o.kind() == kind && o.name() == name)
            .unwrap_or_else(|| panic!("no {kind} {name}"))
    }

    fn config(objects: &[Emitted]) -> BTreeMap<String, String> {
        match find(objects, "ConfigMap", "cache-redis-config") {
            Emitted::ConfigMap(c) => c.data.clone().unwrap(),
            _ => unreachable!(),
        }
    }

    fn stateful_set(objects: &[Emitted]) -> serde_json::Value {
        json(find(objects, "StatefulSet", "cache-redis"))
    }

    #[test]
    fn standalone_emits_config_statefulset_and_two_services_but_no_pdb() {
        let out = build(&plan("  {}"), &owner(), &Observed::default());
        let kinds: Vec<_> = out.iter().map(|o| (o.kind(), o.name())).collect();
        assert_eq!(
            kinds,
            [
                ("ConfigMap", "cache-redis-config"),
                ("StatefulSet", "cache-redis"),
                ("Service", "cache-redis-headless"),
                ("Service", "cache-redis"),
            ]
        );
        for o in &out {
            assert_contains(
                &json(o),
                r#"
metadata:
  namespace: isam
  labels: {app.kubernetes.io/name: redsess, app.kubernetes.io/instance: cache,
           app.kubernetes.io/component: redis, app.kubernetes.io/managed-by: redsess-operator}
  ownerReferences: [{kind: SessionCache, name: cache, controller: true}]
"#,
            );
        }
    }

    /// Applying a claim template without the server's defaults made the server write the
    /// StatefulSet at every reconcile (seen on kube-apiserver 1.20); it is sent as stored.
    #[test]
    fn the_claim_template_is_sent_as_the_server_stores_it() {
        let out = build(&plan("  {}"), &owner(), &Observed::default());
        let template = &stateful_set(&out)["spec"]["volumeClaimTemplates"][0];
        assert_eq!(template["metadata"]["creationTimestamp"], serde_json::Value::Null);
        assert!(template["metadata"]
            .as_object()
            .unwrap()
            .contains_key("creationTimestamp"));
        assert_eq!(template["spec"]["volumeMode"], "Filesystem");
        assert_eq!(template["status"]["phase"], "Pending");
        // Without persistence there is no template, and no `volumeClaimTemplates: null` either.
        let out = build(
            &plan("  redis: {persistence: None, storage: {ephemeral: true}}"),
            &owner(),
            &Observed::default(),
        );
        let spec = stateful_set(&out)["spec"].clone();
        assert!(
            !spec.as_object().unwrap().contains_key("volumeClaimTemplates"),
            "{spec:#}"
        );
    }

    #[test]
    fn services_give_stable_pod_names_and_a_client_address() {
        let out = build(&plan("  {}"), &owner(), &Observed::default());
        assert_contains(
            &json(find(&out, "Service", "cache-redis-headless")),
            r#"
spec:
  clusterIP: None
  publishNotReadyAddresses: true
  selector: {app.kubernetes.io/name: redsess, app.kubernetes.io/instance: cache, app.kubernetes.io/component: redis}
  ports: [{name: redis, port: 6379, targetPort: redis, protocol: TCP}]
"#,
        );
        let client = json(find(&out, "Service", "cache-redis"));
        assert_contains(
            &client,
            r#"
spec:
  selector: {app.kubernetes.io/name: redsess, app.kubernetes.io/instance: cache, app.kubernetes.io/component: redis}
  ports: [{name: redis, port: 6379, targetPort: redis, protocol: TCP}]
"#,
        );
        assert!(client["spec"].get("clusterIP").is_none());
    }

    #[test]
    fn the_statefulset_runs_the_script_with_restricted_security() {
        let sts = stateful_set(&build(&plan("  {}"), &owner(), &Observed::default()));
        assert_contains(
            &sts,
            r#"
spec:
  serviceName: cache-redis-headless
  replicas: 1
  podManagementPolicy: Parallel
  selector:
    matchLabels: {app.kubernetes.io/name: redsess, app.kubernetes.io/instance: cache, app.kubernetes.io/component: redis}
  template:
    metadata:
      labels: {app.kubernetes.io/name: redsess, app.kubernetes.io/instance: cache,
               app.kubernetes.io/component: redis, app.kubernetes.io/managed-by: redsess-operator}
    spec:
      automountServiceAccountToken: false
      enableServiceLinks: false
      securityContext: {runAsNonRoot: true, seccompProfile: {type: RuntimeDefault}}
      containers:
      - name: redis
        image: docker.io/library/redis:7.4.2-alpine
        command: [sh, /etc/redis/start-redis.sh]
        env:
        - {name: POD_NAME, valueFrom: {fieldRef: {fieldPath: metadata.name}}}
        - {name: POD_IP, valueFrom: {fieldRef: {fieldPath: status.podIP}}}
        ports: [{name: redis, containerPort: 6379, protocol: TCP}]
        readinessProbe: {exec: {command: [sh, /etc/redis/ping.sh, ready]}}
        livenessProbe: {exec: {command: [sh, /etc/redis/ping.sh, alive]}}
        startupProbe: {exec: {command: [sh, /etc/redis/ping.sh, alive]}}
        securityContext:
          allowPrivilegeEscalation: false
          privileged: false
          runAsNonRoot: true
          readOnlyRootFilesystem: true
          capabilities: {drop: [ALL]}
          seccompProfile: {type: RuntimeDefault}
        volumeMounts:
        - {name: data, mountPath: /data}
        - {name: config, mountPath: /etc/redis, readOnly: true}
        - {name: auth, mountPath: /etc/redis-auth, readOnly: true}
        - {name: run, mountPath: /run/redis}
        - {name: tmp, mountPath: /tmp}
      volumes:
      - {name: config, configMap: {name: cache-redis-config}}
      - name: auth
        projected:
          sources:
          - secret: {name: cache-redis-auth, items: [{key: password, path: redsess}]}
          - secret: {name: cache-redis-replication-auth, items: [{key: password, path: redsess-replication}]}
          - secret: {name: cache-redis-monitor-auth, items: [{key: password, path: redsess-monitor}]}
      - {name: run, emptyDir: {medium: Memory, sizeLimit: 16Mi}}
      - {name: tmp, emptyDir: {}}
  volumeClaimTemplates:
  - metadata: {name: data}
    spec:
      accessModes: [ReadWriteOnce]
      resources: {requests: {storage: 1Gi}}
"#,
        );
        assert_eq!(
            sts["spec"]["template"]["metadata"]["annotations"][CONFIG_CHECKSUM_ANNOTATION]
                .as_str()
                .unwrap()
                .len(),
            64
        );
    }

    #[test]
    fn volumes_follow_the_storage_spec() {
        let sts = stateful_set(&build(
            &plan("  redis: {storage: {size: 5Gi, storageClassName: fast}}"),
            &owner(),
            &Observed::default(),
        ));
        assert_contains(
            &sts,
            r#"
spec:
  volumeClaimTemplates:
  - metadata: {name: data}
    spec:
      accessModes: [ReadWriteOnce]
      storageClassName: fast
      resources: {requests: {storage: 5Gi}}
"#,
        );

        let sts = stateful_set(&build(
            &plan("  redis: {persistence: None, storage: {ephemeral: true}}"),
            &owner(),
            &Observed::default(),
        ));
        assert!(sts["spec"].get("volumeClaimTemplates").is_none());
        let volumes = sts["spec"]["template"]["spec"]["volumes"].as_array().unwrap();
        assert_eq!(
            volumes.last().unwrap(),
            &serde_json::json!({"name": "data", "emptyDir": {}})
        );
    }

    #[test]
    fn replicated_caches_acknowledge_writes_a_replica_has() {
        let conf = |spec: &str| config(&build(&plan(spec), &owner(), &Observed::default()))["redis.conf"].clone();
        let replicated = conf("  redis: {replicas: 3}");
        assert!(
            replicated.contains("\nmin-replicas-to-write 1\nmin-replicas-max-lag 10\n"),
            "{replicated}"
        );
        let two = conf("  redis: {replicas: 3, durability: {replicas: 2}}");
        assert!(two.contains("\nmin-replicas-to-write 2\n"), "{two}");
        for unbound in ["  {}", "  redis: {replicas: 3, durability: {replicas: 0}}"] {
            assert!(!conf(unbound).contains("min-replicas"), "{unbound}");
        }
    }

    #[test]
    fn persistence_modes_configure_redis() {
        let conf = |spec: &str| config(&build(&plan(spec), &owner(), &Observed::default()))["redis.conf"].clone();
        let aof = conf("  {}");
        assert!(
            aof.contains("\nappendonly yes\nappendfsync everysec\nsave \"\"\n"),
            "{aof}"
        );
        let rdb = conf("  redis: {persistence: RDB}");
        assert!(rdb.contains("\nappendonly no\nsave 60 1000\n"), "{rdb}");
        let none = conf("  redis: {persistence: None, storage: {ephemeral: true}}");
        assert!(
            none.contains("\nappendonly no\nsave \"\"\nrdb-del-sync-files yes\n"),
            "{none}"
        );
        for c in [&aof, &rdb, &none] {
            for line in ["port 6379", "bind * -::*", "protected-mode no", "dir /data"] {
                assert!(c.contains(&format!("\n{line}\n")), "{line} missing from\n{c}");
            }
        }
    }

    #[test]
    fn extra_config_is_appended_and_changes_roll_the_pods() {
        let plain = build(&plan("  {}"), &owner(), &Observed::default());
        let tuned = build(
            &plan("  redis: {config: {maxmemory: 2gb, maxmemory-policy: volatile-ttl, hz: '20'}}"),
            &owner(),
            &Observed::default(),
        );
        let conf = &config(&tuned)["redis.conf"];
        // The memory settings are the plan's (validated, once); the rest is appended as given.
        assert!(
            conf.ends_with("maxmemory 2147483648\n# Full: evict only keys with a TTL (sessions), never the key material or membership.\nmaxmemory-policy volatile-ttl\n# spec.redis.config\nhz 20\n"),
            "{conf}"
        );
        assert_eq!(conf.matches("maxmemory ").count(), 1);
        let checksum =
            |objects: &[Emitted]| stateful_set(objects)["spec"]["template"]["metadata"]["annotations"].clone();
        assert_ne!(checksum(&plain), checksum(&tuned));
        assert_eq!(
            checksum(&plain),
            checksum(&build(&plan("  {}"), &owner(), &Observed::default()))
        );
    }

    #[test]
    fn maxmemory_follows_the_memory_limit_and_nothing_is_evicted_by_default() {
        let conf = |spec: &str| config(&build(&plan(spec), &owner(), &Observed::default()))["redis.conf"].clone();
        // 1536Mi with AOF: half for the data set, the rest for buffers and the rewrite's fork.
        let limited = conf("  redis: {resources: {limits: {memory: 1536Mi}}}");
        assert!(limited.contains("\nmaxmemory 805306368\n"), "{limited}");
        assert!(limited.contains("\nmaxmemory-policy noeviction\n"), "{limited}");
        let ephemeral =
            conf("  redis: {persistence: None, storage: {ephemeral: true}, resources: {limits: {memory: 1Gi}}}");
        assert!(
            ephemeral.contains("\nmaxmemory 805306368\n"),
            "three quarters without a fork: {ephemeral}"
        );
        // No limit: no bound to derive one from.
        let unbounded = conf("  {}");
        assert!(!unbounded.contains("\nmaxmemory "), "{unbounded}");
        assert!(unbounded.contains("\nmaxmemory-policy noeviction\n"));
    }

    #[test]
    fn no_secret_in_the_pod_spec_or_configmap() {
        for spec in ["  {}", "  redis: {replicas: 3}"] {
            let out = build(&plan(spec), &owner(), &Observed::default());
            let sts = stateful_set(&out);
            let container = &sts["spec"]["template"]["spec"]["containers"][0];
            // Only downward-API variables, no literal values and no secretKeyRef.
            for env in container["env"].as_array().unwrap() {
                assert!(
                    env.get("value").is_none() && env["valueFrom"].get("fieldRef").is_some(),
                    "{env}"
                );
            }
            assert!(container.get("envFrom").is_none() && container.get("args").is_none());
            // The scripts read the password from the mounted file.
            let data = config(&out);
            assert!(data["start-redis.sh"].contains("AUTH_FILE=/etc/redis-auth/redsess-monitor\n"));
            assert!(data["start-redis.sh"].contains("(read_secret /etc/redis-auth/redsess)"));
            assert!(data["ping.sh"].contains("password=$(read_secret /etc/redis-auth/redsess-monitor)"));
            assert!(!data["redis.conf"].contains("requirepass") && !data["redis.conf"].contains("masterauth"));
        }
    }

    #[test]
    fn the_start_script_knows_where_to_look_for_the_primary() {
        let standalone = config(&build(&plan("  {}"), &owner(), &Observed::default()))["start-redis.sh"].clone();
        assert!(standalone.contains("\nSENTINEL_HOST=\n"));
        assert!(standalone.contains("\nFAILOVER_WAIT=0\n"));

        let replicated = config(&build(
            &plan("  redis: {replicas: 3}\n  sentinel: {downAfter: 5s, failoverTimeout: 60s}"),
            &owner(),
            &Observed::default(),
        ))["start-redis.sh"]
            .clone();
        for line in [
            "SENTINEL_HOST=cache-sentinel.isam.svc",
            "REDIS_PODS=cache-redis",
            "REDIS_DOMAIN=cache-redis-headless.isam.svc",
            "REDIS_REPLICAS=3",
            "PRIMARY_NAME=redsess",
            "MONITOR_USER=redsess-monitor",
            "REPLICATION_USER=redsess-replication",
            "FAILOVER_WAIT=75",
        ] {
            assert!(replicated.contains(&format!("\n{line}\n")), "{line} missing");
        }
        assert_eq!(
            redis_pod_host(&plan("  {}"), 0),
            "cache-redis-0.cache-redis-headless.isam.svc"
        );
    }

    #[test]
    fn scripts_are_valid_posix_shell() {
        let data = config(&build(&plan("  redis: {replicas: 3}"), &owner(), &Observed::default()));
        for script in ["start-redis.sh", "ping.sh"] {
            check_shell_syntax(&data[script]);
        }
    }

    /// `sh -n`: parses without running. Skipped where there is no `sh`.
    pub(crate) fn check_shell_syntax(script: &str) {
        use std::io::Write;
        let Ok(mut child) = std::process::Command::new("sh")
            .arg("-n")
            .stdin(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
        else {
            return;
        };
        child.stdin.take().unwrap().write_all(script.as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}\n{script}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Runs a script with `sh` and returns its standard output; `None` where there is no `sh`.
    fn run_shell(script: &str) -> Option<String> {
        let out = std::process::Command::new("sh").arg("-c").arg(script).output().ok()?;
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        Some(String::from_utf8(out.stdout).unwrap())
    }

    #[test]
    fn the_password_is_trimmed_like_the_shim_does_and_quoted_for_redis_conf() {
        let read = |raw: &str| {
            run_shell(&format!(
                "f=$(mktemp)\nprintf '{raw}' >\"$f\"\n{READ_SECRET}v=$(read_secret \"$f\") || v=refused\n\
                 rm -f \"$f\"\nprintf 'read:%s' \"$v\""
            ))
        };
        let Some(plain) = read("pw") else { return };
        assert_eq!(plain, "read:pw");
        assert_eq!(read("pw\\n").unwrap(), "read:pw");
        assert_eq!(read("pw\\r\\n\\r\\n").unwrap(), "read:pw");
        assert_eq!(read("a b\\r\\nc\\n").unwrap(), "read:refused", "more than one line");
        assert_eq!(read("\\n").unwrap(), "read:refused", "an empty value");

        // conf_string: what redis.conf's parser reads back as the same string.
        let functions = &SHELL_FUNCTIONS[SHELL_FUNCTIONS.find("conf_string()").unwrap()..];
        let functions = &functions[..functions.find("\n}\n").unwrap() + 3];
        let quoted = run_shell(&format!("{functions}conf_string 'a \"b\" \\c $d'")).unwrap();
        assert_eq!(quoted, r#""a \"b\" \\c $d""#);
    }

    /// A password file that is missing stops the script before any user gets a password.
    #[test]
    fn a_missing_password_file_stops_the_acl_before_a_user_is_written() {
        let p = plan("  {}");
        let conf_string = &SHELL_FUNCTIONS[SHELL_FUNCTIONS.find("conf_string()").unwrap()..];
        let conf_string = &conf_string[..conf_string.find("\n}\n").unwrap() + 3];
        let acl = crate::build::acl::write_acl_function(&p).replace("/etc/redis-auth/", "/nonexistent/redis-auth/");
        let script = format!("set -eu\n{READ_SECRET}{conf_string}{acl}{{\n  write_acl\n}}\necho reached\n");
        let Ok(out) = std::process::Command::new("sh").arg("-c").arg(&script).output() else {
            return;
        };
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(!out.status.success(), "{stdout}");
        assert!(
            !stdout.contains("reached") && !stdout.contains("user redsess on"),
            "{stdout}"
        );
    }

    /// Observed with freshly made TLS material for `p`.
    pub(crate) fn with_tls(p: &Plan) -> Observed {
        let now = k8s_openapi::jiff::Timestamp::from_second(1_800_000_000).unwrap();
        Observed {
            redis_tls: redis_tls::prepare(p, &redis_tls::Found::default(), now).unwrap(),
            ..Observed::default()
        }
    }

    #[test]
    fn tls_serves_only_tls_on_the_usual_port_and_rolls_on_a_new_certificate() {
        let p = plan("  redis: {replicas: 3, tls: {enabled: true}}");
        let observed = with_tls(&p);
        let out = build(&p, &owner(), &observed);
        let conf = &config(&out)["redis.conf"];
        for line in [
            "port 0\n",
            "tls-port 6379\n",
            "tls-cert-file /etc/redis-tls/tls.crt\n",
            "tls-key-file /etc/redis-tls/tls.key\n",
            "tls-ca-cert-file /etc/redis-tls/ca.crt\n",
            "tls-auth-clients no\n",
            "tls-replication yes\n",
        ] {
            assert!(conf.contains(line), "{line}: {conf}");
        }
        assert!(!conf.lines().any(|l| l == "port 6379"), "{conf}");
        // Every redis-cli of the scripts and probes speaks TLS, trusting the CA.
        for script in ["start-redis.sh", "ping.sh"] {
            let text = &config(&out)[script];
            check_shell_syntax(text);
            assert!(
                text.contains("--tls --cacert /etc/redis-tls/ca.crt"),
                "{script}: {text}"
            );
        }
        let sts = stateful_set(&out);
        assert_contains(
            &sts,
            r#"
spec:
  template:
    metadata:
      annotations: {redsess.io/tls-certificate: DIGEST}
    spec:
      containers:
      - volumeMounts:
        - {name: data}
        - {name: config}
        - {name: auth}
        - {name: run}
        - {name: tmp}
        - {name: tls, mountPath: /etc/redis-tls, readOnly: true}
"#
            .replace("DIGEST", &observed.redis_tls.as_ref().unwrap().certificate_digest())
            .as_str(),
        );
        let volumes = sts["spec"]["template"]["spec"]["volumes"].as_array().unwrap();
        let tls = volumes.iter().find(|v| v["name"] == "tls").unwrap();
        assert_eq!(tls["secret"]["secretName"], "cache-redis-tls");
        // Without the material (not yet read): no annotation, nothing else changes.
        let unread = stateful_set(&build(&p, &owner(), &Observed::default()));
        assert!(unread["spec"]["template"]["metadata"]["annotations"]
            .get("redsess.io/tls-certificate")
            .is_none());
        // Off: the plain port, no TLS anywhere.
        let off = build(&plan("  redis: {replicas: 3}"), &owner(), &observed);
        assert!(config(&off)["redis.conf"].contains("port 6379\n"));
        assert!(!config(&off).values().any(|v| v.contains("tls")), "{:?}", config(&off));
    }

    #[test]
    fn tls_settings_are_the_operators() {
        let error = validate(&crate::fixtures::session_cache(
            "  redis: {config: {tls-port: '6380'}}",
            1,
        ))
        .unwrap_err();
        assert_eq!(error.field, "spec.redis.config.tls-port");
        let error = validate(&crate::fixtures::session_cache(
            "  redis: {tls: {certificateSecret: mine}}",
            1,
        ))
        .unwrap_err();
        assert_eq!(error.field, "spec.redis.tls.certificateSecret");
        // TLS options Redis leaves to taste stay the user's.
        let p = plan("  redis: {tls: {enabled: true}, config: {tls-protocols: TLSv1.3}}");
        assert!(config(&build(&p, &owner(), &Observed::default()))["redis.conf"].contains("tls-protocols TLSv1.3\n"));
    }

    #[test]
    fn replicated_redis_gets_a_pdb() {
        let out = build(&plan("  redis: {replicas: 3}"), &owner(), &Observed::default());
        assert_contains(
            &json(find(&out, "PodDisruptionBudget", "cache-redis")),
            r#"
apiVersion: policy/v1
spec:
  maxUnavailable: 1
  unhealthyPodEvictionPolicy: AlwaysAllow
  selector:
    matchLabels: {app.kubernetes.io/name: redsess, app.kubernetes.io/instance: cache, app.kubernetes.io/component: redis}
"#,
        );
        assert_eq!(stateful_set(&out)["spec"]["replicas"], 3);
    }

    #[test]
    fn scheduling_defaults_to_soft_anti_affinity_and_takes_the_users() {
        let sts = stateful_set(&build(&plan("  {}"), &owner(), &Observed::default()));
        assert_contains(
            &sts,
            r#"
spec:
  template:
    spec:
      affinity:
        podAntiAffinity:
          preferredDuringSchedulingIgnoredDuringExecution:
          - weight: 100
            podAffinityTerm:
              topologyKey: kubernetes.io/hostname
              labelSelector:
                matchLabels: {app.kubernetes.io/name: redsess, app.kubernetes.io/instance: cache,
                              app.kubernetes.io/component: redis}
"#,
        );
        for absent in ["tolerations", "nodeSelector", "topologySpreadConstraints"] {
            assert!(sts["spec"]["template"]["spec"].get(absent).is_none(), "{absent}");
        }

        let sts = stateful_set(&build(
            &plan(
                r#"  redis:
    scheduling:
      affinity:
        nodeAffinity:
          requiredDuringSchedulingIgnoredDuringExecution:
            nodeSelectorTerms: [{matchExpressions: [{key: tier, operator: In, values: [cache]}]}]
      tolerations: [{key: dedicated, operator: Equal, value: cache, effect: NoSchedule}]
      nodeSelector: {disk: ssd}
      topologySpreadConstraints:
      - {maxSkew: 1, topologyKey: topology.kubernetes.io/zone, whenUnsatisfiable: ScheduleAnyway}
"#,
            ),
            &owner(),
            &Observed::default(),
        ));
        assert_contains(
            &sts,
            r#"
spec:
  template:
    spec:
      affinity:
        nodeAffinity:
          requiredDuringSchedulingIgnoredDuringExecution:
            nodeSelectorTerms: [{matchExpressions: [{key: tier, operator: In, values: [cache]}]}]
      tolerations: [{key: dedicated, operator: Equal, value: cache, effect: NoSchedule}]
      nodeSelector: {disk: ssd}
      topologySpreadConstraints:
      - {maxSkew: 1, topologyKey: topology.kubernetes.io/zone, whenUnsatisfiable: ScheduleAnyway}
"#,
        );
        assert!(sts["spec"]["template"]["spec"]["affinity"]
            .get("podAntiAffinity")
            .is_none());
    }

    #[test]
    fn resources_are_passed_through() {
        let sts = stateful_set(&build(
            &plan("  redis: {resources: {requests: {cpu: 100m, memory: 256Mi}, limits: {memory: 512Mi}}}"),
            &owner(),
            &Observed::default(),
        ));
        assert_contains(
            &sts,
            r#"
spec:
  template:
    spec:
      containers:
      - resources: {requests: {cpu: 100m, memory: 256Mi}, limits: {memory: 512Mi}}
"#,
        );
    }
}
