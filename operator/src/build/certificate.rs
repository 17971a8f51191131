//! The cert-manager `Certificate` of Redis TLS when `spec.redis.tls.issuerRef` names an issuer:
//! every name a Redis or Sentinel server answers to (`redis_tls::hosts`), into the Secret the
//! pods mount. cert-manager issues and renews it; the pods roll when it changes, as with any
//! certificate Secret (see `redis_tls`).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use serde::Serialize;

use crate::build::{metadata, Emitted};
use crate::names::component;
use crate::redis_tls;
use crate::validate::Plan;

/// `cert-manager.io/v1` Certificate, the fields the operator sets.
#[derive(Serialize, Clone, Debug, PartialEq)]
pub struct Certificate {
    pub metadata: ObjectMeta,
    pub spec: CertificateSpec,
}

#[derive(Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CertificateSpec {
    pub secret_name: String,
    pub common_name: String,
    pub dns_names: Vec<String>,
    pub ip_addresses: Vec<String>,
    pub issuer_ref: crate::crd::IssuerRef,
}

pub fn build(plan: &Plan, owner: &OwnerReference) -> Option<Emitted> {
    let tls = plan.redis.tls.as_ref()?;
    let issuer = tls.issuer.clone()?;
    let (ip_addresses, dns_names): (Vec<String>, Vec<String>) = redis_tls::hosts(plan)
        .into_iter()
        .partition(|h| h.parse::<std::net::IpAddr>().is_ok());
    Some(Emitted::Certificate(Certificate {
        metadata: metadata(plan, tls.certificate_secret.clone(), component::REDIS, owner),
        spec: CertificateSpec {
            secret_name: tls.certificate_secret.clone(),
            // The client Service's name; at most 64 characters, as X.509 allows.
            common_name: crate::names::service_host(&crate::names::redis(&plan.name), &plan.namespace),
            dns_names,
            ip_addresses,
            issuer_ref: issuer,
        },
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::redis::tests::{owner, plan};

    #[test]
    fn an_issuer_gets_a_certificate_for_every_server_name() {
        assert!(build(&plan("  redis: {tls: {enabled: true}}"), &owner()).is_none());
        let p = plan("  redis: {replicas: 3, tls: {enabled: true, issuerRef: {name: ca, kind: ClusterIssuer}}}");
        let emitted = build(&p, &owner()).unwrap();
        assert_eq!(
            (emitted.kind(), emitted.api_version()),
            ("Certificate", "cert-manager.io/v1")
        );
        crate::build::redis::tests::assert_contains(
            &emitted.to_json(),
            r#"
apiVersion: cert-manager.io/v1
kind: Certificate
metadata:
  name: cache-redis-tls
  namespace: isam
  ownerReferences: [{kind: SessionCache, name: cache, controller: true}]
spec:
  secretName: cache-redis-tls
  commonName: cache-redis.isam.svc
  ipAddresses: ["127.0.0.1"]
  issuerRef: {name: ca, kind: ClusterIssuer, group: cert-manager.io}
"#,
        );
        let names = emitted.to_json()["spec"]["dnsNames"].clone();
        for name in [
            "*.cache-redis-headless.isam.svc",
            "cache-redis.isam.svc",
            "*.cache-sentinel-headless.isam.svc",
            "cache-sentinel.isam.svc",
            "localhost",
        ] {
            assert!(names.as_array().unwrap().iter().any(|n| n == name), "{name}: {names}");
        }
        // The Secret it fills is the one the pods mount and the key material step reads.
        let own = plan("  redis: {tls: {enabled: true, certificateSecret: mine, issuerRef: {name: ca}}}");
        let tls = own.redis.tls.as_ref().unwrap();
        assert_eq!((tls.certificate_secret.as_str(), tls.generate), ("mine", false));
        assert_eq!(
            build(&own, &owner()).unwrap().to_json()["spec"]["issuerRef"]["kind"],
            "Issuer"
        );
    }
}
