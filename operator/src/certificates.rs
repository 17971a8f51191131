//! Key material of the admission webhook when the operator makes its own: a CA (10 years) and a
//! serving certificate it signs (1 year), kept in one Secret in the operator's namespace, so
//! every replica serves the same certificate and the MutatingWebhookConfiguration trusts one
//! CA. Any replica creates the Secret when it is missing and renews the serving certificate a
//! month before it expires; writes carry the resourceVersion read, so two replicas never both
//! win. (With cert-manager or OpenShift's service CA, the certificate comes from files instead
//! and none of this runs.)

use std::collections::BTreeMap;

use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::jiff::{Timestamp, ToSpan};
use k8s_openapi::ByteString;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};

use crate::api_error::one_line;

/// The Secret holding `ca.crt`, `ca.key`, `tls.crt`, `tls.key`.
pub const SECRET: &str = "redsess-operator-webhook-tls";
/// Annotation on the Secret: when the serving certificate expires (RFC 3339).
pub const NOT_AFTER_ANNOTATION: &str = "redsess.io/not-after";
const CA_NAME: &str = "redsess-operator webhook CA";
const CA_YEARS: i64 = 10;
const SERVING_DAYS: i64 = 365;
/// Renewed this long before it expires.
pub const RENEW_BEFORE_DAYS: i64 = 30;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot make the webhook's certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("Secret {namespace}/{SECRET} does not hold usable key material: {problem}")]
    Unusable { namespace: String, problem: String },
    #[error("cannot {action} Secret {namespace}/{SECRET}: {}", one_line(.source))]
    Secret {
        action: &'static str,
        namespace: String,
        #[source]
        source: kube::Error,
    },
    #[error("cannot put the CA into MutatingWebhookConfiguration {name}: {}", one_line(.source))]
    CaBundle {
        name: String,
        #[source]
        source: kube::Error,
    },
}

/// What the webhook serves with, and the CA clients must trust.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Material {
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
}

fn ca_params(ca_name: &str, now: Timestamp) -> Result<CertificateParams, rcgen::Error> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name.push(DnType::CommonName, ca_name);
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    // The same CA is rebuilt from its key at renewal: fixed dates from a fixed day.
    params.not_before = rcgen::date_time_ymd(2024, 1, 1);
    let until = now.to_zoned(k8s_openapi::jiff::tz::TimeZone::UTC).date();
    params.not_after = rcgen::date_time_ymd(i32::from(until.year()) + CA_YEARS as i32, 1, 1);
    Ok(params)
}

/// A new CA named `ca_name`: its certificate and its key (PEM).
pub fn new_ca(ca_name: &str, now: Timestamp) -> Result<(String, String), rcgen::Error> {
    let key = KeyPair::generate()?;
    let ca = ca_params(ca_name, now)?.self_signed(&key)?;
    Ok((ca.pem(), key.serialize_pem()))
}

/// A serving certificate for `hosts` (DNS names, wildcards or IP addresses), signed by the
/// CA `ca_name` of `ca_key` made at `ca_issued`; the certificate, its key, and when it expires.
pub fn serving(
    hosts: &[String],
    ca_key: &KeyPair,
    ca_name: &str,
    ca_issued: Timestamp,
    now: Timestamp,
) -> Result<(String, String, Timestamp), rcgen::Error> {
    let ca = ca_params(ca_name, ca_issued)?.self_signed(ca_key)?;
    let mut params = CertificateParams::new(hosts.to_vec())?;
    params
        .distinguished_name
        .push(DnType::CommonName, hosts.first().cloned().unwrap_or_default());
    let not_after = now + (SERVING_DAYS * 24).hours();
    let ymd = |t: Timestamp| {
        let d = t.to_zoned(k8s_openapi::jiff::tz::TimeZone::UTC).date();
        rcgen::date_time_ymd(i32::from(d.year()), d.month() as u8, d.day() as u8)
    };
    params.not_before = ymd(now - 24.hours());
    params.not_after = ymd(not_after);
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, &ca, ca_key)?;
    Ok((cert.pem(), key.serialize_pem(), not_after))
}

/// Fresh key material: a new CA and a serving certificate for `hosts`.
pub fn generate(hosts: &[String], now: Timestamp) -> Result<(Material, String, Timestamp), Error> {
    let ca_key = KeyPair::generate()?;
    let ca = ca_params(CA_NAME, now)?.self_signed(&ca_key)?;
    let (cert_pem, key_pem, not_after) = serving(hosts, &ca_key, CA_NAME, now, now)?;
    Ok((
        Material {
            ca_pem: ca.pem(),
            cert_pem,
            key_pem,
        },
        ca_key.serialize_pem(),
        not_after,
    ))
}

fn secret_data(material: &Material, ca_key_pem: &str) -> BTreeMap<String, ByteString> {
    BTreeMap::from([
        ("ca.crt".to_string(), ByteString(material.ca_pem.clone().into_bytes())),
        ("ca.key".to_string(), ByteString(ca_key_pem.as_bytes().to_vec())),
        (
            "tls.crt".to_string(),
            ByteString(material.cert_pem.clone().into_bytes()),
        ),
        ("tls.key".to_string(), ByteString(material.key_pem.clone().into_bytes())),
    ])
}

fn field(secret: &Secret, key: &str, namespace: &str) -> Result<String, Error> {
    secret
        .data
        .as_ref()
        .and_then(|d| d.get(key))
        .and_then(|v| String::from_utf8(v.0.clone()).ok())
        .ok_or_else(|| Error::Unusable {
            namespace: namespace.into(),
            problem: format!("no {key}"),
        })
}

fn not_after(secret: &Secret) -> Option<Timestamp> {
    secret
        .metadata
        .annotations
        .as_ref()?
        .get(NOT_AFTER_ANNOTATION)?
        .parse()
        .ok()
}

/// The Secret's key material, made or renewed first when needed.
pub async fn ensure(client: &Client, namespace: &str, hosts: &[String]) -> Result<Material, Error> {
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let secret_error = |action| {
        let namespace = namespace.to_string();
        move |source| Error::Secret {
            action,
            namespace,
            source,
        }
    };
    for _ in 0..3 {
        let now = Timestamp::now();
        let existing = api.get_opt(SECRET).await.map_err(secret_error("read"))?;
        let Some(mut secret) = existing else {
            let (material, ca_key, expires) = generate(hosts, now)?;
            let secret = Secret {
                metadata: ObjectMeta {
                    name: Some(SECRET.into()),
                    namespace: Some(namespace.into()),
                    annotations: Some(BTreeMap::from([(
                        NOT_AFTER_ANNOTATION.to_string(),
                        expires.to_string(),
                    )])),
                    labels: Some(BTreeMap::from([(
                        "app.kubernetes.io/managed-by".to_string(),
                        crate::names::MANAGER.to_string(),
                    )])),
                    ..ObjectMeta::default()
                },
                type_: Some("kubernetes.io/tls".into()),
                data: Some(secret_data(&material, &ca_key)),
                ..Secret::default()
            };
            match api.create(&PostParams::default(), &secret).await {
                Ok(_) => {
                    tracing::info!(secret = SECRET, %expires, "made the webhook's CA and serving certificate");
                    return Ok(material);
                }
                // Another replica made it first: use theirs.
                Err(kube::Error::Api(s)) if s.code == 409 => continue,
                Err(source) => return Err(secret_error("create")(source)),
            }
        };
        let material = Material {
            ca_pem: field(&secret, "ca.crt", namespace)?,
            cert_pem: field(&secret, "tls.crt", namespace)?,
            key_pem: field(&secret, "tls.key", namespace)?,
        };
        let due = not_after(&secret).is_none_or(|t| t < now + (RENEW_BEFORE_DAYS * 24).hours());
        if !due {
            return Ok(material);
        }
        let ca_key = KeyPair::from_pem(&field(&secret, "ca.key", namespace)?)?;
        let issued = secret.metadata.creation_timestamp.as_ref().map(|t| t.0).unwrap_or(now);
        let (cert_pem, key_pem, expires) = serving(hosts, &ca_key, CA_NAME, issued, now)?;
        let renewed = Material {
            cert_pem,
            key_pem,
            ..material
        };
        secret.data = Some(secret_data(&renewed, &ca_key.serialize_pem()));
        secret
            .metadata
            .annotations
            .get_or_insert_with(BTreeMap::new)
            .insert(NOT_AFTER_ANNOTATION.into(), expires.to_string());
        match api.replace(SECRET, &PostParams::default(), &secret).await {
            Ok(_) => {
                tracing::info!(secret = SECRET, %expires, "renewed the webhook's serving certificate");
                return Ok(renewed);
            }
            Err(kube::Error::Api(s)) if s.code == 409 => continue,
            Err(source) => return Err(secret_error("update")(source)),
        }
    }
    Err(Error::Unusable {
        namespace: namespace.into(),
        problem: "other replicas kept changing it".into(),
    })
}

/// Puts `ca_pem` into every webhook of the MutatingWebhookConfiguration `name` that does not
/// trust it yet (a JSON Patch per webhook, guarded by a test of its name).
pub async fn ensure_ca_bundle(client: &Client, name: &str, ca_pem: &str) -> Result<(), Error> {
    let api: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    let error = |source| Error::CaBundle {
        name: name.into(),
        source,
    };
    let Some(configuration) = api.get_opt(name).await.map_err(error)? else {
        tracing::warn!(
            configuration = name,
            "no MutatingWebhookConfiguration of that name: nothing calls the webhook"
        );
        return Ok(());
    };
    let wanted = ByteString(ca_pem.as_bytes().to_vec());
    let mut ops = Vec::new();
    for (i, webhook) in configuration.webhooks.iter().flatten().enumerate() {
        if webhook.client_config.ca_bundle.as_ref() != Some(&wanted) {
            ops.push(serde_json::json!({"op": "test", "path": format!("/webhooks/{i}/name"), "value": webhook.name}));
            ops.push(serde_json::json!({"op": "add", "path": format!("/webhooks/{i}/clientConfig/caBundle"), "value": wanted}));
        }
    }
    if ops.is_empty() {
        return Ok(());
    }
    let patch: json_patch::Patch = serde_json::from_value(serde_json::Value::Array(ops)).expect("a JSON Patch");
    api.patch(name, &PatchParams::default(), &Patch::<()>::Json(patch))
        .await
        .map_err(error)?;
    tracing::info!(configuration = name, "put the webhook's CA into its caBundle");
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn a_renewed_certificate_chains_to_the_same_ca() {
        let now = Timestamp::from_second(1_780_000_000).unwrap();
        let hosts = vec![
            "redsess-operator-webhook.redsess-system.svc".to_string(),
            "127.0.0.1".to_string(),
        ];
        let (material, ca_key, expires) = generate(&hosts, now).unwrap();
        assert!(expires > now + (364 * 24).hours());
        let later = now + (340 * 24).hours();
        let (renewed, _, _) = serving(&hosts, &KeyPair::from_pem(&ca_key).unwrap(), CA_NAME, now, later).unwrap();
        for cert in [&material.cert_pem, &renewed] {
            assert!(verifies(cert, &material.ca_pem, "127.0.0.1"), "{cert}");
            assert!(verifies(
                cert,
                &material.ca_pem,
                "redsess-operator-webhook.redsess-system.svc"
            ));
        }
        let (other, _, _) = generate(&hosts, now).unwrap();
        assert!(
            !verifies(&renewed, &other.ca_pem, "127.0.0.1"),
            "another CA does not vouch for it"
        );
    }

    /// rustls's own verification of `cert_pem` for `host`, trusting only `ca_pem`.
    pub(crate) fn verifies(cert_pem: &str, ca_pem: &str, host: &str) -> bool {
        verifies_at(cert_pem, ca_pem, host, 1_809_548_800)
    }

    /// As [`verifies`], at `unix_seconds`.
    pub(crate) fn verifies_at(cert_pem: &str, ca_pem: &str, host: &str, unix_seconds: u64) -> bool {
        use rustls::client::danger::ServerCertVerifier;
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_slice(ca_pem.as_bytes()).unwrap())
            .unwrap();
        let verifier = rustls::client::WebPkiServerVerifier::builder(std::sync::Arc::new(roots))
            .build()
            .unwrap();
        let cert = CertificateDer::from_pem_slice(cert_pem.as_bytes()).unwrap();
        let when = UnixTime::since_unix_epoch(std::time::Duration::from_secs(unix_seconds));
        verifier
            .verify_server_cert(&cert, &[], &ServerName::try_from(host.to_string()).unwrap(), &[], when)
            .is_ok()
    }
}
