"""Checks the project's Kubernetes manifests (run by scripts/check-manifests, which sets up the
venv and builds the operator):

  crd       crds/*.yaml is what `redsess-operator crd` prints, is a structural schema, and is a
            valid CustomResourceDefinition for each Kubernetes version;
  samples   deploy/samples/*.yaml validate against the CRD's openAPIV3Schema, and every
            deploy/samples/invalid/*.yaml is rejected at the field its `expect-rejected-at`
            comment names;
  rendered  every object `redsess-operator render SAMPLE` prints validates against Kubernetes'
            own schemas (kubernetes-validate, strict) for each version;
  injected  every Pod fixture of the admission tests, as `redsess-operator inject` patches it
            (a plain sidecar for 1.28, a native one for 1.30 and newer), validates the same way.

Self-tests first make sure the validators can fail at all. Ends with `manifests: N passed, M
failed` and exits 1 when anything failed."""

import argparse
import glob
import os
import re
import subprocess
import sys
import time

import yaml

from . import kube, schemas


class Report:
    def __init__(self):
        self.passed = 0
        self.failed = 0

    def ok(self, what):
        self.passed += 1
        print(f"ok    {what}")

    def fail(self, what, problems):
        self.failed += 1
        print(f"FAIL  {what}")
        for path, problem in problems:
            print(f"        {path}: {problem}")

    def check(self, what, problems):
        (self.fail(what, problems) if problems else self.ok(what))
        return not problems


def load_all(path):
    with open(path) as f:
        return [doc for doc in yaml.safe_load_all(f) if doc is not None]


def describe(obj):
    meta = obj.get("metadata") or {}
    ns = f"{meta['namespace']}/" if meta.get("namespace") else ""
    return f"{obj.get('kind', '?')} {ns}{meta.get('name', '?')}"


def crd_versions(crd):
    """apiVersion (group/version) -> (kind, openAPIV3Schema) for each version the CRD serves."""
    group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
    return {f"{group}/{v['name']}": (kind, v.get("schema", {}).get("openAPIV3Schema"))
            for v in crd["spec"]["versions"] if v.get("served", True)}


def self_tests(report, k8s_versions):
    """The validators must be able to say no, or a green run means nothing."""
    non_structural = {
        "type": "object",
        "properties": {
            "metadata": {"type": "object", "properties": {"labels": {"type": "object"}}},
            "spec": {
                "type": "object",
                "properties": {"size": {"description": "no type"}, "ref": {"$ref": "#/definitions/x"}},
                "additionalProperties": {"type": "string"},
            },
        },
    }
    found = {path for path, _ in schemas.structural_problems(non_structural)}
    wanted = {".metadata.labels", ".spec", ".spec.size", ".spec.ref"}
    report.check("self-test: the structural check flags a non-structural schema",
                 [("missed", ", ".join(sorted(wanted - found)))] if not wanted <= found else [])

    broken = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "x"},
              "spec": {"replicas": "2", "selectr": {}, "template": {}}}
    for v in k8s_versions:
        problems = {path for path, _ in kube.validate(broken, v)}
        missed = {"spec", "spec.replicas"} - problems
        report.check(f"self-test: kubernetes-validate --strict rejects a broken Deployment for {v}",
                     [("missed", ", ".join(sorted(missed)))] if missed else [])


def check_crd(report, crd_file, operator, k8s_versions):
    docs = load_all(crd_file)
    if len(docs) != 1 or docs[0].get("kind") != "CustomResourceDefinition":
        report.fail(f"{crd_file}: expected one CustomResourceDefinition", [("documents", str(len(docs)))])
        return None
    crd = docs[0]
    name = crd["metadata"]["name"]
    if operator:
        printed = subprocess.run([operator, "crd"], capture_output=True, text=True)
        with open(crd_file) as f:
            stale = printed.returncode != 0 or printed.stdout != f.read()
        report.check(f"{crd_file} is what `redsess-operator crd` prints",
                     [("file", f"out of date (or `crd` failed: {printed.stderr.strip()}); "
                               "run scripts/generate-crds")] if stale else [])
    for api_version, (_, schema) in crd_versions(crd).items():
        if schema is None:
            report.fail(f"{crd_file}: CRD {name} {api_version}", [("schema", "has no openAPIV3Schema")])
            continue
        report.check(f"{crd_file}: CRD {name} {api_version}: openAPIV3Schema is structural",
                     [(f"openAPIV3Schema{p}", why) for p, why in schemas.structural_problems(schema)])
    for v in k8s_versions:
        report.check(f"{crd_file}: CRD {name} is a valid CustomResourceDefinition for Kubernetes {v}",
                     kube.validate(crd, v))
    return crd


def check_samples(report, crd, samples_dir):
    versions = crd_versions(crd)

    def judge(obj):
        found = versions.get(obj.get("apiVersion"))
        if found is None:
            return [("apiVersion", f"{obj.get('apiVersion')!r} is not served by the CRD "
                                   f"(served: {', '.join(versions)})")]
        kind, schema = found
        problems = schemas.errors(schemas.to_jsonschema(schema, api_version=obj["apiVersion"], kind=kind), obj)
        if not problems and not (obj.get("metadata") or {}).get("namespace"):
            problems = [("metadata.namespace", "give the namespace, so `kubectl apply -f` puts it where meant")]
        return problems

    samples = sorted(glob.glob(os.path.join(samples_dir, "*.yaml")))
    if not samples:
        report.fail(f"{samples_dir}: no samples", [("*.yaml", "none found")])
    for path in samples:
        for obj in load_all(path):
            report.check(f"{path}: {describe(obj)} matches the CRD schema", judge(obj))

    invalid = sorted(glob.glob(os.path.join(samples_dir, "invalid", "*.yaml")))
    if not invalid:
        report.fail(f"{samples_dir}/invalid: no invalid samples", [("*.yaml", "none found: the check could not fail")])
    for path in invalid:
        with open(path) as f:
            m = re.search(r"^#\s*expect-rejected-at:\s*(\S+)", f.read(), re.M)
        if not m:
            report.fail(f"{path}: invalid sample", [("comment", "add `# expect-rejected-at: <field path>`")])
            continue
        expected = m.group(1)
        for obj in load_all(path):
            problems = judge(obj)
            paths = [p for p, _ in problems]
            what = f"{path}: {describe(obj)} is rejected at {expected}"
            if not problems:
                report.fail(what, [(expected, "was ACCEPTED by the CRD schema; it must be rejected")])
            elif expected not in paths:
                report.fail(what, [(p, f"rejected here instead: {why}") for p, why in problems])
            else:
                report.ok(f"{what} ({dict(problems)[expected]})")


def check_rendered(report, operator, samples_dir, k8s_versions):
    for path in sorted(glob.glob(os.path.join(samples_dir, "*.yaml"))):
        namespace = next((d.get("metadata", {}).get("namespace") for d in load_all(path)), None)
        done = subprocess.run([operator, "render", path], capture_output=True, text=True)
        if done.returncode != 0:
            report.fail(f"{path}: `redsess-operator render` failed (exit {done.returncode})",
                        [("stderr", line) for line in done.stderr.strip().splitlines()[-15:]])
            continue
        try:
            objects = [o for o in yaml.safe_load_all(done.stdout) if o is not None]
        except yaml.YAMLError as e:
            report.fail(f"{path}: render printed YAML that does not parse", [("yaml", str(e))])
            continue
        if not objects:
            report.fail(f"{path}: render printed no objects", [("stdout", "empty")])
            continue
        kinds = {}
        for obj in objects:
            kinds[obj.get("kind", "?")] = kinds.get(obj.get("kind", "?"), 0) + 1
        print(f"      {path} renders {len(objects)} objects: "
              + ", ".join(f"{n} {k}" for k, n in sorted(kinds.items())))
        seen = set()
        for obj in objects:
            meta = obj.get("metadata") or {}
            key = (obj.get("apiVersion"), obj.get("kind"), meta.get("name"))
            problems = []
            if key in seen:
                problems.append(("metadata.name", "a second object of this kind has this name"))
            seen.add(key)
            if namespace and meta.get("namespace") != namespace:
                problems.append(("metadata.namespace", f"{meta.get('namespace')!r}, not the sample's {namespace!r}"))
            for v in k8s_versions:
                problems += [(f"{p} (Kubernetes {v})", why) for p, why in kube.validate(obj, v)]
            report.check(f"{path} -> {describe(obj)}: valid for Kubernetes {', '.join(k8s_versions)}", problems)


def injected_pods(operator, pods_dir, versions):
    """(label, pod) for each Pod fixture in `pods_dir`, as `redsess-operator inject` stores it
    for each Kubernetes version, judged against `sessioncache.yaml` beside them; an error
    string instead of a pod when inject failed."""
    cache = os.path.join(pods_dir, "sessioncache.yaml")
    for path in sorted(glob.glob(os.path.join(pods_dir, "*.yaml"))):
        if path == cache:
            continue
        for version in versions:
            done = subprocess.run([operator, "inject", "--kubernetes-version", version, path, cache],
                                  capture_output=True, text=True)
            label = f"{path} injected for Kubernetes {version}"
            if done.returncode != 0:
                yield label, done.stderr.strip() or f"exit {done.returncode}"
            else:
                yield label, yaml.safe_load(done.stdout)


def check_injected(report, operator, pods_dir, k8s_versions):
    for label, pod in injected_pods(operator, pods_dir, ["1.28", "1.30"]):
        if isinstance(pod, str):
            report.fail(f"{label}: `redsess-operator inject` failed", [("stderr", pod)])
            continue
        problems = []
        for v in k8s_versions:
            problems += [(f"{p} (Kubernetes {v})", why) for p, why in kube.validate(pod, v)]
        report.check(f"{label}: valid for Kubernetes {', '.join(k8s_versions)}", problems)


def main():
    parser = argparse.ArgumentParser(prog="python -m manifests", description=__doc__.split("\n\n")[0])
    parser.add_argument("--operator", required=True, help="the redsess-operator binary")
    parser.add_argument("--crd", required=True, help="the committed CRD file")
    parser.add_argument("--samples", required=True, help="the samples directory")
    parser.add_argument("--pods", default="operator/tests/fixtures/pods",
                        help="the admission tests' Pod fixtures (with their sessioncache.yaml)")
    parser.add_argument("--kubernetes", default="1.30,newest",
                        help="comma-separated Kubernetes versions, `newest` for the newest "
                             "kubernetes-validate knows (default: 1.30,newest)")
    args = parser.parse_args()

    started = time.monotonic()
    k8s_versions = list(dict.fromkeys(kube.resolve(v.strip()) for v in args.kubernetes.split(",")))
    print(f"kubernetes-validate {kube.tool_version()} (knows Kubernetes {kube.known_versions()[0]} to "
          f"{kube.known_versions()[-1]}): validating for Kubernetes {' and '.join(k8s_versions)}")
    report = Report()
    self_tests(report, k8s_versions)
    crd = check_crd(report, args.crd, args.operator, k8s_versions)
    if crd is not None:
        check_samples(report, crd, args.samples)
    check_rendered(report, args.operator, args.samples, k8s_versions)
    check_injected(report, args.operator, args.pods, k8s_versions)
    print(f"checked in {time.monotonic() - started:.1f}s")
    print(f"manifests: {report.passed} passed, {report.failed} failed")
    return 1 if report.failed else 0


if __name__ == "__main__":
    sys.exit(main())
