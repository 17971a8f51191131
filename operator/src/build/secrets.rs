//! The Secrets a SessionCache generates when the user names none: the shim's Redis ACL
//! password (`<name>-redis-auth`, key `password`); the other Redis users' (replication,
//! monitor, each native client: see `acl`), always; the Sentinels' administrator password
//! (`<name>-sentinel-auth`, key `password`, with Sentinel only) and the shim's HTTP Basic
//! credentials (`<name>-shim-auth`, keys `username` and `password`).
//!
//! A generated Secret is emitted only while it does not exist. Once created it is never
//! emitted again, so its value is never regenerated: Redis, the shim and every client keep
//! working across reconciles and operator restarts. (Whoever prunes objects this resource no
//! longer needs must therefore keep these Secrets even though they are no longer emitted.)

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use rand::distr::{Alphanumeric, SampleString};

use crate::build::{acl, metadata, Emitted, Observed};
use crate::names;
use crate::validate::Plan;

/// The user name WebSEAL sends with HTTP Basic (its `basic-auth-user`).
pub const BASIC_AUTH_USER: &str = "webseal";

/// Length of a generated secret value: 32 alphanumeric characters, about 190 bits.
const SECRET_LENGTH: usize = 32;

/// A fresh random secret value. Alphanumeric only, so that it needs no quoting in redis.conf,
/// URLs, WebSEAL stanzas or shell scripts.
pub fn random_secret() -> String {
    Alphanumeric.sample_string(&mut rand::rng(), SECRET_LENGTH)
}

/// A key file for the shim's record encryption with one new key: the format of
/// `redsess-shim keygen` (`<key ID> <base64 of 32 random bytes>`).
pub fn record_key_file() -> String {
    use base64::Engine;
    use rand::RngCore;
    let mut key = [0u8; 32];
    rand::rng().fill_bytes(&mut key);
    let id = format!("k{:08x}", rand::rng().next_u32());
    format!(
        "# Record encryption keys of redsess-shim: the first seals, all open.\n{id} {}\n",
        base64::engine::general_purpose::STANDARD.encode(key)
    )
}

pub fn build(
    plan: &Plan,
    owner: &OwnerReference,
    observed: &Observed,
    new_secret: &mut dyn FnMut() -> String,
) -> Vec<Emitted> {
    let mut out = Vec::new();
    let missing = |name: &str| !observed.existing_secrets.contains(name);

    if plan.redis.generate_password && missing(&plan.redis.password_secret) {
        out.push(opaque(
            plan,
            owner,
            &plan.redis.password_secret,
            [("password", new_secret())],
        ));
    }
    // The other Redis ACL users' passwords (the shim's is above): always generated.
    for user in acl::internal_users(plan).into_iter().chain(acl::native_clients(plan)) {
        if missing(&user.secret) {
            out.push(opaque(plan, owner, &user.secret, [("password", new_secret())]));
        }
    }
    if let Some(sentinel) = plan.sentinel.as_ref().filter(|s| s.generate_password) {
        if missing(&sentinel.password_secret) {
            out.push(opaque(
                plan,
                owner,
                &sentinel.password_secret,
                [("password", new_secret())],
            ));
        }
    }
    if let Some(encryption) = plan.shim.encryption.as_ref().filter(|e| e.generate_keys) {
        if missing(&encryption.keys_secret) {
            out.push(opaque(
                plan,
                owner,
                &encryption.keys_secret,
                [("keys", record_key_file())],
            ));
        }
    }
    if plan.shim.generate_basic_auth && missing(&plan.shim.basic_auth_secret) {
        out.push(opaque(
            plan,
            owner,
            &plan.shim.basic_auth_secret,
            [("username", BASIC_AUTH_USER.to_string()), ("password", new_secret())],
        ));
    }
    out
}

fn opaque<const N: usize>(plan: &Plan, owner: &OwnerReference, name: &str, values: [(&str, String); N]) -> Emitted {
    Emitted::Secret(Secret {
        metadata: metadata(plan, name.to_string(), names::component::SECRET, owner),
        type_: Some("Opaque".into()),
        // stringData: the API server encodes it into `data`; the values stay readable here.
        string_data: Some(
            values
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect::<BTreeMap<_, _>>(),
        ),
        ..Secret::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::redis::tests::{owner, plan};

    /// Hands out `secret-1`, `secret-2`, … so tests can see which value went where.
    fn counter() -> impl FnMut() -> String {
        let mut n = 0;
        move || {
            n += 1;
            format!("secret-{n}")
        }
    }

    fn yaml(objects: &[Emitted]) -> Vec<serde_yaml::Value> {
        objects
            .iter()
            .map(|o| serde_yaml::to_value(o.to_json()).unwrap())
            .collect()
    }

    #[test]
    fn absent_secrets_are_generated() {
        let mut next = counter();
        let out = build(&plan("  {}"), &owner(), &Observed::default(), &mut next);
        let expected: Vec<serde_yaml::Value> = serde_yaml::from_str(
            r#"
- apiVersion: v1
  kind: Secret
  type: Opaque
  metadata:
    name: cache-redis-auth
    namespace: isam
    labels:
      app.kubernetes.io/name: redsess
      app.kubernetes.io/instance: cache
      app.kubernetes.io/component: secret
      app.kubernetes.io/managed-by: redsess-operator
    ownerReferences:
    - apiVersion: redsess.io/v1alpha1
      kind: SessionCache
      name: cache
      uid: 5f1c2d3e-0000-4000-8000-000000000001
      controller: true
      blockOwnerDeletion: true
  stringData:
    password: secret-1
- apiVersion: v1
  kind: Secret
  type: Opaque
  metadata:
    name: cache-shim-auth
    namespace: isam
    labels:
      app.kubernetes.io/name: redsess
      app.kubernetes.io/instance: cache
      app.kubernetes.io/component: secret
      app.kubernetes.io/managed-by: redsess-operator
    ownerReferences:
    - apiVersion: redsess.io/v1alpha1
      kind: SessionCache
      name: cache
      uid: 5f1c2d3e-0000-4000-8000-000000000001
      controller: true
      blockOwnerDeletion: true
  stringData:
    username: webseal
    password: secret-4
"#,
        )
        .unwrap();
        let got = yaml(&out);
        assert_eq!([got[0].clone(), got[3].clone()], expected[..]);
        // Between them, the other Redis users' passwords (build::acl), each its own value.
        let names: Vec<_> = out.iter().map(|o| o.name().to_string()).collect();
        assert_eq!(
            names,
            [
                "cache-redis-auth",
                "cache-redis-replication-auth",
                "cache-redis-monitor-auth",
                "cache-shim-auth"
            ]
        );
        assert_eq!(got[1]["stringData"]["password"], "secret-2");
        assert_eq!(got[2]["stringData"]["password"], "secret-3");
    }

    #[test]
    fn existing_secrets_are_never_regenerated() {
        let all = [
            "cache-redis-auth",
            "cache-redis-replication-auth",
            "cache-redis-monitor-auth",
            "cache-shim-auth",
        ];
        let observed = Observed {
            existing_secrets: all.iter().map(|s| s.to_string()).collect(),
        };
        let mut calls = 0;
        let mut next = || {
            calls += 1;
            random_secret()
        };
        assert!(build(&plan("  {}"), &owner(), &observed, &mut next).is_empty());
        assert_eq!(calls, 0, "no value is drawn for a Secret that exists");

        // Only the missing one comes back.
        let observed = Observed {
            existing_secrets: all[..3].iter().map(|s| s.to_string()).collect(),
        };
        let out = build(&plan("  {}"), &owner(), &observed, &mut counter());
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].name(), "cache-shim-auth");
    }

    #[test]
    fn sentinel_gets_its_own_password() {
        let replicated = "  redis: {replicas: 3}";
        let names = |p: &Plan, observed: &Observed| -> Vec<String> {
            build(p, &owner(), observed, &mut counter())
                .iter()
                .map(|o| o.name().to_string())
                .collect()
        };
        let p = plan(replicated);
        let sentinel = |out: Vec<String>| out.into_iter().filter(|n| n.contains("sentinel")).collect::<Vec<_>>();
        assert_eq!(sentinel(names(&p, &Observed::default())), ["cache-sentinel-auth"]);
        let observed = Observed {
            existing_secrets: ["cache-sentinel-auth".to_string()].into(),
        };
        assert!(sentinel(names(&p, &observed)).is_empty());
        let named = plan(&format!("{replicated}\n  sentinel: {{passwordSecret: my-sentinel}}"));
        assert!(sentinel(names(&named, &Observed::default())).is_empty());
        assert_eq!(named.sentinel.unwrap().password_secret, "my-sentinel");
    }

    #[test]
    fn secrets_the_user_names_are_left_alone() {
        let p = plan("  redis: {passwordSecret: my-redis}\n  shim: {security: {basicAuthSecret: my-basic}}");
        // Absent or not, they are the user's to create: the operator only reads them (and
        // generates the other Redis users' passwords, which have no spec field).
        let names: Vec<_> = build(&p, &owner(), &Observed::default(), &mut counter())
            .iter()
            .map(|o| o.name().to_string())
            .collect();
        assert_eq!(names, ["cache-redis-replication-auth", "cache-redis-monitor-auth"]);
    }

    #[test]
    fn a_sealing_cache_gets_a_key_file_once() {
        let p = plan("  shim: {encryption: {mode: SealMigrating}}");
        let out = build(&p, &owner(), &Observed::default(), &mut counter());
        let keys = out
            .iter()
            .find(|o| o.name() == "cache-record-keys")
            .expect("the key Secret");
        let file = yaml(std::slice::from_ref(keys))[0]["stringData"]["keys"]
            .as_str()
            .unwrap()
            .to_string();
        let line = file.lines().find(|l| !l.starts_with('#')).unwrap();
        let (id, key) = line.split_once(' ').unwrap();
        assert!(id.starts_with('k') && id.len() == 9, "{line}");
        use base64::Engine;
        assert_eq!(base64::engine::general_purpose::STANDARD.decode(key).unwrap().len(), 32);
        assert_ne!(record_key_file(), record_key_file());
        let observed = Observed {
            existing_secrets: ["cache-record-keys".to_string()].into(),
        };
        assert!(build(&p, &owner(), &observed, &mut counter())
            .iter()
            .all(|o| o.name() != "cache-record-keys"));
        // Plain: no keys.
        assert!(build(&plan("  {}"), &owner(), &Observed::default(), &mut counter())
            .iter()
            .all(|o| o.name() != "cache-record-keys"));
    }

    #[test]
    fn random_secrets_are_long_alphanumeric_and_differ() {
        let a = random_secret();
        let b = random_secret();
        assert_eq!(a.len(), 32);
        assert!(a.bytes().all(|c| c.is_ascii_alphanumeric()));
        assert_ne!(a, b);
    }
}
