//! The Secrets a SessionCache generates when the user names none: the shim's Redis ACL
//! password (`<name>-redis-auth`, key `password`); the other Redis users' (replication,
//! monitor, each native client: see `acl`), always; the Sentinels' administrator password
//! (`<name>-sentinel-auth`, key `password`, with Sentinel only) and the shim's HTTP Basic
//! credentials (`<name>-shim-auth`, keys `username` and `password`). With Redis TLS, the
//! certificate Secrets the key material step made or renewed, and the CA for clients.
//!
//! A generated Secret is emitted only while it does not exist. Once created it is never
//! emitted again, so its value is never regenerated: Redis, the shim and every client keep
//! working across reconciles and operator restarts. The exceptions are the key material
//! steps' own, each a deliberate change that keeps every client working: a renewed TLS
//! certificate (same CA) and a step of the record key rotation. (Whoever prunes objects this resource no
//! longer needs must therefore keep these Secrets even though they are no longer emitted.)

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use rand::distr::{Alphanumeric, SampleString};

use k8s_openapi::ByteString;

use crate::build::{acl, metadata, Emitted, Observed};
use crate::certificates::NOT_AFTER_ANNOTATION;
use crate::names;
use crate::record_keys;
use crate::redis_tls::{Material, ISSUED_ANNOTATION};
use crate::validate::{Plan, TlsPlan};

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
    record_keys::file_of(&[record_keys::new_key_line()])
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
        } else if let Some(rotated) = &observed.record_keys {
            let mut secret = binary(
                plan,
                owner,
                &encryption.keys_secret,
                "Opaque",
                [("keys", &rotated.file)],
            );
            secret.metadata.annotations = Some(rotated.annotations.clone());
            out.push(Emitted::Secret(secret));
        }
    }
    if let (Some(tls), Some(material)) = (&plan.redis.tls, &observed.redis_tls) {
        out.extend(tls_secrets(plan, owner, tls, material));
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

/// Redis TLS: the certificate and its CA when just made or renewed (see `redis_tls`), and
/// always the CA alone for the shim and the clients, from whichever certificate is in use.
/// As `data`, so that applying the same values again changes nothing.
fn tls_secrets(plan: &Plan, owner: &OwnerReference, tls: &TlsPlan, material: &Material) -> Vec<Emitted> {
    let mut out = Vec::new();
    if let Some(issued) = &material.issued {
        let mut certificate = binary(
            plan,
            owner,
            &tls.certificate_secret,
            "kubernetes.io/tls",
            [
                ("tls.crt", &material.certificate_pem),
                ("tls.key", &issued.key_pem),
                ("ca.crt", &material.ca_pem),
            ],
        );
        annotate(&mut certificate, NOT_AFTER_ANNOTATION, issued.not_after.to_string());
        out.push(Emitted::Secret(certificate));
        if let Some((ca_key, made)) = &issued.new_ca {
            let mut issuer = binary(
                plan,
                owner,
                &names::redis_tls_issuer_secret(&plan.name),
                "Opaque",
                [("ca.crt", &material.ca_pem), ("ca.key", ca_key)],
            );
            annotate(&mut issuer, ISSUED_ANNOTATION, made.to_string());
            // The issuer first: a certificate without its CA's key could never be renewed.
            out.insert(0, Emitted::Secret(issuer));
        }
    }
    out.push(Emitted::Secret(binary(
        plan,
        owner,
        &tls.ca_secret,
        "Opaque",
        [("ca.crt", &material.ca_pem)],
    )));
    out
}

fn binary<const N: usize>(
    plan: &Plan,
    owner: &OwnerReference,
    name: &str,
    type_: &str,
    values: [(&str, &String); N],
) -> Secret {
    Secret {
        metadata: metadata(plan, name.to_string(), names::component::SECRET, owner),
        type_: Some(type_.into()),
        data: Some(
            values
                .into_iter()
                .map(|(k, v)| (k.to_string(), ByteString(v.clone().into_bytes())))
                .collect(),
        ),
        ..Secret::default()
    }
}

fn annotate(secret: &mut Secret, key: &str, value: String) {
    secret
        .metadata
        .annotations
        .get_or_insert_with(BTreeMap::new)
        .insert(key.into(), value);
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
            ..Observed::default()
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
            ..Observed::default()
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
            ..Observed::default()
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
            ..Observed::default()
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
    fn tls_material_is_written_when_issued_and_the_ca_always() {
        let p = plan("  redis: {tls: {enabled: true}}");
        let material = crate::build::redis::tests::with_tls(&p).redis_tls.unwrap();
        let issued = Observed {
            redis_tls: Some(material.clone()),
            ..Observed::default()
        };
        let out = build(&p, &owner(), &issued, &mut counter());
        let tls: Vec<_> = out
            .iter()
            .filter(|o| o.name().contains("tls") || o.name().contains("-ca"))
            .collect();
        let names: Vec<_> = tls.iter().map(|o| o.name()).collect();
        assert_eq!(names, ["cache-redis-tls-issuer", "cache-redis-tls", "cache-redis-ca"]);
        let got = yaml(&tls.into_iter().cloned().collect::<Vec<_>>());
        assert_eq!(got[0]["type"], "Opaque");
        assert!(got[0]["metadata"]["annotations"]["redsess.io/issued"].is_string());
        assert_eq!(got[1]["type"], "kubernetes.io/tls");
        assert!(got[1]["metadata"]["annotations"]["redsess.io/not-after"].is_string());
        let keys = |v: &serde_yaml::Value| -> Vec<String> {
            v["data"]
                .as_mapping()
                .unwrap()
                .keys()
                .map(|k| k.as_str().unwrap().to_string())
                .collect()
        };
        assert_eq!(keys(&got[0]), ["ca.crt", "ca.key"]);
        assert_eq!(keys(&got[1]), ["ca.crt", "tls.crt", "tls.key"]);
        assert_eq!(keys(&got[2]), ["ca.crt"], "the clients' Secret holds no key");

        // Kept (nothing issued): only the CA for the clients.
        let kept = Observed {
            redis_tls: Some(crate::redis_tls::Material {
                issued: None,
                ..material
            }),
            ..Observed::default()
        };
        let names: Vec<_> = build(&p, &owner(), &kept, &mut counter())
            .iter()
            .map(|o| o.name().to_string())
            .filter(|n| n.contains("tls") || n.contains("-ca"))
            .collect();
        assert_eq!(names, ["cache-redis-ca"]);
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
