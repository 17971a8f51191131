//! The Redis ACL: the default user off and one user per consumer, each with only the commands
//! and keys it needs and its own password Secret (key `password`):
//!
//! - `redsess`, the shim: the commands of its Lua scripts and calls, keys and channels under
//!   its prefix `redsess:`; the Secret `spec.redis.passwordSecret` (or `<cache>-redis-auth`).
//! - `redsess-replication`: what a replica sends its primary (PSYNC, REPLCONF, PING).
//! - `redsess-monitor`: Sentinel's user on Redis (the set Redis documents for Sentinel), which
//!   the start scripts and probes also use (ROLE, PING).
//! - `client-<name>` for each native client (WebSEALRedis, IAG): the commands IBM lists for the
//!   reverse proxy's Redis session cache, keys under that product's prefix.
//!
//! Every pod that writes an ACL mounts the passwords it needs as one projected volume, a file
//! per user at `/etc/redis-auth/<user>`.

use k8s_openapi::api::core::v1::{KeyToPath, ProjectedVolumeSource, SecretProjection, Volume, VolumeProjection};

use crate::build::client_config::{iag_key_prefix, webseal_key_prefix};
use crate::build::shim::KEY_PREFIX;
use crate::crd::ClientKind;
use crate::names;
use crate::validate::Plan;

/// Where the passwords are mounted: one file per user.
pub const AUTH_DIR: &str = "/etc/redis-auth";

/// The commands the shim sends, directly and from its Lua scripts (shim/src/store/redis.rs),
/// and ROLE, with which its Sentinel client checks that the node named is the primary.
/// CLIENT SETINFO is left out: Redis 7.0 does not know it (an unknown name in an ACL stops
/// Redis), and the client ignores its refusal.
const SHIM_COMMANDS: &str =
    "+ping +auth +hello +client|setname +role +evalsha +script|load +hmget +hget +hgetall +hset \
     +hdel +exists +del +pttl +pexpire +pexpireat +zadd +zrem +zrange +zrangebyscore +zscore +zcard +hexists +hsetnx +sadd +smembers +scan +publish +wait +info \
     +subscribe +unsubscribe";

/// What a replica sends its primary.
const REPLICATION_COMMANDS: &str = "+psync +replconf +ping";

/// Sentinel's needs, as Redis documents them, and ROLE for the scripts.
const MONITOR_COMMANDS: &str = "+multi +exec +slaveof +replicaof +ping +subscribe +config|rewrite +role +publish \
     +info +client|setname +client|kill +script|kill";

/// IBM's list for the reverse proxy's Redis session cache and its Lua scripts ("Redis
/// integration requirements for session management", IBM Support 7106741): the base, proxy
/// and session commands, and those its scripts run. Channels are not restricted: IBM names
/// none (client-side caching uses Redis's own), and none carries session data.
const NATIVE_CLIENT_COMMANDS: &str = "+auth +role +get +set +del +ping +eval +evalsha +client|setname +client|list \
     +client|id +client|tracking +subscribe +hget +hmset +hgetall +exists +expire +ttl +sadd +scard +smembers +srem";

/// One ACL user: its name, the Secret with its password, and its rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AclUser {
    pub name: String,
    pub secret: String,
    pub rules: String,
}

impl AclUser {
    /// The file with its password in the pods that mount it.
    pub fn password_file(&self) -> String {
        format!("{AUTH_DIR}/{}", self.name)
    }
}

pub fn shim(plan: &Plan) -> AclUser {
    AclUser {
        name: names::REDIS_USER.into(),
        secret: plan.redis.password_secret.clone(),
        rules: format!("resetchannels &{KEY_PREFIX}* ~{KEY_PREFIX}* -@all {SHIM_COMMANDS}"),
    }
}

pub fn replication(plan: &Plan) -> AclUser {
    AclUser {
        name: names::REPLICATION_USER.into(),
        secret: names::redis_replication_secret(&plan.name),
        rules: format!("resetchannels -@all {REPLICATION_COMMANDS}"),
    }
}

pub fn monitor(plan: &Plan) -> AclUser {
    AclUser {
        name: names::MONITOR_USER.into(),
        secret: names::redis_monitor_secret(&plan.name),
        rules: format!("allchannels -@all {MONITOR_COMMANDS}"),
    }
}

/// The user of each native client, in the order of `spec.clients`.
pub fn native_clients(plan: &Plan) -> Vec<AclUser> {
    plan.clients
        .iter()
        .filter_map(|c| {
            let prefix = match c.kind {
                ClientKind::WebSealRedis => webseal_key_prefix(plan),
                ClientKind::Iag => iag_key_prefix(plan),
                ClientKind::WebSealDsc => return None,
            };
            Some(AclUser {
                name: names::client_redis_user(&c.name),
                secret: names::client_redis_secret(&plan.name, &c.name),
                rules: format!("allchannels ~{prefix}* -@all {NATIVE_CLIENT_COMMANDS}"),
            })
        })
        .collect()
}

/// The cache's own users besides the shim: replication and the monitor.
pub fn internal_users(plan: &Plan) -> Vec<AclUser> {
    vec![replication(plan), monitor(plan)]
}

/// Every user of the Redis ACL.
pub fn users(plan: &Plan) -> Vec<AclUser> {
    let mut users = vec![shim(plan)];
    users.extend(internal_users(plan));
    users.extend(native_clients(plan));
    users
}

/// A projected volume with the password of each of `users` as `<user>`. Default file mode:
/// with no fixed UID or fsGroup (restricted-v2), a tighter mode could leave the files
/// unreadable to the container.
pub fn passwords_volume(name: &str, users: &[AclUser]) -> Volume {
    Volume {
        name: name.into(),
        projected: Some(ProjectedVolumeSource {
            sources: Some(
                users
                    .iter()
                    .map(|u| VolumeProjection {
                        secret: Some(SecretProjection {
                            name: u.secret.clone(),
                            items: Some(vec![KeyToPath {
                                key: "password".into(),
                                path: u.name.clone(),
                                ..KeyToPath::default()
                            }]),
                            ..SecretProjection::default()
                        }),
                        ..VolumeProjection::default()
                    })
                    .collect(),
            ),
            ..ProjectedVolumeSource::default()
        }),
        ..Volume::default()
    }
}

/// The shell function the start script calls to write the ACL into redis.conf (it expects
/// `read_secret` and `conf_string`). Each password is read in an assignment of its own, so
/// that a missing or empty file stops the script (`set -e`) instead of writing a user with
/// an empty password.
pub fn write_acl_function(plan: &Plan) -> String {
    let mut out = String::from(
        "# The ACL (build::acl): the default user off, one user per consumer, each password read\n\
         # from its file.\n\
         write_acl() {\n  printf 'user default off resetpass -@all\\n'\n",
    );
    for user in users(plan) {
        out.push_str(&format!(
            "  secret=$(read_secret {file})\n  printf 'user %s on %s %s\\n' {name} \"$(conf_string \">$secret\")\" '{rules}'\n",
            name = user.name,
            file = user.password_file(),
            rules = user.rules,
        ));
    }
    out.push_str("}\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::redis::tests::plan;

    #[test]
    fn one_user_per_consumer_with_its_own_secret() {
        let p = plan(
            "  redis: {replicas: 3}\n  clients: [{name: www, kind: WebSEALRedis}, {name: api, kind: IAG}, {name: dsc, kind: WebSEALDSC}]",
        );
        let users = users(&p);
        let names: Vec<_> = users.iter().map(|u| (u.name.as_str(), u.secret.as_str())).collect();
        assert_eq!(
            names,
            [
                ("redsess", "cache-redis-auth"),
                ("redsess-replication", "cache-redis-replication-auth"),
                ("redsess-monitor", "cache-redis-monitor-auth"),
                ("client-www", "cache-client-www-redis-auth"),
                ("client-api", "cache-client-api-redis-auth"),
            ]
        );
        assert!(users[0].rules.starts_with("resetchannels &redsess:* ~redsess:* -@all "));
        assert!(users[3].rules.contains("~webseal-cache:* "));
        assert!(users[4].rules.contains("~iag-cache:* "));
        // Nobody gets everything, and only the monitor may reconfigure replication.
        for u in &users {
            assert!(!u.rules.contains("+@all") && !u.rules.contains("~*"), "{u:?}");
            assert!(!u.rules.contains("+flushall") && !u.rules.contains("+keys"), "{u:?}");
            assert_eq!(u.rules.contains("+slaveof"), u.name == "redsess-monitor", "{u:?}");
        }
    }

    #[test]
    fn the_acl_function_reads_each_password_from_its_file() {
        let f = write_acl_function(&plan("  clients: [{name: www, kind: WebSEALRedis}]"));
        assert!(f.contains("printf 'user default off resetpass -@all\\n'"), "{f}");
        assert!(
            f.contains("  secret=$(read_secret /etc/redis-auth/client-www)\n"),
            "{f}"
        );
        assert!(f.contains("client-www \"$(conf_string \">$secret\")\""), "{f}");
    }
}
