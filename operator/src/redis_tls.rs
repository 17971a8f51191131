//! Key material of Redis and Sentinel TLS (`spec.redis.tls`): the certificate in use and its
//! CA, made or renewed when the operator generates them. It runs between observe and build
//! (it may draw new keys; the builders stay pure) and hands the builders what to write.
//!
//! Generated: a CA (10 years) in `<name>-redis-tls-issuer`, which only the operator reads,
//! and a serving certificate (1 year) for every Redis and Sentinel host in `<name>-redis-tls`,
//! renewed a month before it expires. The CA stays, so clients keep trusting the renewed
//! certificate; the pods roll onto it because its digest is in their template. Named by the
//! user (e.g. written by cert-manager): read as it is, with the same roll when it changes.

use std::collections::BTreeMap;

use k8s_openapi::jiff::{Timestamp, ToSpan};
use rcgen::KeyPair;
use sha2::{Digest, Sha256};

use crate::certificates::{self, NOT_AFTER_ANNOTATION, RENEW_BEFORE_DAYS};
use crate::names;
use crate::validate::{Plan, ValidationError};

/// The generated CA's name (its subject's common name).
pub const CA_NAME: &str = "redsess Redis CA";
/// Annotation on the issuer Secret: when its CA was made (RFC 3339), from which the CA's
/// certificate is rebuilt to sign a renewal.
pub const ISSUED_ANNOTATION: &str = "redsess.io/issued";
/// Pod-template annotation: the digest of the certificate the pods serve (Redis and Sentinel)
/// or trust (the shim), so that a new one rolls them.
pub const CERTIFICATE_ANNOTATION: &str = "redsess.io/tls-certificate";

/// Where Redis and Sentinel pods find `tls.crt`, `tls.key` and `ca.crt`.
pub const SERVER_DIR: &str = "/etc/redis-tls";

/// A Secret as observe read it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SecretContent {
    pub data: BTreeMap<String, Vec<u8>>,
    pub annotations: BTreeMap<String, String>,
}

impl SecretContent {
    fn text(&self, key: &str) -> Option<String> {
        self.data
            .get(key)
            .and_then(|v| String::from_utf8(v.clone()).ok())
            .filter(|s| !s.trim().is_empty())
    }

    fn time(&self, annotation: &str) -> Option<Timestamp> {
        self.annotations.get(annotation)?.parse().ok()
    }
}

/// What observe found of the TLS Secrets.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Found {
    /// The certificate Secret (`plan.redis.tls.certificate_secret`).
    pub certificate: Option<SecretContent>,
    /// The generated CA (`<name>-redis-tls-issuer`), when the operator generates.
    pub issuer: Option<SecretContent>,
}

/// The material the builders use.
#[derive(Debug, Clone, PartialEq)]
pub struct Material {
    /// The CA clients trust (PEM).
    pub ca_pem: String,
    /// The certificate the servers present (PEM).
    pub certificate_pem: String,
    /// Made or renewed in this reconcile: the Secrets to write.
    pub issued: Option<Issued>,
}

impl Material {
    /// Short digest of the servers' certificate, for [`CERTIFICATE_ANNOTATION`].
    pub fn certificate_digest(&self) -> String {
        digest(&self.certificate_pem)
    }

    /// Short digest of the CA, for the shim's [`CERTIFICATE_ANNOTATION`].
    pub fn ca_digest(&self) -> String {
        digest(&self.ca_pem)
    }
}

fn digest(pem: &str) -> String {
    Sha256::digest(pem.as_bytes())[..12]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[derive(Debug, Clone, PartialEq)]
pub struct Issued {
    pub key_pem: String,
    pub not_after: Timestamp,
    /// A CA made in this reconcile (the issuer Secret did not exist): its key and when.
    pub new_ca: Option<(String, Timestamp)>,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Unusable(#[from] ValidationError),
    #[error("cannot make the Redis TLS certificate: {0}")]
    Generate(#[from] rcgen::Error),
}

/// Every name a Redis or Sentinel server is reached by: each pod through its headless
/// Service, the client Services (with and without the cluster domain), and the loopback the
/// probes use.
pub fn hosts(plan: &Plan) -> Vec<String> {
    let mut services = vec![names::redis(&plan.name), names::redis_headless(&plan.name)];
    if plan.sentinel.is_some() {
        services.push(names::sentinel(&plan.name));
        services.push(crate::build::sentinel::sentinel_headless(&plan.name));
    }
    let mut out = Vec::new();
    for service in &services {
        let host = names::service_host(service, &plan.namespace);
        out.push(format!("*.{host}"));
        out.push(format!("{host}.cluster.local"));
        out.push(format!("*.{host}.cluster.local"));
        out.push(host);
    }
    out.push("localhost".into());
    out.push("127.0.0.1".into());
    out.sort();
    out.dedup();
    out
}

/// The material for `plan` at `now`: `None` when TLS is off, or when the Secret the user
/// names does not exist yet (reported as missing elsewhere) or cert-manager has not written it.
pub fn prepare(plan: &Plan, found: &Found, now: Timestamp) -> Result<Option<Material>, Error> {
    let Some(tls) = &plan.redis.tls else {
        return Ok(None);
    };
    if !tls.generate {
        let Some(secret) = &found.certificate else {
            return Ok(None);
        };
        let field = match tls.issuer {
            Some(_) => "spec.redis.tls.issuerRef",
            None => "spec.redis.tls.certificateSecret",
        };
        let unusable =
            |problem: String| ValidationError::new(field, format!("Secret {} {problem}", tls.certificate_secret));
        for key in ["tls.crt", "tls.key"] {
            if secret.text(key).is_none() {
                return Err(unusable(format!("has no {key}")).into());
            }
        }
        let ca_pem = secret.text("ca.crt").ok_or_else(|| {
            unusable("has no ca.crt: clients need the CA that signed tls.crt (cert-manager writes it for CA and self-signed issuers)".into())
        })?;
        return Ok(Some(Material {
            ca_pem,
            certificate_pem: secret.text("tls.crt").unwrap_or_default(),
            issued: None,
        }));
    }

    // Generated: the CA first.
    let issuer_secret = names::redis_tls_issuer_secret(&plan.name);
    let (ca_pem, ca_key, ca_issued, new_ca) = match &found.issuer {
        Some(issuer) => {
            let unusable = |problem: &str| {
                ValidationError::new(
                    "spec.redis.tls",
                    format!("Secret {issuer_secret} {problem}: delete it to make a new CA (every client must then trust the new ca.crt)"),
                )
            };
            let ca_pem = issuer.text("ca.crt").ok_or_else(|| unusable("has no ca.crt"))?;
            let key = issuer
                .text("ca.key")
                .and_then(|k| KeyPair::from_pem(&k).ok())
                .ok_or_else(|| unusable("has no usable ca.key"))?;
            let issued = issuer
                .time(ISSUED_ANNOTATION)
                .ok_or_else(|| unusable(&format!("has no {ISSUED_ANNOTATION} annotation")))?;
            (ca_pem, key, issued, false)
        }
        None => {
            let (pem, key) = certificates::new_ca(CA_NAME, now)?;
            (pem, KeyPair::from_pem(&key)?, now, true)
        }
    };

    // Then the serving certificate: kept while it is from this CA and not due.
    if let Some(current) = found.certificate.as_ref().filter(|_| !new_ca) {
        let due = current
            .time(NOT_AFTER_ANNOTATION)
            .is_none_or(|t| t < now + (RENEW_BEFORE_DAYS * 24).hours());
        let same_ca = current.text("ca.crt").as_deref() == Some(ca_pem.as_str());
        if let (Some(certificate_pem), false, true) = (current.text("tls.crt"), due, same_ca) {
            return Ok(Some(Material {
                ca_pem,
                certificate_pem,
                issued: None,
            }));
        }
    }
    let (certificate_pem, key_pem, not_after) = certificates::serving(&hosts(plan), &ca_key, CA_NAME, ca_issued, now)?;
    Ok(Some(Material {
        ca_pem,
        certificate_pem,
        issued: Some(Issued {
            key_pem,
            not_after,
            new_ca: new_ca.then(|| (ca_key.serialize_pem(), ca_issued)),
        }),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::redis::tests::plan;
    use crate::certificates::tests::verifies_at;

    /// Verified a day after `now()`.
    fn verifies(cert: &str, ca: &str, host: &str) -> bool {
        verifies_at(cert, ca, host, now().as_second() as u64 + 86_400)
    }

    fn now() -> Timestamp {
        Timestamp::from_second(1_800_000_000).unwrap()
    }

    /// The Secrets as the builders would write them from `material`.
    fn written(material: &Material) -> Found {
        let issued = material.issued.as_ref().unwrap();
        let certificate = SecretContent {
            data: BTreeMap::from([
                ("tls.crt".into(), material.certificate_pem.clone().into_bytes()),
                ("tls.key".into(), issued.key_pem.clone().into_bytes()),
                ("ca.crt".into(), material.ca_pem.clone().into_bytes()),
            ]),
            annotations: BTreeMap::from([(NOT_AFTER_ANNOTATION.into(), issued.not_after.to_string())]),
        };
        let (ca_key, when) = issued.new_ca.clone().unwrap();
        let issuer = SecretContent {
            data: BTreeMap::from([
                ("ca.crt".into(), material.ca_pem.clone().into_bytes()),
                ("ca.key".into(), ca_key.into_bytes()),
            ]),
            annotations: BTreeMap::from([(ISSUED_ANNOTATION.into(), when.to_string())]),
        };
        Found {
            certificate: Some(certificate),
            issuer: Some(issuer),
        }
    }

    #[test]
    fn off_means_nothing() {
        assert_eq!(prepare(&plan("  {}"), &Found::default(), now()).unwrap(), None);
    }

    #[test]
    fn generated_material_is_made_once_kept_and_renewed_under_the_same_ca() {
        let p = plan("  redis: {replicas: 3, tls: {enabled: true}}");
        let first = prepare(&p, &Found::default(), now()).unwrap().unwrap();
        let issued = first.issued.clone().unwrap();
        assert!(issued.new_ca.is_some());
        for host in [
            "cache-redis-1.cache-redis-headless.isam.svc",
            "cache-redis.isam.svc",
            "cache-sentinel-2.cache-sentinel-headless.isam.svc.cluster.local",
            "cache-sentinel.isam.svc",
            "127.0.0.1",
        ] {
            assert!(verifies(&first.certificate_pem, &first.ca_pem, host), "{host}");
        }
        assert!(!verifies(&first.certificate_pem, &first.ca_pem, "evil.isam.svc"));

        // Found again: kept as it is, nothing written.
        let found = written(&first);
        let again = prepare(&p, &found, now() + 24.hours()).unwrap().unwrap();
        assert_eq!(again.certificate_pem, first.certificate_pem);
        assert_eq!(again.issued, None);

        // A month before it expires: a new certificate from the same CA.
        let late = issued.not_after - (20 * 24).hours();
        let renewed = prepare(&p, &found, late).unwrap().unwrap();
        let renewal = renewed.issued.clone().expect("renewed");
        assert_eq!(renewal.new_ca, None, "the CA stays");
        assert_eq!(renewed.ca_pem, first.ca_pem);
        assert_ne!(renewed.certificate_pem, first.certificate_pem);
        assert_ne!(renewed.certificate_digest(), first.certificate_digest());
        assert!(renewal.not_after > issued.not_after);
        assert!(verifies_at(
            &renewed.certificate_pem,
            &first.ca_pem,
            "cache-redis-0.cache-redis-headless.isam.svc",
            late.as_second() as u64 + 86_400
        ));
    }

    #[test]
    fn a_broken_issuer_is_reported_not_replaced() {
        let p = plan("  redis: {tls: {enabled: true}}");
        let mut found = written(&prepare(&p, &Found::default(), now()).unwrap().unwrap());
        found.issuer.as_mut().unwrap().data.remove("ca.key");
        let error = prepare(&p, &found, now()).unwrap_err().to_string();
        assert!(error.contains("cache-redis-tls-issuer has no usable ca.key"), "{error}");
    }

    #[test]
    fn a_named_secret_is_used_as_it_is_and_checked() {
        let p = plan("  redis: {tls: {enabled: true, certificateSecret: my-tls}}");
        assert_eq!(
            prepare(&p, &Found::default(), now()).unwrap(),
            None,
            "missing: reported elsewhere"
        );
        let generated = prepare(&plan("  redis: {tls: {enabled: true}}"), &Found::default(), now())
            .unwrap()
            .unwrap();
        let mut found = written(&generated);
        found.issuer = None;
        let material = prepare(&p, &found, now()).unwrap().unwrap();
        assert_eq!(material.ca_pem, generated.ca_pem);
        assert_eq!(material.issued, None, "never written by the operator");
        found.certificate.as_mut().unwrap().data.remove("ca.crt");
        let error = prepare(&p, &found, now()).unwrap_err().to_string();
        assert!(
            error.starts_with("spec.redis.tls.certificateSecret: Secret my-tls has no ca.crt"),
            "{error}"
        );
    }
}
