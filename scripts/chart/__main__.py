"""Checks the Helm chart charts/redsess and the kustomize base deploy/ made from it (run by
scripts/check-chart, which sets up the venv; all offline, with Helm 4's own engine from
helm-python-sdk):

  schema     the values of ci/ and scripts/chart/values/off.yaml pass values.schema.json, and
             every scripts/chart/values/bad-*.yaml is rejected with the message its
             `expect-rejected` comment names (so the schema can say no);
  options    ci/full-values.yaml sets every option of values.yaml, and every on/off option is
             rendered both ways (full-values.yaml and values/off.yaml);
  lint       `helm lint --strict` finds no warning or error, for the default and the CI values;
  render     the chart renders for the default values, ci/full-values.yaml and values/off.yaml;
             every object passes kubernetes-validate --strict for Kubernetes 1.30 and the newest
             version it knows (the ServiceMonitor, a Prometheus Operator type it does not know,
             against a small schema here); the objects fit together (selectors, names, ports,
             namespaces) and the operator's pod keeps to restricted-v2;
  rbac       the ClusterRole and Role are files/operator-rbac.yaml (which operator/tests/rbac.rs
             checks against the operator's API calls), every rule and verb with a reason;
  crd        files/sessioncaches.redsess.io.yaml is crds/sessioncaches.redsess.io.yaml, and the
             rendered CRD is that file plus labels and helm.sh/resource-policy: keep;
  deploy     deploy/ is what scripts/generate-deploy writes now, each of its objects is valid, and
             `kubectl kustomize deploy/` (when kubectl is there) builds exactly those objects.

Ends with `chart: N passed, M failed` and exits 1 when anything failed."""

import argparse
import copy
import glob
import json
import os
import re
import shutil
import subprocess
import sys
import time

import jsonschema
import yaml

from manifests import kube
from manifests.__main__ import Report, describe

from . import deploy, helm

CHART = deploy.CHART
FULL = os.path.join(CHART, "ci", "full-values.yaml")
HERE = os.path.dirname(os.path.abspath(__file__))
OFF = os.path.join(HERE, "values", "off.yaml")
RBAC_FILE = os.path.join(CHART, "files", "operator-rbac.yaml")
CRD_COPY = os.path.join(CHART, "files", "sessioncaches.redsess.io.yaml")
CLUSTER_SCOPED = {"CustomResourceDefinition", "ClusterRole", "ClusterRoleBinding", "Namespace",
                  "MutatingWebhookConfiguration"}

# The Prometheus Operator's ServiceMonitor (monitoring.coreos.com/v1), reduced to the fields the
# chart writes; kubernetes-validate knows only Kubernetes' own types.
_DURATION = {"type": "string",
             "pattern": r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$"}
_STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
_METADATA = {"type": "object", "additionalProperties": False, "required": ["name", "namespace"],
             "properties": {"name": {"type": "string"}, "namespace": {"type": "string"},
                            "labels": _STRING_MAP, "annotations": _STRING_MAP}}
SERVICE_MONITOR_SCHEMA = {
    "type": "object", "additionalProperties": False, "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "ServiceMonitor"},
        "metadata": _METADATA,
        "spec": {"type": "object", "additionalProperties": False, "required": ["selector", "endpoints"],
                 "properties": {
                     "selector": {"type": "object", "additionalProperties": False, "minProperties": 1,
                                  "properties": {"matchLabels": _STRING_MAP,
                                                 "matchExpressions": {"type": "array"}}},
                     "namespaceSelector": {"type": "object", "additionalProperties": False,
                                           "properties": {"any": {"type": "boolean"},
                                                          "matchNames": {"type": "array",
                                                                         "items": {"type": "string"}}}},
                     "endpoints": {"type": "array", "minItems": 1, "items": {
                         "type": "object", "additionalProperties": False,
                         "properties": {"port": {"type": "string"}, "path": {"type": "string"},
                                        "scheme": {"enum": ["http", "https"]},
                                        "interval": _DURATION, "scrapeTimeout": _DURATION}}}}}}}


# cert-manager's Certificate (cert-manager.io/v1), reduced to the fields the chart writes.
CERTIFICATE_SCHEMA = {
    "type": "object", "additionalProperties": False, "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "cert-manager.io/v1"},
        "kind": {"const": "Certificate"},
        "metadata": _METADATA,
        "spec": {"type": "object", "additionalProperties": False, "required": ["secretName", "issuerRef"],
                 "properties": {
                     "secretName": {"type": "string", "minLength": 1},
                     "dnsNames": {"type": "array", "minItems": 1, "items": {"type": "string"}},
                     "issuerRef": {"type": "object", "additionalProperties": False, "required": ["name"],
                                   "properties": {"name": {"type": "string", "minLength": 1},
                                                  "kind": {"enum": ["Issuer", "ClusterIssuer"]},
                                                  "group": {"const": "cert-manager.io"}}}}}}}

# The Prometheus Operator's PrometheusRule and PodMonitor, reduced to the fields the chart writes.
PROMETHEUS_RULE_SCHEMA = {
    "type": "object", "additionalProperties": False, "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "PrometheusRule"},
        "metadata": _METADATA,
        "spec": {"type": "object", "additionalProperties": False, "required": ["groups"], "properties": {
            "groups": {"type": "array", "minItems": 1, "items": {
                "type": "object", "additionalProperties": False, "required": ["name", "rules"],
                "properties": {"name": {"type": "string", "minLength": 1},
                               "rules": {"type": "array", "minItems": 1, "items": {
                                   "type": "object", "additionalProperties": False,
                                   "required": ["alert", "expr", "labels", "annotations"],
                                   "properties": {
                                       "alert": {"type": "string", "pattern": "^[A-Za-z][A-Za-z0-9]*$"},
                                       "expr": {"type": "string", "minLength": 1},
                                       "for": _DURATION,
                                       "labels": {"type": "object", "required": ["severity"],
                                                  "properties": {"severity": {"enum": ["critical", "warning", "info"]}},
                                                  "additionalProperties": {"type": "string"}},
                                       "annotations": {"type": "object", "required": ["summary", "description"],
                                                       "additionalProperties": {"type": "string"}}}}}}}}}}}}
POD_MONITOR_SCHEMA = {
    "type": "object", "additionalProperties": False, "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "PodMonitor"},
        "metadata": _METADATA,
        "spec": {"type": "object", "additionalProperties": False, "required": ["selector", "podMetricsEndpoints"],
                 "properties": {
                     "selector": SERVICE_MONITOR_SCHEMA["properties"]["spec"]["properties"]["selector"],
                     "namespaceSelector": SERVICE_MONITOR_SCHEMA["properties"]["spec"]["properties"]["namespaceSelector"],
                     "podMetricsEndpoints": {"type": "array", "minItems": 1, "items": {
                         "type": "object", "additionalProperties": False, "required": ["port"],
                         "properties": {"port": {"type": "string"}, "path": {"type": "string"},
                                        "scheme": {"enum": ["http", "https"]}, "interval": _DURATION,
                                        "tlsConfig": {"type": "object"}}}}}}}}

# A Grafana dashboard (the JSON model), reduced to what the chart's dashboard uses: every panel
# a row or a Prometheus time series with queries.
DASHBOARD_SCHEMA = {
    "type": "object", "required": ["title", "uid", "panels", "schemaVersion"],
    "properties": {
        "title": {"type": "string", "minLength": 1}, "uid": {"type": "string", "pattern": "^[a-z0-9-]{1,40}$"},
        "schemaVersion": {"type": "integer", "minimum": 30},
        "panels": {"type": "array", "minItems": 1, "items": {
            "type": "object", "required": ["id", "type", "title", "gridPos"],
            "properties": {
                "id": {"type": "integer"}, "type": {"enum": ["row", "timeseries", "stat"]},
                "title": {"type": "string", "minLength": 1},
                "gridPos": {"type": "object", "required": ["x", "y", "w", "h"],
                            "properties": {k: {"type": "integer", "minimum": 0} for k in "xywh"}},
                "targets": {"type": "array", "items": {"type": "object", "required": ["refId", "expr"],
                                                      "properties": {"expr": {"type": "string", "minLength": 1}}}}},
            "if": {"properties": {"type": {"const": "timeseries"}}},
            "then": {"required": ["targets", "datasource"],
                     "properties": {"targets": {"minItems": 1}}}}}}}

OWN_SCHEMAS = {("monitoring.coreos.com/v1", "ServiceMonitor"): SERVICE_MONITOR_SCHEMA,
               ("monitoring.coreos.com/v1", "PrometheusRule"): PROMETHEUS_RULE_SCHEMA,
               ("monitoring.coreos.com/v1", "PodMonitor"): POD_MONITOR_SCHEMA,
               ("cert-manager.io/v1", "Certificate"): CERTIFICATE_SCHEMA}

ROOT = os.path.dirname(os.path.dirname(HERE))
# Where the metrics the alerts and the dashboard read are registered.
METRIC_SOURCES = {"redsess_shim": os.path.join(ROOT, "shim", "src", "metrics.rs"),
                  "redsess_operator": os.path.join(ROOT, "operator", "src", "metrics.rs")}


def exported_metrics():
    """The series names the shim and the operator export, read from their registries: the
    registered names with their prefix, and the suffixes the exposition adds."""
    names = set()
    for prefix, path in METRIC_SOURCES.items():
        with open(path) as f:
            text = f.read()
        for name in re.findall(r'"([a-z_]+)",\s*"[A-Z]', text) + re.findall(r'register(?:_with_unit)?\(\s*"([a-z_]+)"', text):
            base = f"{prefix}_{name}"
            if "Unit::Seconds" in text and name == "reconcile_duration":
                base += "_seconds"
            names |= {base, base + "_total", base + "_bucket", base + "_count", base + "_sum"}
    return names


def unknown_metrics(expressions, known):
    """The redsess_* series the PromQL expressions name that nothing exports."""
    named = {m for e in expressions for m in re.findall(r"\bredsess_[a-z_]+", e)}
    return sorted(named - known)


def load(path):
    with open(path) as f:
        return yaml.safe_load(f) or {}


def leaves(values, prefix=""):
    """Option paths of a values tree: a non-empty map is walked, anything else is an option."""
    out = {}
    for key, value in values.items():
        path = f"{prefix}.{key}" if prefix else key
        if isinstance(value, dict) and value:
            out.update(leaves(value, path))
        else:
            out[path] = value
    return out


def lookup(values, path):
    node = values
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return KeyError
        node = node[part]
    return node


# ---------------------------------------------------------------------------------------------

def self_tests(report, k8s_versions):
    """The validators must be able to say no, or a green run means nothing."""
    broken = {"apiVersion": "monitoring.coreos.com/v1", "kind": "ServiceMonitor",
              "metadata": {"name": "x", "namespace": "y"},
              "spec": {"selector": {}, "endpoints": [{"port": "metrics", "interval": "often"}], "jobLabels": "x"}}
    found = {p for p, _ in schema_errors(SERVICE_MONITOR_SCHEMA, broken)}
    missed = {"spec", "spec.selector", "spec.endpoints[0].interval"} - found
    report.check("self-test: the ServiceMonitor schema rejects a broken ServiceMonitor",
                 [("missed", ", ".join(sorted(missed)))] if missed else [])
    broken = {"apiVersion": "monitoring.coreos.com/v1", "kind": "PrometheusRule",
              "metadata": {"name": "x", "namespace": "y"},
              "spec": {"groups": [{"name": "g", "rules": [{"alert": "Bad Name", "expr": "up", "for": "soon",
                                                            "labels": {}, "annotations": {"summary": "s"}}]}]}}
    found = {p for p, _ in schema_errors(PROMETHEUS_RULE_SCHEMA, broken)}
    missed = {"spec.groups[0].rules[0].alert", "spec.groups[0].rules[0].for",
              "spec.groups[0].rules[0].labels", "spec.groups[0].rules[0].annotations"} - found
    report.check("self-test: the PrometheusRule schema rejects a broken rule",
                 [("missed", ", ".join(sorted(missed)))] if missed else [])
    broken = {"title": "t", "uid": "u", "schemaVersion": 39,
              "panels": [{"id": 1, "type": "timeseries", "title": "p", "gridPos": {"x": 0, "y": 0, "w": 1, "h": 1}}]}
    report.check("self-test: the dashboard schema rejects a time series without queries",
                 [] if schema_errors(DASHBOARD_SCHEMA, broken) else [("missed", "panels[0].targets")])
    known = exported_metrics()
    report.check("self-test: the shim's and the operator's metrics are read from their registries",
                 [(m, "not found") for m in ("redsess_shim_requests_total", "redsess_shim_redis_up",
                                             "redsess_shim_request_duration_seconds_bucket",
                                             "redsess_operator_reconcile_duration_seconds_bucket")
                  if m not in known])
    report.check("self-test: a metric nothing exports is caught",
                 [] if unknown_metrics(["rate(redsess_shim_requets_total[5m])"], known)
                 else [("missed", "redsess_shim_requets_total")])
    broken = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "x"},
              "spec": {"replicas": "2", "selectr": {}, "template": {}}}
    for v in k8s_versions:
        missed = {"spec", "spec.replicas"} - {p for p, _ in kube.validate(broken, v)}
        report.check(f"self-test: kubernetes-validate --strict rejects a broken Deployment for {v}",
                     [("missed", ", ".join(sorted(missed)))] if missed else [])


def check_schema(report):
    for path in (FULL, os.path.relpath(OFF)):
        try:
            helm.template(CHART, load(path))
            report.ok(f"schema: {path} is accepted")
        except helm.Error as e:
            report.fail(f"schema: {path} is accepted", [("values", str(e).strip())])
    bad = sorted(glob.glob(os.path.join(HERE, "values", "bad-*.yaml")))
    if not bad:
        report.fail("schema: bad values files", [("scripts/chart/values/bad-*.yaml", "none: the check could not fail")])
    for path in bad:
        rel = os.path.relpath(path)
        with open(path) as f:
            m = re.search(r"^#\s*expect-rejected:\s*(.+?)\s*$", f.read(), re.M)
        if not m:
            report.fail(f"schema: {rel}", [("comment", "add `# expect-rejected: <part of the message>`")])
            continue
        try:
            helm.template(CHART, load(path))
            report.fail(f"schema: {rel} is rejected", [("values", "ACCEPTED; values.schema.json must reject it")])
        except helm.Error as e:
            message = " ".join(str(e).split())
            if m.group(1) in message:
                report.ok(f"schema: {rel} is rejected ({m.group(1)})")
            else:
                report.fail(f"schema: {rel} is rejected with `{m.group(1)}`", [("message", message)])


def check_options(report):
    defaults, full, off = load(os.path.join(CHART, "values.yaml")), load(FULL), load(OFF)
    options = leaves(defaults)
    missing = [p for p in options if lookup(full, p) is KeyError]
    report.check(f"options: {FULL} sets all {len(options)} options of values.yaml",
                 [(p, "not set") for p in missing])
    same = [p for p, v in options.items() if p not in missing and lookup(full, p) == v
            and not isinstance(v, bool)]
    report.check(f"options: {FULL} changes every non-boolean option from its default",
                 [(p, f"left at the default {defaults_repr(options[p])}") for p in same])
    one_way = []
    for p, v in options.items():
        if isinstance(v, bool):
            seen = {v, lookup(full, p), lookup(off, p)} - {KeyError}
            if seen != {True, False}:
                one_way.append((p, f"only ever {sorted(seen)}"))
    report.check("options: every on/off option is rendered both ways (defaults, full-values.yaml, values/off.yaml)",
                 one_way)


def defaults_repr(v):
    return repr(v) if not isinstance(v, str) else f"'{v}'"


def check_lint(report):
    for label, values in (("default values", None), (FULL, load(FULL))):
        try:
            findings, failed = helm.lint(CHART, values)
        except helm.Error as e:
            report.fail(f"lint: helm lint --strict {CHART} ({label})", [("lint", str(e).strip())])
            continue
        for severity, path, message in findings:
            if severity == "info":
                print(f"      lint ({label}): [INFO] {path}: {message}")
        report.check(f"lint: helm lint --strict {CHART} ({label}): no warning or error",
                     [(f"{path} [{severity}]", message) for severity, path, message in findings
                      if severity != "info"] if failed else [])


def validate_objects(report, where, objects, k8s_versions, namespace):
    seen = set()
    for source, obj in objects:
        meta = obj.get("metadata") or {}
        problems = []
        key = (obj.get("apiVersion"), obj.get("kind"), meta.get("name"))
        if key in seen:
            problems.append(("metadata.name", "a second object of this kind has this name"))
        seen.add(key)
        if obj.get("kind") in CLUSTER_SCOPED:
            if meta.get("namespace"):
                problems.append(("metadata.namespace", "set on a cluster-scoped object"))
        elif meta.get("namespace") != namespace:
            problems.append(("metadata.namespace", f"{meta.get('namespace')!r}, not {namespace!r}"))
        own = OWN_SCHEMAS.get((obj.get("apiVersion"), obj.get("kind")))
        if obj.get("apiVersion") in {v for v, _ in OWN_SCHEMAS} and own is None:
            problems.append(("kind", f"scripts/chart has no schema for {obj.get('kind')}"))
            versions = "scripts/chart's schemas"
        elif own is not None:
            problems += [(p, m) for p, m in schema_errors(own, obj)]
            versions = f"the {obj['kind']} schema of scripts/chart (kubernetes-validate does not know it)"
        else:
            for v in k8s_versions:
                problems += [(f"{p} (Kubernetes {v})", why) for p, why in kube.validate(obj, v)]
            versions = f"Kubernetes {', '.join(k8s_versions)}"
        report.check(f"{where} -> {describe(obj)}: valid for {versions}", problems)


def schema_errors(schema, obj):
    from manifests import schemas
    return [(schemas.field_path(list(e.absolute_path)), schemas.message(e))
            for e in jsonschema.Draft7Validator(schema).iter_errors(obj)]


def by_kind(objects, kind):
    return [o for _, o in objects if o.get("kind") == kind]


def selects(selector, labels):
    match = (selector or {}).get("matchLabels") or {}
    return bool(match) and all(labels.get(k) == v for k, v in match.items())


def check_render(report, label, values, k8s_versions, operator_peer, expect):
    """Renders with `values` and checks every object; `expect` maps kinds to their count."""
    where = f"render ({label})"
    try:
        manifest, notes = helm.template(CHART, values)
    except helm.Error as e:
        report.fail(f"{where}: helm template", [("helm", str(e).strip())])
        return None
    objects = [(source, obj) for source, _, obj in helm.documents(manifest)]
    kinds = {}
    for _, obj in objects:
        kinds[obj.get("kind")] = kinds.get(obj.get("kind"), 0) + 1
    print(f"      {where} renders {len(objects)} objects: "
          + ", ".join(f"{n} {k}" for k, n in sorted(kinds.items())))
    report.check(f"{where}: renders the expected objects",
                 [(k, f"{kinds.get(k, 0)}, expected {n}") for k, n in expect.items() if kinds.get(k, 0) != n])
    validate_objects(report, where, objects, k8s_versions, helm.NAMESPACE)
    merged = deep_merge(load(os.path.join(CHART, "values.yaml")), values or {})
    report.check(f"{where}: the objects fit together and the operator pod keeps to restricted-v2",
                 coherence(objects, merged, operator_peer))
    report.check(f"{where}: the alerts and the dashboard read metrics the shim and the operator export",
                 monitoring_problems(objects))
    report.check(f"{where}: NOTES.txt says what to apply next",
                 [] if "kind: SessionCache" in notes and "kubectl get rsc" in notes and "-client-" in notes
                 else [("NOTES.txt", "no SessionCache sample, `kubectl get rsc` or client ConfigMap hint")])
    return objects


def monitoring_problems(objects):
    """The dashboard is JSON of the dashboard schema; rules and panels name only exported metrics."""
    problems, expressions = [], []
    for rule_set in by_kind(objects, "PrometheusRule"):
        for group in rule_set["spec"]["groups"]:
            expressions += [r["expr"] for r in group["rules"]]
    for cm in by_kind(objects, "ConfigMap"):
        for key, text in (cm.get("data") or {}).items():
            if not key.endswith(".json"):
                continue
            try:
                dashboard = json.loads(text)
            except ValueError as e:
                problems.append((f"ConfigMap {cm['metadata']['name']} {key}", f"not JSON: {e}"))
                continue
            problems += [(f"{key} {p}", m) for p, m in schema_errors(DASHBOARD_SCHEMA, dashboard)]
            expressions += [t["expr"] for p in dashboard.get("panels", []) for t in p.get("targets", [])]
    problems += [(m, "named by an alert or panel, exported by neither the shim nor the operator")
                 for m in unknown_metrics(expressions, exported_metrics())]
    return problems


def deep_merge(base, override):
    out = copy.deepcopy(base)
    for k, v in override.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def coherence(objects, values, operator_peer):
    problems = []
    deployments = by_kind(objects, "Deployment")
    if len(deployments) != 1:
        return [("Deployment", f"{len(deployments)} rendered, expected 1")]
    d = deployments[0]
    pod = d["spec"]["template"]
    labels = pod["metadata"].get("labels") or {}
    spec = pod["spec"]
    if not selects(d["spec"]["selector"], labels):
        problems.append(("Deployment.spec.selector", "does not select its own pods"))
    if d["spec"].get("replicas") != values["replicas"]:
        problems.append(("Deployment.spec.replicas", f"{d['spec'].get('replicas')}, values say {values['replicas']}"))
    if operator_peer is not None and not selects(operator_peer, labels):
        problems.append(("Deployment pod labels", f"not admitted by the operator peer {operator_peer} of the "
                                                  "NetworkPolicy the operator writes for Redis"))
    # restricted-v2 / restricted Pod Security Standard
    psc = spec.get("securityContext") or {}
    for field in ("runAsUser", "runAsGroup", "fsGroup"):
        if field in psc:
            problems.append((f"pod securityContext.{field}", "set: OpenShift's restricted-v2 assigns it"))
    if psc.get("runAsNonRoot") is not True:
        problems.append(("pod securityContext.runAsNonRoot", "not true"))
    if (psc.get("seccompProfile") or {}).get("type") != "RuntimeDefault":
        problems.append(("pod securityContext.seccompProfile", "not RuntimeDefault"))
    if spec.get("automountServiceAccountToken") is not True:
        problems.append(("automountServiceAccountToken", "not true: the operator needs the API"))
    containers = spec.get("containers") or []
    if len(containers) != 1:
        problems.append(("containers", f"{len(containers)}, expected 1"))
        return problems
    c = containers[0]
    sc = c.get("securityContext") or {}
    if sc.get("allowPrivilegeEscalation") is not False:
        problems.append(("container securityContext.allowPrivilegeEscalation", "not false"))
    if (sc.get("capabilities") or {}).get("drop") != ["ALL"]:
        problems.append(("container securityContext.capabilities.drop", "not [ALL]"))
    if sc.get("readOnlyRootFilesystem") is not True:
        problems.append(("container securityContext.readOnlyRootFilesystem", "not true"))
    for field in ("runAsUser", "runAsGroup", "privileged"):
        if sc.get(field):
            problems.append((f"container securityContext.{field}", "set"))
    ports = {p["name"]: p["containerPort"] for p in c.get("ports") or []}
    if ports.get("metrics") != values["metrics"]["port"]:
        problems.append(("container ports", f"no metrics port {values['metrics']['port']}: {ports}"))
    for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
        get = (c.get(probe) or {}).get("httpGet") or {}
        if get.get("path") != path or get.get("port") not in ("metrics", values["metrics"]["port"]):
            problems.append((probe, f"not GET {path} on the metrics port: {get}"))
    env = {e["name"]: e for e in c.get("env") or []}
    for name, field in (("POD_NAMESPACE", "metadata.namespace"), ("POD_NAME", "metadata.name")):
        if ((env.get(name) or {}).get("valueFrom") or {}).get("fieldRef", {}).get("fieldPath") != field:
            problems.append((f"env {name}", f"not the downward API's {field}"))
    want = {"REDSESS_METRICS_ADDR": f"0.0.0.0:{values['metrics']['port']}",
            "REDSESS_LEADER_ELECTION": str(values["leaderElection"]["enabled"]).lower(),
            "REDSESS_LOG_FORMAT": values["logFormat"], "RUST_LOG": values["logLevel"],
            "REDSESS_PLATFORM": values["platform"]}
    for name, value in want.items():
        if (env.get(name) or {}).get("value") != value:
            problems.append((f"env {name}", f"{(env.get(name) or {}).get('value')!r}, expected {value!r}"))
    if c.get("args") != ["run"]:
        problems.append(("args", f"{c.get('args')}, expected [run] (the image's entrypoint is the binary)"))
    if values["replicas"] > 1 and not values["leaderElection"]["enabled"]:
        problems.append(("leaderElection.enabled", "false with more than one replica"))
    if not values["affinity"]:
        anti = ((spec.get("affinity") or {}).get("podAntiAffinity") or {})
        terms = anti.get("preferredDuringSchedulingIgnoredDuringExecution") or []
        if not any(selects(t["podAffinityTerm"].get("labelSelector"), labels) for t in terms):
            problems.append(("affinity", "no soft anti-affinity between the replicas"))

    # ServiceAccount and bindings
    sa_name = spec.get("serviceAccountName")
    sas = [o["metadata"]["name"] for o in by_kind(objects, "ServiceAccount")]
    if values["serviceAccount"]["create"] and sas != [sa_name]:
        problems.append(("ServiceAccount", f"{sas}, the pod uses {sa_name}"))
    for kind in ("ClusterRoleBinding", "RoleBinding"):
        for b in by_kind(objects, kind):
            subjects = [(s.get("kind"), s.get("name"), s.get("namespace")) for s in b.get("subjects") or []]
            if subjects != [("ServiceAccount", sa_name, helm.NAMESPACE)]:
                problems.append((f"{kind} {b['metadata']['name']}", f"subjects {subjects}"))
            role_kind = "ClusterRole" if kind == "ClusterRoleBinding" else "Role"
            roles = [o["metadata"]["name"] for o in by_kind(objects, role_kind)]
            if b["roleRef"]["kind"] != role_kind or b["roleRef"]["name"] not in roles:
                problems.append((f"{kind} {b['metadata']['name']}", f"roleRef {b['roleRef']} not rendered"))
    # The metrics and webhook Services, ServiceMonitor, PodDisruptionBudget and NetworkPolicy
    # select the pods.
    for s in by_kind(objects, "Service"):
        if not selects({"matchLabels": s["spec"].get("selector")}, labels):
            problems.append((f"Service {s['metadata']['name']}", "does not select the operator pods"))
        served = [(p.get("port"), p.get("targetPort")) for p in s["spec"]["ports"]]
        if served not in ([(values["metrics"]["port"], "metrics")], [(443, "webhook")]):
            problems.append((f"Service {s['metadata']['name']}", f"serves {served}: neither metrics nor webhook"))
    problems += webhook_coherence(objects, values, c, spec)
    for sm in by_kind(objects, "ServiceMonitor"):
        services = by_kind(objects, "Service")
        if not any(selects(sm["spec"]["selector"], s["metadata"].get("labels") or {}) for s in services):
            problems.append(("ServiceMonitor", "selects no rendered Service"))
        for k, v in (values["metrics"]["serviceMonitor"]["labels"] or {}).items():
            if (sm["metadata"].get("labels") or {}).get(k) != v:
                problems.append(("ServiceMonitor labels", f"lack {k}={v}"))
    for kind in ("PodDisruptionBudget", "NetworkPolicy"):
        for o in by_kind(objects, kind):
            selector = o["spec"].get("selector") if kind == "PodDisruptionBudget" else o["spec"].get("podSelector")
            if not selects(selector, labels):
                problems.append((f"{kind} {o['metadata']['name']}", "does not select the operator pods"))
    for np in by_kind(objects, "NetworkPolicy"):
        ingress = np["spec"].get("ingress") or []
        ports = [p.get("port") for rule in ingress for p in rule.get("ports") or []]
        wanted = ["metrics", "webhook"] if values["webhook"]["enabled"] else ["metrics"]
        if ports != wanted:
            problems.append(("NetworkPolicy ingress", f"ports {ports}, expected {wanted}"))
        egress_ports = {p.get("port") for rule in np["spec"].get("egress") or [] for p in rule.get("ports") or []}
        if not set(values["networkPolicy"]["apiServer"]["ports"]) <= egress_ports:
            problems.append(("NetworkPolicy egress", f"does not reach the API server ports {egress_ports}"))
    return problems


def webhook_coherence(objects, values, container, pod_spec):
    """The webhook configuration as Sidecar mode and new SessionCaches' defaults need it,
    reaching the replicas' webhook port with a certificate the chosen option provides."""
    hook = values["webhook"]
    configs = by_kind(objects, "MutatingWebhookConfiguration")
    if not hook["enabled"]:
        return [("MutatingWebhookConfiguration", "rendered with webhook.enabled false")] if configs else []
    problems = []
    env = {e["name"]: e.get("value") for e in container.get("env") or []}
    ports = {p["name"]: p["containerPort"] for p in container.get("ports") or []}
    if ports.get("webhook") != hook["port"] or env.get("REDSESS_WEBHOOK_ADDR") != f"0.0.0.0:{hook['port']}":
        problems.append(("webhook port", f"container ports {ports}, REDSESS_WEBHOOK_ADDR {env.get('REDSESS_WEBHOOK_ADDR')}"))
    services = [s for s in by_kind(objects, "Service") if s["spec"]["ports"][0].get("targetPort") == "webhook"]
    if len(configs) != 1 or len(services) != 1:
        return problems + [("webhook", f"{len(configs)} configurations, {len(services)} Services")]
    config, service = configs[0], services[0]
    if config["metadata"]["name"] != "redsess-operator":
        problems.append(("MutatingWebhookConfiguration name", "not redsess-operator (the operator's RBAC names it)"))
    # The pods of injection-enabled namespaces (Sidecar mode), and every new SessionCache
    # (its defaults): each webhook's path, rules and scope.
    expected = {
        "pods.redsess.io": ("/mutate-pods", {"apiGroups": [""], "resources": ["pods"]}, True),
        "sessioncaches.redsess.io": ("/default-sessioncaches", {"apiGroups": ["redsess.io"], "resources": ["sessioncaches"]}, False),
    }
    names = [w["name"] for w in config["webhooks"]]
    if sorted(names) != sorted(expected):
        problems.append(("webhooks", f"{names}, expected {sorted(expected)}"))
    for w in config["webhooks"]:
        if w["name"] not in expected:
            continue
        path, rule, pods = expected[w["name"]]
        ref = w["clientConfig"].get("service") or {}
        if (ref.get("name"), ref.get("namespace"), ref.get("port"), ref.get("path")) != (
                service["metadata"]["name"], helm.NAMESPACE, 443, path):
            problems.append((f"webhook {w['name']} clientConfig", f"{ref}"))
        rules = w.get("rules") or []
        if len(rules) != 1 or any(rules[0].get(k) != v for k, v in rule.items()) or rules[0].get("operations") != ["CREATE"]:
            problems.append((f"webhook {w['name']} rules", f"{rules}, expected CREATE of {rule}"))
        wanted = [("failurePolicy", "Fail"), ("sideEffects", "None"),
                  ("timeoutSeconds", hook["timeoutSeconds"]), ("admissionReviewVersions", ["v1"])]
        if pods:
            wanted.append(("reinvocationPolicy", "IfNeeded"))
        for field, want in wanted:
            if w.get(field) != want:
                problems.append((f"webhook {w['name']} {field}", f"{w.get(field)!r}, expected {want!r}"))
        if not pods:
            continue
        expressions = {(e["key"], e["operator"], tuple(e.get("values") or []))
                       for e in (w.get("namespaceSelector") or {}).get("matchExpressions") or []}
        if ("redsess.io/injection", "In", ("enabled",)) not in expressions:
            problems.append((f"webhook {w['name']} namespaceSelector", "does not require redsess.io/injection=enabled"))
        if ("kubernetes.io/metadata.name", "NotIn", (helm.NAMESPACE, "kube-system")) not in expressions:
            problems.append((f"webhook {w['name']} namespaceSelector", "does not leave out the operator's namespace and kube-system"))
    annotations = config["metadata"].get("annotations") or {}
    mounted = any(v.get("secret", {}).get("secretName") == f"{service['metadata']['name']}-tls"
                  for v in pod_spec.get("volumes") or [])
    mode = hook["certificates"]
    if mode == "operator":
        if annotations or mounted or "REDSESS_WEBHOOK_HOSTS" not in env:
            problems.append(("webhook certificates: operator", "expects no injector, no mounted Secret, REDSESS_WEBHOOK_HOSTS"))
        elif f"{service['metadata']['name']}.{helm.NAMESPACE}.svc" not in env["REDSESS_WEBHOOK_HOSTS"].split(","):
            problems.append(("REDSESS_WEBHOOK_HOSTS", f"{env['REDSESS_WEBHOOK_HOSTS']} lacks the webhook Service"))
    else:
        if not mounted or env.get("REDSESS_WEBHOOK_CERT_DIR") != "/etc/redsess/webhook":
            problems.append((f"webhook certificates: {mode}", "the Secret is not mounted where REDSESS_WEBHOOK_CERT_DIR says"))
        want = ({"cert-manager.io/inject-ca-from": f"{helm.NAMESPACE}/{service['metadata']['name']}"}
                if mode == "cert-manager" else {"service.beta.openshift.io/inject-cabundle": "true"})
        if annotations != want:
            problems.append((f"webhook certificates: {mode}", f"configuration annotations {annotations}, expected {want}"))
        if mode == "cert-manager":
            certs = by_kind(objects, "Certificate")
            if [c["spec"]["secretName"] for c in certs] != [f"{service['metadata']['name']}-tls"]:
                problems.append(("Certificate", "not one, writing the mounted Secret"))
        elif (service["metadata"].get("annotations") or {}).get(
                "service.beta.openshift.io/serving-cert-secret-name") != f"{service['metadata']['name']}-tls":
            problems.append(("webhook Service", "no OpenShift serving-cert annotation for the mounted Secret"))
    return problems


def check_rbac(report, objects):
    rules = load(RBAC_FILE)

    def expected(key):
        return [{"apiGroups": [r["apiGroup"]], "resources": [r["resource"]],
                 **({"resourceNames": r["resourceNames"]} if r.get("resourceNames") else {}),
                 "verbs": [v["verb"] for v in r["verbs"]]} for r in rules.get(key) or []]

    problems = []
    for key, kind in (("clusterRules", "ClusterRole"), ("namespaceRules", "Role")):
        for rule in rules.get(key) or []:
            what = f"{key} {rule.get('apiGroup')!r}/{rule.get('resource')}"
            if not str(rule.get("reason") or "").strip():
                problems.append((what, "no reason"))
            for v in rule.get("verbs") or []:
                if not str(v.get("reason") or "").strip():
                    problems.append((f"{what} {v.get('verb')}", "no reason"))
        rendered = by_kind(objects, kind)
        if len(rendered) != 1:
            problems.append((kind, f"{len(rendered)} rendered, expected 1"))
        elif rendered[0].get("rules") != expected(key):
            problems.append((kind, f"rules differ from {RBAC_FILE} {key}: {rendered[0].get('rules')}"))
    report.check(f"rbac: the ClusterRole and Role are {RBAC_FILE}, every rule and verb with a reason", problems)


def check_crd(report, objects):
    with open("crds/sessioncaches.redsess.io.yaml") as f:
        generated = f.read()
    with open(CRD_COPY) as f:
        copy_text = f.read()
    report.check(f"crd: {CRD_COPY} is crds/sessioncaches.redsess.io.yaml",
                 [] if copy_text == generated else [("file", "differs; run scripts/generate-crds")])
    crds = by_kind(objects, "CustomResourceDefinition")
    if len(crds) != 1:
        report.fail("crd: the chart renders the CRD", [("CustomResourceDefinition", f"{len(crds)} rendered")])
        return
    rendered = copy.deepcopy(crds[0])
    meta = rendered["metadata"]
    problems = []
    if (meta.get("annotations") or {}).get("helm.sh/resource-policy") != "keep":
        problems.append(("metadata.annotations",
                         "no helm.sh/resource-policy: keep (uninstall would delete every SessionCache)"))
    meta.pop("annotations", None)
    meta.pop("labels", None)
    # Compared as data: Helm writes the schema's `minimum: 1.0` as `1`, the same JSON number.
    if rendered != yaml.safe_load(generated):
        problems.append(("(object)", "the rendered CRD is not crds/sessioncaches.redsess.io.yaml"))
    report.check("crd: the rendered CRD is crds/sessioncaches.redsess.io.yaml plus labels and "
                 "helm.sh/resource-policy: keep",
                 problems)


def check_deploy(report, k8s_versions):
    try:
        fresh = deploy.render()
    except helm.Error as e:
        report.fail("deploy: render the chart for deploy/", [("helm", str(e).strip())])
        return
    problems = []
    for name, content in fresh.items():
        path = os.path.join(deploy.DIR, name)
        try:
            with open(path) as f:
                if f.read() != content:
                    problems.append((path, "differs from a fresh render; run scripts/generate-deploy"))
        except FileNotFoundError:
            problems.append((path, "missing; run scripts/generate-deploy"))
    extra = sorted(set(os.path.basename(p) for p in glob.glob(os.path.join(deploy.DIR, "*.y*ml"))) - set(fresh))
    problems += [(os.path.join(deploy.DIR, n), "not generated: the kustomization does not know it") for n in extra]
    report.check("deploy: deploy/ is what scripts/generate-deploy writes from the chart now", problems)

    objects = []
    for name in sorted(fresh):
        if name == "kustomization.yaml":
            continue
        path = os.path.join(deploy.DIR, name)
        if not os.path.exists(path):
            continue
        with open(path) as f:
            objects += [(path, o) for o in yaml.safe_load_all(f) if o is not None]
    for path, obj in objects:
        problems = []
        for v in k8s_versions:
            problems += [(f"{p} (Kubernetes {v})", why) for p, why in kube.validate(obj, v)]
        report.check(f"deploy: {path} -> {describe(obj)}: valid for Kubernetes {', '.join(k8s_versions)}", problems)

    kubectl = shutil.which("kubectl")
    if not kubectl:
        print("      note: no kubectl here: `kubectl kustomize deploy/` not tried "
              "(the file comparison above still ran)")
        return
    done = subprocess.run([kubectl, "kustomize", deploy.DIR], capture_output=True, text=True)
    if done.returncode != 0:
        report.fail("deploy: `kubectl kustomize deploy/` builds",
                    [("stderr", line) for line in done.stderr.strip().splitlines()[-10:]])
        return
    built = sorted(describe(o) for o in yaml.safe_load_all(done.stdout) if o)
    want = sorted(describe(o) for _, o in objects)
    problems = []
    if built != want:
        problems.append(("objects", f"built {built}, the files hold {want}"))
    if any(o.get("kind") == "SessionCache" for o in yaml.safe_load_all(done.stdout) if o):
        problems.append(("samples", "a SessionCache sample is part of the kustomization"))
    report.check(f"deploy: `kubectl kustomize deploy/` builds exactly its {len(want)} objects, no samples", problems)


def operator_peer(operator):
    """The podSelector by which the NetworkPolicy the operator writes for each SessionCache's Redis
    admits the operator's pods (the peer with a namespaceSelector), from `render` of a sample."""
    if not operator:
        return None
    done = subprocess.run([operator, "render", "deploy/samples/minimal.yaml"], capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"`{operator} render deploy/samples/minimal.yaml` failed: {done.stderr}")
    for obj in yaml.safe_load_all(done.stdout):
        if obj and obj.get("kind") == "NetworkPolicy":
            for rule in obj["spec"].get("ingress") or []:
                for peer in rule.get("from") or []:
                    if "namespaceSelector" in peer:
                        return peer.get("podSelector")
    raise SystemExit("the operator's Redis NetworkPolicy has no peer for the operator's pods")


NO_MONITORING = {"PrometheusRule": 0, "PodMonitor": 0, "ConfigMap": 0}


def main():
    parser = argparse.ArgumentParser(prog="python -m chart", description=__doc__.split("\n\n")[0])
    parser.add_argument("command", nargs="?", default="check", choices=["check", "generate-deploy"])
    parser.add_argument("--operator", help="the redsess-operator binary (to read the label its Redis "
                                           "NetworkPolicy admits the operator by)")
    parser.add_argument("--kubernetes", default="1.30,newest",
                        help="comma-separated Kubernetes versions, `newest` for the newest "
                             "kubernetes-validate knows (default: 1.30,newest)")
    args = parser.parse_args()
    if args.command == "generate-deploy":
        deploy.write()
        return 0

    started = time.monotonic()
    k8s_versions = list(dict.fromkeys(kube.resolve(v.strip()) for v in args.kubernetes.split(",")))
    print(f"{helm.versions()}; kubernetes-validate {kube.tool_version()}: validating for Kubernetes "
          f"{' and '.join(k8s_versions)}")
    report = Report()
    peer = operator_peer(args.operator)
    self_tests(report, k8s_versions)
    check_schema(report)
    check_options(report)
    check_lint(report)
    base = {"Deployment": 1, "ServiceAccount": 1, "ClusterRole": 1, "ClusterRoleBinding": 1, "Role": 1,
            "RoleBinding": 1, "Service": 2, "PodDisruptionBudget": 1, "NetworkPolicy": 1,
            "MutatingWebhookConfiguration": 1}
    default = check_render(report, "default values", None, k8s_versions, peer,
                           {**base, "CustomResourceDefinition": 1, "ServiceMonitor": 0, "Certificate": 0,
                            **NO_MONITORING})
    check_render(report, FULL, load(FULL), k8s_versions, peer,
                 {**base, "CustomResourceDefinition": 0, "ServiceMonitor": 1, "Certificate": 1,
                  "PrometheusRule": 1, "PodMonitor": 1, "ConfigMap": 1})
    check_render(report, os.path.relpath(OFF), load(OFF), k8s_versions, peer,
                 {"Deployment": 1, "CustomResourceDefinition": 1, "ServiceAccount": 0, "ClusterRole": 0,
                  "ClusterRoleBinding": 0, "Role": 0, "RoleBinding": 0, "Service": 0, "ServiceMonitor": 0,
                  **NO_MONITORING,
                  "PodDisruptionBudget": 0, "NetworkPolicy": 0, "MutatingWebhookConfiguration": 0})
    openshift = os.path.join(HERE, "values", "webhook-openshift.yaml")
    check_render(report, os.path.relpath(openshift), load(openshift), k8s_versions, peer,
                 {**base, "CustomResourceDefinition": 1, "ServiceMonitor": 0, "Certificate": 0, **NO_MONITORING})
    if default is not None:
        check_rbac(report, default)
        check_crd(report, default)
    check_deploy(report, k8s_versions)
    print(f"checked in {time.monotonic() - started:.1f}s")
    print(f"chart: {report.passed} passed, {report.failed} failed")
    return 1 if report.failed else 0


if __name__ == "__main__":
    sys.exit(main())
