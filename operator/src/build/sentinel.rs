//! Sentinel, for a replicated Redis: the ConfigMap with the start script, the StatefulSet, a
//! headless Service (stable names the Sentinels announce to each other), the client Service
//! `<name>-sentinel:26379` and a PodDisruptionBudget. Nothing when Redis is standalone.
//!
//! Sentinel rewrites its configuration file as it learns the topology, so sentinel.conf cannot
//! live in the (read-only) ConfigMap: `start-sentinel.sh` writes it into a memory-backed
//! emptyDir, with `sentinel auth-pass` read from the mounted Secret (as for Redis, the
//! password is never in the ConfigMap, a command line or the pod spec's environment).
//!
//! Sentinel's own ACL: the default user off; the administrator `redsess-sentinel` (its
//! password in `plan.sentinel.password_secret`, mounted here only), which the Sentinels use
//! among themselves; and the Redis ACL user with the Redis password, which may read the
//! topology and change nothing, for the shims and the Redis pods' start script.
//!
//! A Sentinel keeps nothing across a pod restart, so on start it has to find out which Redis
//! is the primary now: it asks the running Sentinels, then the Redis pods, then assumes pod 0.
//! A wrong guess is corrected by the other Sentinels' announcements, which carry a newer
//! configuration epoch. Two things keep restarts from piling up stale Sentinels (which would
//! count against the majority a failover needs): each announces its stable DNS name, and each
//! derives its Sentinel ID from its pod name, so a restarted Sentinel is the same Sentinel.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{StatefulSet, StatefulSetSpec};
use k8s_openapi::api::core::v1::{ConfigMap, Container, ContainerPort, PodSpec, PodTemplateSpec, Service, ServiceSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, OwnerReference};

use crate::build::redis::{
    config_checksum, config_volume, empty_dir, exec_probe, listen_conf, mount, non_empty, pod_disruption_budget,
    pod_identity_env, pod_template_metadata, redis_cli_tls, secret_volume, service_port, shell_common,
    shell_common_vars, soft_anti_affinity, spaced, tls_server_mount, tls_server_volume, AUTH_DIR, READ_SECRET,
};
use crate::build::{acl, metadata, pod_security, Emitted, Observed};
use crate::names::{self, component};
use crate::validate::{Plan, SentinelPlan};

const CONFIG_DIR: &str = "/etc/sentinel";
/// The administrator's password (the Secret `plan.sentinel.password_secret`).
const ADMIN_AUTH_DIR: &str = "/etc/sentinel-auth";
/// Holds the generated sentinel.conf (with the password), which Sentinel keeps rewriting.
const RUN_DIR: &str = "/run/sentinel";

/// What the shims and the start scripts may do on a Sentinel: read the topology, nothing that
/// changes it.
pub const CLIENT_RULES: &str = "-@all +ping +auth +hello +client|setname +sentinel|get-master-addr-by-name \
     +sentinel|masters +sentinel|master +sentinel|slaves +sentinel|replicas +sentinel|sentinels";

/// The headless Service that gives Sentinel pods their stable DNS names.
/// (A candidate for `names.rs`.)
pub fn sentinel_headless(cache: &str) -> String {
    format!("{cache}-sentinel-headless")
}

pub fn build(plan: &Plan, owner: &OwnerReference, observed: &Observed) -> Vec<Emitted> {
    let Some(sentinel) = &plan.sentinel else {
        return Vec::new();
    };
    let config = config_map(plan, sentinel, owner);
    let checksum = config_checksum(config.data.as_ref().expect("the ConfigMap has data"));
    vec![
        Emitted::ConfigMap(config),
        Emitted::StatefulSet(stateful_set(plan, sentinel, owner, checksum, observed)),
        Emitted::Service(service(plan, owner, sentinel_headless(&plan.name), true)),
        Emitted::Service(service(plan, owner, names::sentinel(&plan.name), false)),
        Emitted::PodDisruptionBudget(pod_disruption_budget(
            plan,
            owner,
            names::sentinel(&plan.name),
            component::SENTINEL,
        )),
    ]
}

fn config_map(plan: &Plan, sentinel: &SentinelPlan, owner: &OwnerReference) -> ConfigMap {
    ConfigMap {
        metadata: metadata(plan, names::sentinel_config(&plan.name), component::SENTINEL, owner),
        data: Some(BTreeMap::from([
            ("start-sentinel.sh".to_string(), start_script(plan, sentinel)),
            ("ping-sentinel.sh".to_string(), ping_script(plan)),
            ("listen.conf".to_string(), listen_conf(plan, names::SENTINEL_PORT)),
        ])),
        ..ConfigMap::default()
    }
}

fn start_script(plan: &Plan, sentinel: &SentinelPlan) -> String {
    format!(
        "#!/bin/sh\n\
         # Starts one Sentinel of SessionCache {ns}/{name}: writes sentinel.conf, monitoring the\n\
         # current Redis primary, then runs redis-server --sentinel.\n\
         set -eu\n\
         {vars}\
         NAMESPACE={ns}\n\
         SENTINEL_DOMAIN={sentinel_domain}\n\
         ADMIN_USER={admin}\n\
         SHIM_USER={shim_user}\n\
         CLIENT_RULES='{CLIENT_RULES}'\n\
         ADMIN_AUTH_FILE={ADMIN_AUTH_DIR}/password\n\
         QUORUM={quorum}\n\
         DOWN_AFTER_MS={down_after}\n\
         FAILOVER_TIMEOUT_MS={failover}\n\
         {common}{START_SENTINEL_BODY}",
        ns = plan.namespace,
        name = plan.name,
        vars = shell_common_vars(plan),
        sentinel_domain = names::service_host(&sentinel_headless(&plan.name), &plan.namespace),
        admin = names::SENTINEL_ADMIN_USER,
        shim_user = names::REDIS_USER,
        quorum = sentinel.quorum,
        down_after = sentinel.down_after_ms,
        failover = sentinel.failover_timeout_ms,
        common = shell_common(),
    )
}

const START_SENTINEL_BODY: &str = r#"
# The administrator's password, which only the Sentinels have.
admin_password=$(read_secret "$ADMIN_AUTH_FILE")

self="$POD_NAME.$SENTINEL_DOMAIN"
first="$REDIS_PODS-0.$REDIS_DOMAIN"

# The primary to monitor: as the running Sentinels know it, else the Redis pod that says it
# is one, else pod 0.
primary=$(sentinel_primary)
if [ -z "$primary" ]; then
  primary=$(peer_primary)
fi
primary=${primary:-$first}

# Sentinel will not start on a name that does not resolve yet (a pod not yet scheduled):
# give the primary a minute to appear, then let Sentinel try anyway.
tries=0
until redis_cli -h "$primary" -p 6379 ping >/dev/null 2>&1 || [ "$tries" -ge 30 ]; do
  sleep 2
  tries=$((tries + 1))
done

# The same ID on every start of this pod (40 hex digits).
myid=""
if command -v sha1sum >/dev/null 2>&1; then
  myid=$(printf '%s/%s' "$NAMESPACE" "$POD_NAME" | sha1sum | cut -c 1-40)
fi

umask 077
conf=/run/sentinel/sentinel.conf
{
  # The port, plain or TLS only (spec.redis.tls).
  cat /etc/sentinel/listen.conf
  printf 'bind * -::*\n'
  # Off because the ACL is on: the default user is disabled, every client authenticates.
  printf 'protected-mode no\n'
  # Whoever could reconfigure a Sentinel could name its own host the primary and receive the
  # shims' Redis password: only the Sentinels themselves may. The shims (as their Redis user)
  # and the start scripts (as the monitor user) may read the topology and nothing else.
  printf 'user default off resetpass -@all\n'
  printf 'user %s on %s ~* &* +@all\n' "$ADMIN_USER" "$(conf_string ">$admin_password")"
  for user in "$SHIM_USER" "$MONITOR_USER"; do
    secret=$(read_secret "/etc/redis-auth/$user")
    printf 'user %s on %s %s\n' "$user" "$(conf_string ">$secret")" "$CLIENT_RULES"
  done
  printf 'sentinel sentinel-user %s\n' "$ADMIN_USER"
  printf 'sentinel sentinel-pass %s\n' "$(conf_string "$admin_password")"
  printf 'dir /tmp\n'
  # Names, not IPs: pod IPs change on every restart, the names stay.
  printf 'sentinel resolve-hostnames yes\n'
  printf 'sentinel announce-hostnames yes\n'
  printf 'sentinel announce-ip %s\n' "$self"
  printf 'sentinel announce-port 26379\n'
  if [ -n "$myid" ]; then
    printf 'sentinel myid %s\n' "$myid"
  fi
  printf 'sentinel monitor %s %s 6379 %s\n' "$PRIMARY_NAME" "$primary" "$QUORUM"
  printf 'sentinel down-after-milliseconds %s %s\n' "$PRIMARY_NAME" "$DOWN_AFTER_MS"
  printf 'sentinel failover-timeout %s %s\n' "$PRIMARY_NAME" "$FAILOVER_TIMEOUT_MS"
  printf 'sentinel parallel-syncs %s 1\n' "$PRIMARY_NAME"
  printf 'sentinel auth-user %s %s\n' "$PRIMARY_NAME" "$MONITOR_USER"
  printf 'sentinel auth-pass %s %s\n' "$PRIMARY_NAME" "$(conf_string "$password")"
} >"$conf"

printf 'start-sentinel: %s monitors %s\n' "$self" "$primary" >&2
exec redis-server "$conf" --sentinel
"#;

/// The probes' check: the local Sentinel answers PONG to its administrator (an unanswered
/// or refused PING fails, where a bare `redis-cli ping` would exit 0 on NOAUTH).
fn ping_script(plan: &Plan) -> String {
    format!(
        r#"#!/bin/sh
# Health check of the local Sentinel.
{READ_SECRET}password=$(read_secret {ADMIN_AUTH_DIR}/password)
reply=$(REDISCLI_AUTH="$password" timeout 4 redis-cli {tls}--user {user} -h 127.0.0.1 -p {port} ping 2>&1 | head -n 1)
if [ "$reply" = PONG ]; then exit 0; fi
printf '%s\n' "$reply"
exit 1
"#,
        user = names::SENTINEL_ADMIN_USER,
        port = names::SENTINEL_PORT,
        tls = spaced(redis_cli_tls(plan)),
    )
}

fn stateful_set(
    plan: &Plan,
    sentinel: &SentinelPlan,
    owner: &OwnerReference,
    checksum: String,
    observed: &Observed,
) -> StatefulSet {
    let selector = names::selector(&plan.name, component::SENTINEL);
    let ping = || vec!["sh".to_string(), format!("{CONFIG_DIR}/ping-sentinel.sh")];
    let container = Container {
        name: "sentinel".into(),
        image: Some(sentinel.image.clone()),
        command: Some(vec!["sh".into(), format!("{CONFIG_DIR}/start-sentinel.sh")]),
        env: Some(pod_identity_env()),
        ports: Some(vec![ContainerPort {
            name: Some("sentinel".into()),
            container_port: names::SENTINEL_PORT,
            protocol: Some("TCP".into()),
            ..ContainerPort::default()
        }]),
        // The script may wait a minute for the primary's name to resolve.
        startup_probe: Some(exec_probe(ping(), 5, 30)),
        readiness_probe: Some(exec_probe(ping(), 5, 3)),
        liveness_probe: Some(exec_probe(ping(), 10, 6)),
        resources: sentinel.resources.clone(),
        volume_mounts: Some(
            [
                mount("config", CONFIG_DIR, true),
                mount("auth", AUTH_DIR, true),
                mount("admin-auth", ADMIN_AUTH_DIR, true),
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
        metadata: metadata(plan, names::sentinel(&plan.name), component::SENTINEL, owner),
        spec: Some(StatefulSetSpec {
            service_name: Some(sentinel_headless(&plan.name)),
            replicas: Some(sentinel.replicas),
            pod_management_policy: Some("Parallel".into()),
            selector: LabelSelector {
                match_labels: Some(selector.clone()),
                ..LabelSelector::default()
            },
            template: PodTemplateSpec {
                metadata: Some(pod_template_metadata(plan, component::SENTINEL, checksum, observed)),
                spec: Some(PodSpec {
                    containers: vec![container],
                    volumes: Some(
                        [
                            config_volume("config", names::sentinel_config(&plan.name)),
                            acl::passwords_volume("auth", &[acl::shim(plan), acl::monitor(plan)]),
                            secret_volume("admin-auth", &sentinel.password_secret),
                            empty_dir("run", true),
                            empty_dir("tmp", false),
                        ]
                        .into_iter()
                        .chain(tls_server_volume(plan))
                        .collect(),
                    ),
                    security_context: Some(pod_security::pod_for_root_image(plan.platform)),
                    affinity: Some(soft_anti_affinity(selector)),
                    // Sentinels may run where Redis may (dedicated nodes, say); Redis' affinity
                    // and spread constraints name Redis pods, so they are not reused.
                    tolerations: non_empty(plan.redis.tolerations.clone()),
                    node_selector: (!plan.redis.node_selector.is_empty()).then(|| plan.redis.node_selector.clone()),
                    automount_service_account_token: Some(false),
                    enable_service_links: Some(false),
                    ..PodSpec::default()
                }),
            },
            ..StatefulSetSpec::default()
        }),
        ..StatefulSet::default()
    }
}

/// `headless`: the pods' DNS names, published before they are ready (Sentinels resolve each
/// other while starting). Otherwise the address clients ask for the primary, ready pods only.
fn service(plan: &Plan, owner: &OwnerReference, name: String, headless: bool) -> Service {
    Service {
        metadata: metadata(plan, name, component::SENTINEL, owner),
        spec: Some(ServiceSpec {
            cluster_ip: headless.then(|| "None".into()),
            publish_not_ready_addresses: headless.then_some(true),
            selector: Some(names::selector(&plan.name, component::SENTINEL)),
            ports: Some(vec![service_port("sentinel", names::SENTINEL_PORT)]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::redis::tests::{assert_contains, check_shell_syntax, owner, plan};

    fn replicated() -> Vec<Emitted> {
        build(
            &plan("  redis: {replicas: 3}\n  sentinel: {replicas: 3, quorum: 2, downAfter: 5s, failoverTimeout: 1m}"),
            &owner(),
            &Observed::default(),
        )
    }

    fn script(objects: &[Emitted]) -> String {
        match &objects[0] {
            Emitted::ConfigMap(c) => c.data.as_ref().unwrap()["start-sentinel.sh"].clone(),
            other => panic!("first is {}", other.kind()),
        }
    }

    #[test]
    fn standalone_redis_has_no_sentinel() {
        assert!(build(&plan("  {}"), &owner(), &Observed::default()).is_empty());
        // Sentinel settings alone do not bring Sentinel.
        assert!(build(&plan("  sentinel: {replicas: 5}"), &owner(), &Observed::default()).is_empty());
    }

    #[test]
    fn replicated_redis_brings_every_sentinel_object() {
        let out = replicated();
        let kinds: Vec<_> = out.iter().map(|o| (o.kind(), o.name())).collect();
        assert_eq!(
            kinds,
            [
                ("ConfigMap", "cache-sentinel-config"),
                ("StatefulSet", "cache-sentinel"),
                ("Service", "cache-sentinel-headless"),
                ("Service", "cache-sentinel"),
                ("PodDisruptionBudget", "cache-sentinel"),
            ]
        );
        for o in &out {
            assert_contains(
                &o.to_json(),
                r#"
metadata:
  namespace: isam
  labels: {app.kubernetes.io/name: redsess, app.kubernetes.io/instance: cache,
           app.kubernetes.io/component: sentinel, app.kubernetes.io/managed-by: redsess-operator}
  ownerReferences: [{kind: SessionCache, name: cache, controller: true}]
"#,
            );
        }
        assert_contains(
            &out[2].to_json(),
            r#"
spec:
  clusterIP: None
  publishNotReadyAddresses: true
  ports: [{name: sentinel, port: 26379, targetPort: sentinel, protocol: TCP}]
  selector: {app.kubernetes.io/name: redsess, app.kubernetes.io/instance: cache, app.kubernetes.io/component: sentinel}
"#,
        );
        let client = out[3].to_json();
        assert_contains(
            &client,
            r#"
spec:
  ports: [{name: sentinel, port: 26379, targetPort: sentinel, protocol: TCP}]
  selector: {app.kubernetes.io/name: redsess, app.kubernetes.io/instance: cache, app.kubernetes.io/component: sentinel}
"#,
        );
        assert!(client["spec"].get("clusterIP").is_none());
        assert_contains(
            &out[4].to_json(),
            "spec: {maxUnavailable: 1, selector: {matchLabels: {app.kubernetes.io/component: sentinel, \
             app.kubernetes.io/instance: cache, app.kubernetes.io/name: redsess}}}",
        );
    }

    #[test]
    fn the_statefulset_runs_sentinel_restricted_and_spread() {
        let out = replicated();
        assert_contains(
            &out[1].to_json(),
            r#"
spec:
  serviceName: cache-sentinel-headless
  replicas: 3
  podManagementPolicy: Parallel
  template:
    spec:
      automountServiceAccountToken: false
      enableServiceLinks: false
      securityContext: {runAsNonRoot: true, seccompProfile: {type: RuntimeDefault}}
      affinity:
        podAntiAffinity:
          preferredDuringSchedulingIgnoredDuringExecution:
          - weight: 100
            podAffinityTerm:
              topologyKey: kubernetes.io/hostname
              labelSelector:
                matchLabels: {app.kubernetes.io/name: redsess, app.kubernetes.io/instance: cache,
                              app.kubernetes.io/component: sentinel}
      containers:
      - name: sentinel
        image: docker.io/library/redis:7.4.2-alpine
        command: [sh, /etc/sentinel/start-sentinel.sh]
        ports: [{name: sentinel, containerPort: 26379, protocol: TCP}]
        readinessProbe: {exec: {command: [sh, /etc/sentinel/ping-sentinel.sh]}}
        livenessProbe: {exec: {command: [sh, /etc/sentinel/ping-sentinel.sh]}}
        securityContext: {readOnlyRootFilesystem: true, allowPrivilegeEscalation: false,
                          capabilities: {drop: [ALL]}}
        volumeMounts:
        - {name: config, mountPath: /etc/sentinel, readOnly: true}
        - {name: auth, mountPath: /etc/redis-auth, readOnly: true}
        - {name: admin-auth, mountPath: /etc/sentinel-auth, readOnly: true}
        - {name: run, mountPath: /run/sentinel}
        - {name: tmp, mountPath: /tmp}
      volumes:
      - {name: config, configMap: {name: cache-sentinel-config}}
      - name: auth
        projected:
          sources:
          - secret: {name: cache-redis-auth, items: [{key: password, path: redsess}]}
          - secret: {name: cache-redis-monitor-auth, items: [{key: password, path: redsess-monitor}]}
      - {name: admin-auth, secret: {secretName: cache-sentinel-auth, items: [{key: password, path: password}]}}
      - {name: run, emptyDir: {medium: Memory, sizeLimit: 16Mi}}
      - {name: tmp, emptyDir: {}}
"#,
        );
        let env = &out[1].to_json()["spec"]["template"]["spec"]["containers"][0]["env"];
        for e in env.as_array().unwrap() {
            assert!(e.get("value").is_none(), "only downward-API variables: {e}");
        }
    }

    #[test]
    fn the_script_monitors_the_primary_with_the_plans_settings() {
        let s = script(&replicated());
        for line in [
            "SENTINEL_HOST=cache-sentinel.isam.svc",
            "SENTINEL_DOMAIN=cache-sentinel-headless.isam.svc",
            "REDIS_DOMAIN=cache-redis-headless.isam.svc",
            "NAMESPACE=isam",
            "QUORUM=2",
            "DOWN_AFTER_MS=5000",
            "FAILOVER_TIMEOUT_MS=60000",
            "AUTH_FILE=/etc/redis-auth/redsess-monitor",
            "SHIM_USER=redsess",
            "ADMIN_USER=redsess-sentinel",
            "ADMIN_AUTH_FILE=/etc/sentinel-auth/password",
            "exec redis-server \"$conf\" --sentinel",
        ] {
            assert!(s.contains(&format!("\n{line}\n")), "{line} missing from\n{s}");
        }
        check_shell_syntax(&s);
    }

    #[test]
    fn sentinel_authenticates_everyone_and_lets_clients_only_read() {
        let out = replicated();
        let s = script(&out);
        for line in [
            "printf 'user default off resetpass -@all\\n'",
            "printf 'sentinel sentinel-user %s\\n' \"$ADMIN_USER\"",
            "printf 'sentinel auth-user %s %s\\n' \"$PRIMARY_NAME\" \"$MONITOR_USER\"",
            "printf 'user %s on %s %s\\n' \"$user\" \"$(conf_string \">$secret\")\" \"$CLIENT_RULES\"",
        ] {
            assert!(s.contains(line), "{line} missing from\n{s}");
        }
        // The client user reads the topology; nothing that changes it is granted.
        let client = s
            .lines()
            .find(|l| l.contains("+sentinel|get-master-addr-by-name"))
            .unwrap();
        for forbidden in [
            "+@all",
            "+sentinel ",
            "+sentinel|set",
            "+sentinel|remove",
            "+sentinel|monitor",
            "+sentinel|reset",
            "+sentinel|failover",
            "+sentinel|config",
        ] {
            assert!(!client.contains(forbidden), "{forbidden} in {client}");
        }
        let Emitted::ConfigMap(c) = &out[0] else { panic!() };
        let ping = &c.data.as_ref().unwrap()["ping-sentinel.sh"];
        assert!(
            ping.contains("password=$(read_secret /etc/sentinel-auth/password)"),
            "{ping}"
        );
        assert!(ping.contains("--user redsess-sentinel"), "{ping}");
        check_shell_syntax(ping);
    }

    #[test]
    fn tls_sentinels_listen_on_tls_only_and_reach_redis_over_tls() {
        let p = plan("  redis: {replicas: 3, tls: {enabled: true}}");
        let observed = crate::build::redis::tests::with_tls(&p);
        let out = build(&p, &owner(), &observed);
        let Emitted::ConfigMap(config) = &out[0] else {
            unreachable!()
        };
        let data = config.data.as_ref().unwrap();
        let listen = &data["listen.conf"];
        assert!(listen.contains("port 0\ntls-port 26379\n"), "{listen}");
        assert!(listen.contains("tls-replication yes\n"), "{listen}");
        assert!(data["start-sentinel.sh"].contains("cat /etc/sentinel/listen.conf"));
        assert!(data["start-sentinel.sh"].contains("CLI_TLS='--tls --cacert /etc/redis-tls/ca.crt'"));
        assert!(data["ping-sentinel.sh"].contains("redis-cli --tls --cacert /etc/redis-tls/ca.crt --user"));
        let sts = out[1].to_json();
        assert_contains(
            &sts["spec"]["template"],
            &format!(
                "metadata: {{annotations: {{redsess.io/tls-certificate: {}}}}}",
                observed.redis_tls.as_ref().unwrap().certificate_digest()
            ),
        );
        assert_eq!(
            sts["spec"]["template"]["spec"]["containers"][0]["volumeMounts"][5]["mountPath"],
            "/etc/redis-tls"
        );
        let Emitted::ConfigMap(plain) = &replicated()[0] else {
            unreachable!()
        };
        assert_eq!(plain.data.as_ref().unwrap()["listen.conf"], "port 26379\n");
    }

    #[test]
    fn config_changes_roll_the_sentinels() {
        let checksum = |out: &[Emitted]| out[1].to_json()["spec"]["template"]["metadata"]["annotations"].clone();
        let slower = build(
            &plan("  redis: {replicas: 3}\n  sentinel: {downAfter: 10s}"),
            &owner(),
            &Observed::default(),
        );
        assert_ne!(checksum(&replicated()), checksum(&slower));
    }
}
