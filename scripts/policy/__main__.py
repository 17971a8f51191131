"""Pod security policy check (run by scripts/check-pod-security, which sets up the venv and builds
the operator): every Pod template the project can put in a cluster must be
admitted by the Kubernetes `restricted` Pod Security Standard AND by OpenShift's
`restricted-v2` SCC (rules and their sources: scripts/policy/rules.py). Pod templates come from

  samples   every object `redsess-operator render` prints for each deploy/samples/*.yaml;
  chart     the Helm chart rendered as scripts/check-chart renders it (Helm's engine through
            scripts/chart/helm.py) with its default values, each ci/*-values.yaml and the valid
            scripts/chart/values/*.yaml (skipped with a note when there is no chart);
  deploy    every manifest under deploy/ but samples/ and kustomization.yaml.

Pod templates are those of Deployments, StatefulSets, DaemonSets, ReplicaSets,
ReplicationControllers, Jobs, CronJobs and Pods. Self-tests first make sure the rules can fail.
Each refusal is one line naming the file, object, container and field. Ends with
`pod-security: N passed, M failed` and exits 1 when anything failed."""

import argparse
import glob
import os
import re
import subprocess
import sys
import time

import yaml

from . import rules

Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class Report:
    def __init__(self):
        self.passed = 0
        self.failed = 0

    def ok(self, what):
        self.passed += 1
        print(f"ok    {what}")

    def check(self, what, problems):
        (self.fail(what, problems) if problems else self.ok(what))

    def fail(self, what, problems=()):
        self.failed += 1
        if not problems:
            print(f"FAIL  {what}")
        for problem in problems:
            print(f"FAIL  {what}{problem}")


def describe(obj):
    meta = obj.get("metadata") or {}
    ns = f"{meta['namespace']}/" if meta.get("namespace") else ""
    return f"{obj.get('kind', '?')} {ns}{meta.get('name', '?')}"


def flatten(objects):
    for obj in objects:
        if not isinstance(obj, dict):
            continue
        if obj.get("kind") == "List" or (obj.get("kind", "").endswith("List") and "items" in obj):
            yield from flatten(obj.get("items") or [])
        else:
            yield obj


def parse_documents(text, default_source):
    """(source, object) for each YAML document; `# Source: x` comments (helm template prints
    them) name the file a document came from."""
    out = []
    for chunk in re.split(r"^---[ \t]*$", text, flags=re.M):
        m = re.search(r"^# Source: (\S+)", chunk, re.M)
        source = m.group(1) if m else default_source
        for obj in flatten(yaml.load_all(chunk, Loader=Loader)):
            out.append((source, obj))
    return out


def check_objects(report, label, documents, expect_pods, platform="any"):
    """Judges every Pod template among `documents` ((source, object) pairs)."""
    pods = 0
    for source, obj in documents:
        where = f"{source} -> {describe(obj)}"
        try:
            template = rules.pod_template(obj)
        except ValueError as e:
            report.fail(f"{where}: {e}")
            continue
        if template is None:
            continue
        pods += 1
        metadata, spec = template
        findings = rules.check_pod(spec, metadata, platform)
        n = len(list(rules.containers(spec)))
        if findings:
            report.fail(f"{where} ", findings)
        else:
            report.ok(f"{where}: {n} container{'s' if n != 1 else ''}; admitted by "
                      + {"any": "PSS restricted and OpenShift restricted-v2",
                         "openshift": "PSS restricted and OpenShift restricted-v2",
                         "kubernetes": "PSS restricted, and the kubelet's runAsNonRoot check passes"}[platform])
        if platform == "any":
            for container, note in rules.root_image_notes(spec):
                print(f"note  {where} {container}: {note}")
    if expect_pods and not pods:
        report.fail(f"{label}: no Pod template found (expected at least one): the check judged nothing")
    return pods


# ---------------------------------------------------------------------------------------
# Self-tests: the rules must be able to say no, and say yes to a compliant pod.

def compliant_container(name="app"):
    return {
        "name": name,
        "image": "example.invalid/app:1",
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "runAsNonRoot": True,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
    }


def compliant_spec():
    return {
        "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
        "initContainers": [compliant_container("init")],
        "containers": [compliant_container()],
        "volumes": [{"name": "tmp", "emptyDir": {}}, {"name": "conf", "configMap": {"name": "c"}}],
    }


def deployment(spec, name):
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "namespace": "selftest"},
            "spec": {"selector": {}, "template": {"metadata": {}, "spec": spec}}}


def self_tests(report):
    cases = []

    cases.append(("a compliant pod is admitted", compliant_spec(), set()))

    spec = compliant_spec()
    spec["containers"][0]["securityContext"]["privileged"] = True
    cases.append(("a privileged container is refused", spec,
                  {("container app", "securityContext.privileged", (rules.BASELINE, rules.SCC))}))

    spec = compliant_spec()
    spec["securityContext"]["runAsUser"] = 1000
    cases.append(("runAsUser: 1000 is refused by restricted-v2 only", spec,
                  {("pod", "securityContext.runAsUser", (rules.SCC,))}))

    spec = compliant_spec()
    del spec["initContainers"][0]["securityContext"]["allowPrivilegeEscalation"]
    spec["initContainers"][0]["securityContext"]["capabilities"] = {"drop": ["ALL"], "add": ["NET_ADMIN"]}
    cases.append(("an init container without allowPrivilegeEscalation: false, adding NET_ADMIN, is refused", spec,
                  {("init container init", "securityContext.allowPrivilegeEscalation", (rules.RESTRICTED,)),
                   ("init container init", "securityContext.capabilities.add", (rules.BASELINE, rules.SCC))}))

    spec = compliant_spec()
    del spec["securityContext"]
    cases.append(("a pod without runAsNonRoot and seccomp at pod level still passes when every container has them",
                  spec, set()))
    spec = compliant_spec()
    del spec["containers"][0]["securityContext"]["runAsNonRoot"]
    del spec["containers"][0]["securityContext"]["seccompProfile"]
    del spec["securityContext"]
    cases.append(("a container without runAsNonRoot and seccomp, at neither level, is refused", spec,
                  {("container app", "securityContext.runAsNonRoot", (rules.RESTRICTED,)),
                   ("container app", "securityContext.seccompProfile.type", (rules.RESTRICTED,))}))

    spec = compliant_spec()
    spec.update(hostNetwork=True)
    spec["volumes"].append({"name": "host", "hostPath": {"path": "/"}})
    spec["volumes"].append({"name": "nfs", "nfs": {"server": "x", "path": "/"}})
    spec["securityContext"].update(fsGroup=2000, seLinuxOptions={"level": "s0:c1,c2"},
                                   seccompProfile={"type": "Localhost", "localhostProfile": "p.json"})
    spec["containers"][0]["ports"] = [{"name": "http", "containerPort": 80, "hostPort": 80}]
    cases.append(("host network, hostPath, nfs, hostPort, fsGroup, SELinux level and a Localhost seccomp "
                  "profile are refused", spec,
                  {("pod", "hostNetwork", (rules.BASELINE, rules.SCC)),
                   ("pod", "volumes[host].hostPath", (rules.BASELINE, rules.SCC)),
                   ("pod", "volumes[nfs].nfs", (rules.RESTRICTED, rules.SCC)),
                   ("pod", "securityContext.fsGroup", (rules.SCC,)),
                   ("pod", "securityContext.seLinuxOptions", (rules.SCC,)),
                   ("pod", "securityContext.seccompProfile.type", (rules.SCC,)),
                   ("container app", "ports[http].hostPort", (rules.BASELINE, rules.SCC))}))

    for what, spec, wanted in cases:
        # Through the same path as real objects: a Deployment, and for one case a CronJob.
        found = {(f.where, f.field, f.policies) for f in rules.check_pod(rules.pod_template(deployment(spec, "t"))[1])}
        problems = []
        if found - wanted:
            problems += [f": unexpected {w}: {f} ({', '.join(p)})" for w, f, p in sorted(found - wanted)]
        if wanted - found:
            problems += [f": missed {w}: {f} ({', '.join(p)})" for w, f, p in sorted(wanted - found)]
        report.check(f"self-test: {what}", problems)

    spec = compliant_spec()
    spec["containers"][0]["securityContext"]["allowPrivilegeEscalation"] = True
    cron = {"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "c"},
            "spec": {"schedule": "* * * * *", "jobTemplate": {"spec": {"template": {"spec": spec}}}}}
    found = [str(f) for f in rules.check_pod(rules.pod_template(cron)[1])]
    wanted = "container app: securityContext.allowPrivilegeEscalation must be false (is true) " \
             "(PSS restricted, OpenShift restricted-v2)"
    report.check("self-test: a CronJob's Pod template is found and judged",
                 [] if found == [wanted] else [f": found {found}"])

    spec = compliant_spec()
    spec["containers"][0]["image"] = "docker.io/library/redis:7.4.2-alpine"
    notes = rules.root_image_notes(spec)
    report.check("self-test: the official redis image without runAsUser gets the plain-Kubernetes note",
                 [] if [w for w, _ in notes] == ["container app"] else [f": notes {notes}"])

    # Per platform (when `render --platform` exists): Kubernetes needs the UID that OpenShift refuses.
    def verdict(spec, platform):
        return sorted((f.where, f.field, f.policies) for f in rules.check_pod(spec, None, platform))

    problems = []
    no_uid = spec
    if verdict(no_uid, "kubernetes") != [("container app", "securityContext.runAsUser", (rules.KUBELET,))]:
        problems.append(f": kubernetes, no runAsUser: {verdict(no_uid, 'kubernetes')}")
    if verdict(no_uid, "openshift"):
        problems.append(f": openshift, no runAsUser: {verdict(no_uid, 'openshift')}")
    fixed = compliant_spec()
    fixed["containers"][0]["image"] = "redis:7.4.2"
    fixed["securityContext"].update(runAsUser=999, fsGroup=999)
    if verdict(fixed, "kubernetes"):
        problems.append(f": kubernetes, runAsUser 999: {verdict(fixed, 'kubernetes')}")
    if {f for _, f, _ in verdict(fixed, "openshift")} != {"securityContext.runAsUser", "securityContext.fsGroup"}:
        problems.append(f": openshift, runAsUser 999: {verdict(fixed, 'openshift')}")
    report.check("self-test: per platform, the redis image needs a runAsUser on Kubernetes and must not have "
                 "one on OpenShift", problems)


# ---------------------------------------------------------------------------------------
# Sources

def render_platforms(operator):
    """When `render` can target a platform (`--platform kubernetes|openshift`), each sample is
    rendered for both and judged by that platform's rules; otherwise once, by both platforms'."""
    done = subprocess.run([operator, "render", "--help"], capture_output=True, text=True)
    if done.returncode == 0 and re.search(r"--platform\b", done.stdout):
        return [("kubernetes", ["--platform", "kubernetes"]), ("openshift", ["--platform", "openshift"])]
    return [("any", [])]


def check_samples(report, operator, samples_dir):
    samples = sorted(glob.glob(os.path.join(samples_dir, "*.yaml")))
    if not samples:
        report.fail(f"{samples_dir}: no samples found")
    for platform, flags in render_platforms(operator):
        for path in samples:
            label = f"{path}{' [' + ' '.join(flags) + ']' if flags else ''}"
            done = subprocess.run([operator, "render", *flags, path], capture_output=True, text=True)
            if done.returncode != 0:
                report.fail(f"{label}: `redsess-operator render` failed (exit {done.returncode})",
                            [f": {line}" for line in done.stderr.strip().splitlines()[-10:]])
                continue
            check_objects(report, label, parse_documents(done.stdout, label), expect_pods=True, platform=platform)


def chart_values(chart, extra_values_dir):
    """(label, values file or None): the defaults, each ci/*-values.yaml, and the valid values
    files scripts/check-chart renders too (scripts/chart/values/*.yaml but bad-*)."""
    out = [("default values", None)]
    for path in sorted(glob.glob(os.path.join(chart, "ci", "*-values.yaml"))):
        out.append((f"-f {path}", path))
    for path in sorted(glob.glob(os.path.join(extra_values_dir, "*.yaml"))):
        if not os.path.basename(path).startswith("bad-"):
            out.append((f"-f {path}", path))
    return out


def check_chart(report, chart, extra_values_dir):
    """Renders the chart as scripts/check-chart does: Helm's own engine through
    scripts/chart/helm.py (helm-python-sdk), release and namespace as there."""
    if not os.path.isfile(os.path.join(chart, "Chart.yaml")):
        print(f"note  {chart}: no Helm chart there; chart check skipped")
        return
    try:
        from chart import helm
    except ImportError as e:
        report.fail(f"{chart}: cannot render it: scripts/chart/helm.py does not load ({e})")
        return
    if not os.path.isfile(os.path.join(chart, "ci", "full-values.yaml")):
        report.fail(f"{chart}/ci/full-values.yaml: missing (the chart must be checked with every option set)")
    parent = os.path.dirname(os.path.normpath(chart))
    for values_label, values_file in chart_values(chart, extra_values_dir):
        label = f"{chart} ({values_label})"
        values = None
        if values_file:
            with open(values_file) as f:
                values = yaml.safe_load(f) or {}
        try:
            manifest, _ = helm.template(chart, values)
        except helm.Error as e:
            report.fail(f"{label}: helm template failed", [f": {line}" for line in str(e).strip().splitlines()[-10:]])
            continue
        # `# Source: redsess/templates/x.yaml` -> `charts/redsess/templates/x.yaml (default values)`
        docs = [(f"{os.path.join(parent, source) if source != '?' else chart} ({values_label})", o)
                for source, _, obj in helm.documents(manifest) for o in flatten([obj])]
        check_objects(report, label, docs, expect_pods=True)


def deploy_manifests(deploy_dir, samples_dir):
    samples = os.path.normpath(samples_dir)
    for root, dirs, files in os.walk(deploy_dir):
        dirs[:] = sorted(d for d in dirs if os.path.normpath(os.path.join(root, d)) != samples)
        for name in sorted(files):
            if name.endswith((".yaml", ".yml")) and name not in ("kustomization.yaml", "kustomization.yml",
                                                                  "Kustomization"):
                yield os.path.join(root, name)


def check_deploy(report, deploy_dir, samples_dir):
    files = list(deploy_manifests(deploy_dir, samples_dir))
    if not files:
        print(f"note  {deploy_dir}: no manifests besides the samples")
    for path in files:
        try:
            with open(path) as f:
                docs = parse_documents(f.read(), path)
        except yaml.YAMLError as e:
            report.fail(f"{path}: does not parse as YAML", [f": {e}"])
            continue
        check_objects(report, path, [(path, obj) for _, obj in docs], expect_pods=False)


def check_injected(report, operator, pods_dir):
    """Every Pod fixture of the admission tests as the webhook patches it (plain and native
    sidecar): the injected shim must keep a compliant pod compliant."""
    from manifests.__main__ import injected_pods
    count = 0
    for label, pod in injected_pods(operator, pods_dir, ["1.28", "1.30"]):
        if isinstance(pod, str):
            report.fail(f"{label}: `redsess-operator inject` failed", [f": {pod}"])
            continue
        count += check_objects(report, label, [(label, pod)], expect_pods=True)
    if not count:
        report.fail(f"{pods_dir}: no Pod fixtures judged")


def main():
    parser = argparse.ArgumentParser(prog="python -m policy", description=__doc__.split("\n\n")[0])
    parser.add_argument("--operator", required=True, help="the redsess-operator binary")
    parser.add_argument("--samples", default="deploy/samples", help="the samples directory")
    parser.add_argument("--deploy", default="deploy", help="the deploy directory (samples/ excluded)")
    parser.add_argument("--chart", default="charts/redsess", help="the Helm chart")
    parser.add_argument("--chart-values", default="scripts/chart/values",
                        help="further values files scripts/check-chart renders (bad-*.yaml left out)")
    parser.add_argument("--pods", default="operator/tests/fixtures/pods", help="the admission tests' Pod fixtures")
    parser.add_argument("--setup-seconds", type=int, default=None, help="time spent before (venv, build)")
    args = parser.parse_args()

    started = time.monotonic()
    report = Report()
    self_tests(report)
    check_samples(report, args.operator, args.samples)
    check_chart(report, args.chart, args.chart_values)
    check_deploy(report, args.deploy, args.samples)
    check_injected(report, args.operator, args.pods)
    print(f"checked in {time.monotonic() - started:.1f}s"
          + (f" (check-pod-security took {args.setup_seconds + time.monotonic() - started:.0f}s in all)"
             if args.setup_seconds is not None else ""))
    print(f"pod-security: {report.passed} passed, {report.failed} failed")
    return 1 if report.failed else 0


if __name__ == "__main__":
    sys.exit(main())
