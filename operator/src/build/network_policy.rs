//! The NetworkPolicies that fence in Redis and Sentinel: only this SessionCache's own pods
//! (shim, Sentinel, the other Redis pods for replication), the operator, and the reverse
//! proxies that opted in ([`CLIENT_LABEL`] or a client's podSelector) may open connections to
//! port 6379, and the same pods to Sentinel's 26379. The ACL password is still required; this
//! keeps everyone else from even trying. Sentinel is fenced too: whoever can talk to it can
//! tell it that another host is the primary, and the shims would follow.

use std::collections::BTreeMap;

use k8s_openapi::api::networking::v1::{
    NetworkPolicy, NetworkPolicyIngressRule, NetworkPolicyPeer, NetworkPolicyPort, NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::build::sidecar::SIDECAR_LABEL;
use crate::build::{metadata, Emitted};
use crate::names::{self, component};
use crate::validate::Plan;

/// The label a reverse-proxy pod carries, with the SessionCache's name as value, to use this
/// SessionCache's Redis natively (WebSEAL `[redis]` clients, IBM Application Gateway):
/// `redsess.io/client: <sessioncache name>`, on pods in the SessionCache's namespace. Proxies
/// that talk DSC to the shim need no label: only the shim talks to Redis for them.
pub const CLIENT_LABEL: &str = "redsess.io/client";

/// Label of the operator's own pods (any namespace).
const OPERATOR_NAME_LABEL: (&str, &str) = ("app.kubernetes.io/name", names::MANAGER);

/// The Redis policy, and the Sentinel policy when Redis is replicated.
pub fn build(plan: &Plan, owner: &OwnerReference) -> Vec<Emitted> {
    let pods = |labels: BTreeMap<String, String>| NetworkPolicyPeer {
        pod_selector: Some(match_labels(labels)),
        ..NetworkPolicyPeer::default()
    };
    let own = |component: &str| pods(names::selector(&plan.name, component));
    let port = |number: i32| {
        Some(vec![NetworkPolicyPort {
            protocol: Some("TCP".into()),
            port: Some(IntOrString::Int(number)),
            ..NetworkPolicyPort::default()
        }])
    };

    // In Sidecar mode the shim runs in the proxies' pods, which the webhook labels.
    let shims = match &plan.shim.sidecar {
        None => own(component::SHIM),
        Some(_) => pods(BTreeMap::from([(SIDECAR_LABEL.to_string(), plan.name.clone())])),
    };
    let components = vec![
        shims,
        own(component::SENTINEL),
        // Replicas connect to the primary; Redis pods ask Sentinel for it at start.
        own(component::REDIS),
        // The operator, wherever it runs (it reads replication roles).
        NetworkPolicyPeer {
            namespace_selector: Some(LabelSelector::default()),
            pod_selector: Some(match_labels(BTreeMap::from([(
                OPERATOR_NAME_LABEL.0.to_string(),
                OPERATOR_NAME_LABEL.1.to_string(),
            )]))),
            ..NetworkPolicyPeer::default()
        },
    ];
    // Labelled pods, and the pods each native client's podSelector names (IBM's operators
    // fix their pods' labels, so the label cannot be the only way in).
    let mut clients = vec![pods(BTreeMap::from([(CLIENT_LABEL.to_string(), plan.name.clone())]))];
    clients.extend(plan.clients.iter().filter_map(|c| {
        c.pod_selector.clone().map(|selector| NetworkPolicyPeer {
            pod_selector: Some(selector),
            ..NetworkPolicyPeer::default()
        })
    }));
    let policy = |name: String, component: &str, number: i32| {
        Emitted::NetworkPolicy(NetworkPolicy {
            metadata: metadata(plan, name, component, owner),
            spec: Some(NetworkPolicySpec {
                pod_selector: Some(match_labels(names::selector(&plan.name, component))),
                policy_types: Some(vec!["Ingress".into()]),
                ingress: Some(vec![
                    NetworkPolicyIngressRule {
                        from: Some(components.clone()),
                        ports: port(number),
                    },
                    NetworkPolicyIngressRule {
                        from: Some(clients.clone()),
                        ports: port(number),
                    },
                ]),
                ..NetworkPolicySpec::default()
            }),
        })
    };
    let mut out = vec![policy(names::redis(&plan.name), component::REDIS, names::REDIS_PORT)];
    if plan.sentinel.is_some() {
        out.push(policy(
            names::sentinel(&plan.name),
            component::SENTINEL,
            names::SENTINEL_PORT,
        ));
    }
    out
}

fn match_labels(labels: BTreeMap<String, String>) -> LabelSelector {
    LabelSelector {
        match_labels: Some(labels),
        ..LabelSelector::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::redis::tests::{owner, plan};

    #[test]
    fn only_own_pods_the_operator_and_labelled_clients_reach_redis() {
        let policies = build(&plan("  {}"), &owner());
        assert_eq!(policies.len(), 1, "no Sentinel, no Sentinel policy");
        let policy = policies.into_iter().next().unwrap();
        let expected: serde_json::Value = serde_yaml::from_str(
            r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: cache-redis
  namespace: isam
  labels:
    app.kubernetes.io/name: redsess
    app.kubernetes.io/instance: cache
    app.kubernetes.io/component: redis
    app.kubernetes.io/managed-by: redsess-operator
  ownerReferences:
  - apiVersion: redsess.io/v1alpha1
    kind: SessionCache
    name: cache
    uid: 5f1c2d3e-0000-4000-8000-000000000001
    controller: true
    blockOwnerDeletion: true
spec:
  podSelector:
    matchLabels: {app.kubernetes.io/name: redsess, app.kubernetes.io/instance: cache, app.kubernetes.io/component: redis}
  policyTypes: [Ingress]
  ingress:
  - from:
    - podSelector:
        matchLabels: {app.kubernetes.io/name: redsess, app.kubernetes.io/instance: cache, app.kubernetes.io/component: shim}
    - podSelector:
        matchLabels: {app.kubernetes.io/name: redsess, app.kubernetes.io/instance: cache, app.kubernetes.io/component: sentinel}
    - podSelector:
        matchLabels: {app.kubernetes.io/name: redsess, app.kubernetes.io/instance: cache, app.kubernetes.io/component: redis}
    - namespaceSelector: {}
      podSelector:
        matchLabels: {app.kubernetes.io/name: redsess-operator}
    ports: [{protocol: TCP, port: 6379}]
  - from:
    - podSelector:
        matchLabels: {redsess.io/client: cache}
    ports: [{protocol: TCP, port: 6379}]
"#,
        )
        .unwrap();
        assert_eq!(policy.to_json(), expected);
    }
}

#[cfg(test)]
mod client_selectors {
    use super::*;
    use crate::build::redis::tests::{owner, plan};
    use crate::validate::validate;

    /// IBM's operators fix their pods' labels: a native client names the labels its pods
    /// already carry, and those pods are admitted beside labelled ones.
    #[test]
    fn a_native_clients_pod_selector_is_admitted_to_redis() {
        let p = plan(
            "  clients:\n  - {name: gw, kind: IAG, podSelector: {matchLabels: {app: iag-edge}}}\n  \
             - {name: web, kind: WebSEALRedis, podSelector: {matchLabels: {app: isamwebseal, kind: webseal}}}",
        );
        let Emitted::NetworkPolicy(policy) = build(&p, &owner()).remove(0) else {
            unreachable!()
        };
        let clients = policy.spec.unwrap().ingress.unwrap()[1].from.clone().unwrap();
        let selectors: Vec<BTreeMap<String, String>> = clients
            .iter()
            .map(|peer| peer.pod_selector.clone().unwrap().match_labels.unwrap())
            .collect();
        let labels = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
        };
        assert_eq!(
            selectors,
            [
                labels(&[(CLIENT_LABEL, "cache")]),
                labels(&[("app", "iag-edge")]),
                labels(&[("app", "isamwebseal"), ("kind", "webseal")]),
            ]
        );
        assert!(
            clients.iter().all(|peer| peer.namespace_selector.is_none()),
            "own namespace only"
        );
    }

    #[test]
    fn in_sidecar_mode_the_labelled_proxy_pods_reach_redis() {
        let Emitted::NetworkPolicy(policy) = build(&plan("  shim: {mode: Sidecar}"), &owner()).remove(0) else {
            unreachable!()
        };
        let components = policy.spec.unwrap().ingress.unwrap()[0].from.clone().unwrap();
        let first = components[0].pod_selector.clone().unwrap().match_labels.unwrap();
        assert_eq!(
            first,
            BTreeMap::from([(SIDECAR_LABEL.to_string(), "cache".to_string())])
        );
    }

    /// Whoever reaches Sentinel can name another host the primary: the same pods as for Redis,
    /// on 26379, and nobody else.
    #[test]
    fn sentinel_is_fenced_like_redis() {
        let policies = build(&plan("  redis: {replicas: 3}"), &owner());
        let [Emitted::NetworkPolicy(redis), Emitted::NetworkPolicy(sentinel)] = policies.as_slice() else {
            panic!("a Redis and a Sentinel policy: {policies:?}")
        };
        assert_eq!(sentinel.metadata.name.as_deref(), Some("cache-sentinel"));
        let spec = sentinel.spec.as_ref().unwrap();
        assert_eq!(
            spec.pod_selector.as_ref().unwrap().match_labels.as_ref().unwrap()["app.kubernetes.io/component"],
            "sentinel"
        );
        let ingress = spec.ingress.as_ref().unwrap();
        for rule in ingress {
            let ports = rule.ports.as_ref().unwrap();
            assert_eq!(ports[0].port, Some(IntOrString::Int(26379)));
        }
        let peers = |p: &NetworkPolicy| -> Vec<Option<LabelSelector>> {
            p.spec
                .as_ref()
                .unwrap()
                .ingress
                .as_ref()
                .unwrap()
                .iter()
                .flat_map(|r| r.from.clone().unwrap())
                .map(|peer| peer.pod_selector)
                .collect()
        };
        assert_eq!(peers(sentinel), peers(redis), "the same pods as Redis admits");
    }

    #[test]
    fn a_dsc_client_has_no_pod_selector() {
        let error = validate(&crate::fixtures::session_cache(
            "  clients: [{name: web, kind: WebSEALDSC, podSelector: {matchLabels: {app: x}}}]",
            1,
        ))
        .unwrap_err();
        assert_eq!(error.field, "spec.clients[0].podSelector");
    }
}
