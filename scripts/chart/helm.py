"""Helm 4's own engine, offline, through helm-python-sdk (`import helm_python`): the Go SDK of
Helm in a bundled native library, no helm binary.

- `template` is `helm template`: an install with dry-run `client` against a memory release
  store and an empty kubeconfig, so nothing is contacted. Like `helm install`, it checks the
  values against values.schema.json and the chart's kubeVersion, renders every template (the
  CRD template included), sorts the objects in Helm's install order and renders NOTES.txt.
- `lint` is `helm lint` (strict: warnings count)."""

import re

import helm_python
import yaml

RELEASE = "redsess"
NAMESPACE = "redsess-system"
# An empty kubeconfig: a client dry-run needs a configuration object, never a cluster.
_KUBECONFIG = "apiVersion: v1\nkind: Config\nclusters: []\ncontexts: []\nusers: []\n"

Error = helm_python.HelmError


def versions():
    return f"helm-python-sdk {helm_python.helm_c_version()} (Helm SDK {helm_python.helm_sdk_version()})"


def template(chart_dir, values=None, release=RELEASE, namespace=NAMESPACE):
    """(manifest text, NOTES.txt text) of installing the chart with `values`; raises `Error`
    (HelmReleaseError naming the field for values the schema rejects)."""
    with helm_python.Config(storage_driver="memory", namespace=namespace, kubeconfig_content=_KUBECONFIG) as cfg:
        release = cfg.install(chart_dir, release, values, dry_run="client", namespace=namespace)
    return release["manifest"], release.get("notes") or ""


def documents(manifest):
    """The manifest's documents as (source template, text, object), empty ones left out."""
    out = []
    for text in re.split(r"^---[ \t]*\n", manifest, flags=re.M):
        obj = yaml.safe_load(text)
        if obj is None:
            continue
        m = re.search(r"^# Source: (\S+)", text, re.M)
        out.append((m.group(1) if m else "?", text, obj))
    return out


SEVERITY = {0: "unknown", 1: "info", 2: "warning", 3: "error"}


def lint(chart_dir, values=None, namespace=NAMESPACE, kube_version=None):
    """`helm lint --strict` findings as (severity name, path, message); `failed` is whether any
    is a warning or an error."""
    report = helm_python.lint(chart_dir, values, strict=True, namespace=namespace, kube_version=kube_version)
    findings = [(SEVERITY.get(m.get("severity"), "?"), m.get("path", ""), (m.get("error") or "").strip())
                for m in report.get("messages") or []]
    failed = any(m.get("severity", 0) >= 2 for m in report.get("messages") or []) or bool(report.get("errors"))
    return findings, failed
