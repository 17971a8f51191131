//! The operator's RBAC, `charts/redsess/files/operator-rbac.yaml` (rendered by the Helm chart
//! into its ClusterRole and Role, and from there into `deploy/`), grants every API call the
//! operator makes and nothing beyond them: no wildcard, no verb or resource it does not use,
//! and every rule and verb says why.
//!
//! The required calls are derived from the code where it exports them: the kinds a
//! SessionCache emits (`apply::Kind`, with `Kind::PRUNED` for the ones cleanup lists and
//! deletes), the SessionCache's own group and plural (`crd::SessionCache`), the leader Lease's
//! name (`leader::LEASE_NAME`). The calls no exported list names are in the tables below, each
//! pointing at the code that makes them.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::events::v1::Event;
use redsess_operator::apply::Kind;
use redsess_operator::crd::SessionCache;
use redsess_operator::leader::LEASE_NAME;
use redsess_operator::{certificates, webhook};
use serde::Deserialize;

const RBAC_FILE: &str = "charts/redsess/files/operator-rbac.yaml";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RbacFile {
    /// The ClusterRole: SessionCaches and what they emit live in any namespace.
    cluster_rules: Vec<Rule>,
    /// The Role in the operator's own namespace.
    namespace_rules: Vec<Rule>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Rule {
    api_group: String,
    resource: String,
    #[serde(default)]
    resource_names: Vec<String>,
    reason: String,
    verbs: Vec<VerbEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct VerbEntry {
    verb: String,
    reason: String,
}

/// Where a call is made: in any namespace (ClusterRole) or only in the operator's own namespace
/// (Role), on one named object or on the collection.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Scope {
    Cluster,
    /// One cluster-scoped object, by name.
    ClusterNamed(String),
    OwnNamespace(Option<String>),
}

/// One kind of API call: scope, API group, resource (with subresource), verb.
type Call = (Scope, String, String, String);

fn read_rbac() -> RbacFile {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..").join(RBAC_FILE);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{RBAC_FILE} does not parse: {e}"))
}

/// Every emitted kind. The match is exhaustive on purpose: a new `Kind` does not compile here
/// until it is listed, and then the test asks for its permissions.
fn emitted_kinds() -> Vec<Kind> {
    let kinds = [
        Kind::StatefulSet,
        Kind::Deployment,
        Kind::Service,
        Kind::ConfigMap,
        Kind::Secret,
        Kind::PodDisruptionBudget,
        Kind::NetworkPolicy,
        Kind::Certificate,
    ];
    for kind in kinds {
        match kind {
            Kind::StatefulSet
            | Kind::Deployment
            | Kind::Service
            | Kind::ConfigMap
            | Kind::Secret
            | Kind::PodDisruptionBudget
            | Kind::NetworkPolicy
            | Kind::Certificate => {}
        }
    }
    kinds.to_vec()
}

/// (API group, resource) of an emitted kind, from the operator's own REST path for it:
/// `/api/v1/namespaces/x/configmaps` → ("", "configmaps"),
/// `/apis/apps/v1/namespaces/x/statefulsets` → ("apps", "statefulsets").
fn group_resource(kind: Kind) -> (String, String) {
    let path = kind.collection_path("x");
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match parts.as_slice() {
        ["api", _version, "namespaces", "x", resource] => (String::new(), resource.to_string()),
        ["apis", group, _version, "namespaces", "x", resource] => (group.to_string(), resource.to_string()),
        _ => panic!("unexpected collection path {path} for {kind:?}"),
    }
}

/// GETs of emitted kinds that no exported list names: observe.rs `secrets` reads the metadata of
/// every Secret the spec names (or the operator would generate); observe.rs `workloads` reads the
/// Redis and Sentinel StatefulSets and the shim Deployment for their rollout.
const OBSERVED: [Kind; 3] = [Kind::Secret, Kind::StatefulSet, Kind::Deployment];

/// Every call the operator makes, with the code that makes it.
fn required_calls() -> BTreeMap<Call, &'static str> {
    let mut calls = BTreeMap::new();
    let mut need = |scope: Scope, group: &str, resource: &str, verbs: &[&str], why: &'static str| {
        for verb in verbs {
            calls.insert(
                (scope.clone(), group.to_string(), resource.to_string(), verb.to_string()),
                why,
            );
        }
    };

    for kind in emitted_kinds() {
        let (group, resource) = group_resource(kind);
        // apply.rs apply: server-side apply, a PATCH that the API server also authorizes as
        // `create` when the object does not exist yet.
        need(
            Scope::Cluster,
            &group,
            &resource,
            &["create", "patch"],
            "apply.rs apply (server-side apply)",
        );
        // controller.rs run: `.owns(Api::<K>::all(..))`, a cluster-wide list + watch per kind,
        // Secrets excepted (reading every Secret in the cluster is not worth a faster repair).
        if kind != Kind::Secret {
            need(
                Scope::Cluster,
                &group,
                &resource,
                &["list", "watch"],
                "controller.rs run (owns)",
            );
        }
        if Kind::PRUNED.contains(&kind) {
            need(
                Scope::Cluster,
                &group,
                &resource,
                &["list", "delete"],
                "apply.rs cleanup (Kind::PRUNED)",
            );
        }
        if OBSERVED.contains(&kind) {
            need(
                Scope::Cluster,
                &group,
                &resource,
                &["get"],
                "observe.rs secrets / workloads",
            );
        }
    }

    use kube::Resource as _;
    let group = SessionCache::group(&()).to_string();
    let plural = SessionCache::plural(&()).to_string();
    // controller.rs run: watcher(Api::<SessionCache>::all(..)); reconciles read the watch cache.
    need(
        Scope::Cluster,
        &group,
        &plural,
        &["list", "watch"],
        "controller.rs run (primary watch)",
    );
    // status.rs write: patch_status, server-side apply of the status subresource.
    need(
        Scope::Cluster,
        &group,
        &format!("{plural}/status"),
        &["patch"],
        "status.rs write",
    );

    // controller.rs publish: kube-runtime's Recorder creates events.k8s.io/v1 Events in the
    // SessionCache's namespace, and merge-patches one that repeats (its series count).
    use k8s_openapi::Resource as _;
    need(
        Scope::Cluster,
        Event::GROUP,
        Event::URL_PATH_SEGMENT,
        &["create", "patch"],
        "controller.rs publish (kube-runtime Recorder)",
    );

    // leader.rs: get_opt, replace (update) of the Lease LEASE_NAME, create when it is missing;
    // only in the operator's namespace (POD_NAMESPACE).
    need(
        Scope::OwnNamespace(Some(LEASE_NAME.to_string())),
        Lease::GROUP,
        Lease::URL_PATH_SEGMENT,
        &["get", "update"],
        "leader.rs try_acquire_or_renew / release",
    );
    need(
        Scope::OwnNamespace(None),
        Lease::GROUP,
        Lease::URL_PATH_SEGMENT,
        &["create"],
        "leader.rs try_acquire_or_renew (first replica)",
    );

    // observe.rs sidecar_pods and controller.rs run: pods carrying a sidecar, by label.
    need(
        Scope::Cluster,
        "",
        "pods",
        &["list", "watch"],
        "observe.rs sidecar_pods / controller.rs run (watches)",
    );

    // certificates.rs ensure: the webhook's own key material, one Secret in the operator's
    // namespace; ensure_ca_bundle: the chart's MutatingWebhookConfiguration, by name.
    need(
        Scope::OwnNamespace(Some(certificates::SECRET.to_string())),
        "",
        "secrets",
        &["get", "update"],
        "certificates.rs ensure",
    );
    need(
        Scope::OwnNamespace(None),
        "",
        "secrets",
        &["create"],
        "certificates.rs ensure (first replica)",
    );
    need(
        Scope::ClusterNamed(webhook::CONFIGURATION.to_string()),
        "admissionregistration.k8s.io",
        "mutatingwebhookconfigurations",
        &["get", "patch"],
        "certificates.rs ensure_ca_bundle",
    );
    calls
}

/// Cluster-scoped resources, where a ClusterRole rule may name objects.
const CLUSTER_SCOPED: [&str; 1] = ["mutatingwebhookconfigurations"];

/// What the file grants, with the rule it comes from.
fn granted_calls(rbac: &RbacFile) -> BTreeMap<Call, String> {
    let mut granted = BTreeMap::new();
    for (rules, role) in [
        (&rbac.cluster_rules, "clusterRules"),
        (&rbac.namespace_rules, "namespaceRules"),
    ] {
        for rule in rules {
            let scopes: Vec<Scope> = match (role, rule.resource_names.is_empty()) {
                ("clusterRules", true) => vec![Scope::Cluster],
                ("clusterRules", false) if CLUSTER_SCOPED.contains(&rule.resource.as_str()) => rule
                    .resource_names
                    .iter()
                    .map(|n| Scope::ClusterNamed(n.clone()))
                    .collect(),
                ("clusterRules", false) => panic!(
                    "{RBAC_FILE}: clusterRules {}/{} has resourceNames: a named object in every \
                     namespace is never what the operator needs",
                    rule.api_group, rule.resource
                ),
                (_, true) => vec![Scope::OwnNamespace(None)],
                (_, false) => rule
                    .resource_names
                    .iter()
                    .map(|n| Scope::OwnNamespace(Some(n.clone())))
                    .collect(),
            };
            for verb in &rule.verbs {
                for scope in &scopes {
                    let call = (
                        scope.clone(),
                        rule.api_group.clone(),
                        rule.resource.clone(),
                        verb.verb.clone(),
                    );
                    let origin = format!("{role} {:?}/{} {}", rule.api_group, rule.resource, verb.verb);
                    assert!(
                        granted.insert(call, origin.clone()).is_none(),
                        "{RBAC_FILE}: {origin} is granted twice"
                    );
                }
            }
        }
    }
    granted
}

fn show(call: &Call) -> String {
    let (scope, group, resource, verb) = call;
    let group = if group.is_empty() { "core" } else { group.as_str() };
    match scope {
        Scope::Cluster => format!("{verb} {group}/{resource} (ClusterRole)"),
        Scope::ClusterNamed(name) => format!("{verb} {group}/{resource} named {name} (ClusterRole)"),
        Scope::OwnNamespace(None) => format!("{verb} {group}/{resource} (Role in the operator's namespace)"),
        Scope::OwnNamespace(Some(name)) => {
            format!("{verb} {group}/{resource} named {name} (Role in the operator's namespace)")
        }
    }
}

/// Does `granted` allow `call`? A collection-wide grant covers a call on a named object; a
/// cluster-wide grant covers a call in the operator's namespace.
fn allows(granted: &BTreeMap<Call, String>, call: &Call) -> bool {
    let (scope, group, resource, verb) = call;
    let covering: Vec<Scope> = match scope {
        Scope::Cluster => vec![Scope::Cluster],
        Scope::ClusterNamed(name) => vec![Scope::ClusterNamed(name.clone()), Scope::Cluster],
        Scope::OwnNamespace(None) => vec![Scope::OwnNamespace(None), Scope::Cluster],
        Scope::OwnNamespace(Some(name)) => vec![
            Scope::OwnNamespace(Some(name.clone())),
            Scope::OwnNamespace(None),
            Scope::Cluster,
        ],
    };
    covering
        .into_iter()
        .any(|s| granted.contains_key(&(s, group.clone(), resource.clone(), verb.clone())))
}

#[test]
fn every_call_the_operator_makes_is_granted() {
    let granted = granted_calls(&read_rbac());
    let missing: Vec<String> = required_calls()
        .iter()
        .filter(|(call, _)| !allows(&granted, call))
        .map(|(call, why)| format!("  {}  — needed by {why}", show(call)))
        .collect();
    assert!(
        missing.is_empty(),
        "{RBAC_FILE} does not grant what the operator calls; add (with a reason):\n{}",
        missing.join("\n")
    );
}

#[test]
fn nothing_beyond_those_calls_is_granted() {
    let required = required_calls();
    let extra: Vec<String> = granted_calls(&read_rbac())
        .into_iter()
        .filter(|(call, _)| !required.contains_key(call))
        .map(|(call, origin)| format!("  {}  — from {origin}", show(&call)))
        .collect();
    assert!(
        extra.is_empty(),
        "{RBAC_FILE} grants what the operator never calls (least privilege: remove it, or make the \
         required-calls list of operator/tests/rbac.rs know the new call):\n{}",
        extra.join("\n")
    );
}

#[test]
fn no_wildcards_and_every_rule_and_verb_says_why() {
    const VERBS: [&str; 8] = [
        "get",
        "list",
        "watch",
        "create",
        "update",
        "patch",
        "delete",
        "deletecollection",
    ];
    let rbac = read_rbac();
    let mut problems = Vec::new();
    let mut seen = BTreeSet::new();
    for (role, rules) in [
        ("clusterRules", &rbac.cluster_rules),
        ("namespaceRules", &rbac.namespace_rules),
    ] {
        for rule in rules {
            let what = format!("{role} {:?}/{}", rule.api_group, rule.resource);
            for field in [&rule.api_group, &rule.resource]
                .into_iter()
                .chain(rule.resource_names.iter())
                .chain(rule.verbs.iter().map(|v| &v.verb))
            {
                if field.contains('*') {
                    problems.push(format!("{what}: wildcard {field:?}"));
                }
            }
            if rule.reason.trim().is_empty() {
                problems.push(format!("{what}: no reason"));
            }
            if rule.verbs.is_empty() {
                problems.push(format!("{what}: no verbs"));
            }
            if !seen.insert((role, &rule.api_group, &rule.resource, &rule.resource_names)) {
                problems.push(format!(
                    "{what}: a second rule for the same resource and names; merge them"
                ));
            }
            for verb in &rule.verbs {
                if !VERBS.contains(&verb.verb.as_str()) {
                    problems.push(format!("{what}: unknown verb {:?}", verb.verb));
                }
                if verb.reason.trim().is_empty() {
                    problems.push(format!("{what} {}: no reason", verb.verb));
                }
            }
        }
    }
    assert!(problems.is_empty(), "{RBAC_FILE}:\n  {}", problems.join("\n  "));
}

#[test]
fn the_lease_is_only_reachable_in_the_operators_namespace_and_by_name() {
    use k8s_openapi::Resource as _;
    let rbac = read_rbac();
    let leases = |rules: &[Rule]| {
        rules
            .iter()
            .filter(|r| r.api_group == Lease::GROUP && r.resource == Lease::URL_PATH_SEGMENT)
            .map(|r| {
                (
                    r.resource_names.clone(),
                    r.verbs.iter().map(|v| v.verb.clone()).collect::<Vec<_>>(),
                )
            })
            .collect::<Vec<_>>()
    };
    assert!(
        leases(&rbac.cluster_rules).is_empty(),
        "Leases must not be in the ClusterRole"
    );
    let mut named = leases(&rbac.namespace_rules);
    named.sort();
    assert_eq!(
        named,
        [
            (vec![], vec!["create".to_string()]),
            (
                vec![LEASE_NAME.to_string()],
                vec!["get".to_string(), "update".to_string()]
            ),
        ],
        "get and update only on the Lease {LEASE_NAME}; create (which resourceNames cannot narrow) alone"
    );
}

#[test]
fn the_derived_paths_are_what_the_chart_names() {
    // A guard on group_resource: if the REST path format changed, the derivation above would
    // silently ask for nonsense.
    assert_eq!(
        group_resource(Kind::ConfigMap),
        (String::new(), "configmaps".to_string())
    );
    assert_eq!(
        group_resource(Kind::StatefulSet),
        ("apps".to_string(), "statefulsets".to_string())
    );
    assert_eq!(
        group_resource(Kind::NetworkPolicy),
        ("networking.k8s.io".to_string(), "networkpolicies".to_string())
    );
}
