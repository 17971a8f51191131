"""The admission rules a Pod spec must pass, written from their definitions:

  PSS baseline      Kubernetes Pod Security Standards, "baseline" profile
  PSS restricted    the "restricted" profile (everything baseline refuses, and more)
  restricted-v2     OpenShift's default SecurityContextConstraints for authenticated users

A violation of baseline is reported as "PSS baseline" only: restricted includes baseline.
A Pod spec is judged as the pod-security admission plugin and the SCC admission would judge the
Pod it becomes, before any defaulting by the SCC (so a field the SCC would fill in, e.g.
seccomp or dropped capabilities, counts only where PSS requires it spelled out).

PSS baseline (https://kubernetes.io/docs/concepts/security/pod-security-standards/):
  windowsOptions.hostProcess unset/false (pod, every container); hostNetwork, hostPID, hostIPC
  unset/false; privileged unset/false; capabilities.add only from BASELINE_CAPABILITIES; no
  hostPath volumes; hostPort unset/0; AppArmor (field or annotation) only RuntimeDefault or
  Localhost; seLinuxOptions.type only from SELINUX_TYPES, .user and .role unset; procMount unset
  or Default; seccompProfile.type never Unconfined; sysctls only from SAFE_SYSCTLS.
PSS restricted, in addition:
  volumes only of RESTRICTED_VOLUMES; allowPrivilegeEscalation false in every container
  (init and ephemeral too); runAsNonRoot true at pod level (and not false in any container) or
  true in every container; runAsUser never 0; seccompProfile.type RuntimeDefault or Localhost
  at pod level or in every container; capabilities.drop includes ALL and capabilities.add
  holds at most NET_BIND_SERVICE. (Pods with spec.os.name windows are exempt from the
  privilege-escalation, seccomp and capability rules, as in PSS.)
OpenShift restricted-v2:
  allowPrivilegedContainer, allowHost{Network,PID,IPC,Ports,DirVolumePlugin} false;
  allowPrivilegeEscalation false (an explicit true is refused); allowedCapabilities
  [NET_BIND_SERVICE]; volumes RESTRICTED_VOLUMES; runAsUser MustRunAsRange and fsGroup
  MustRunAs from the namespace's ranges, so a fixed runAsUser (pod or container) or fsGroup is
  refused; seLinuxContext MustRunAs the namespace's level, so any seLinuxOptions is refused;
  seccompProfiles [runtime/default], so any other explicit profile (Localhost included) is
  refused; readOnlyRootFilesystem not required. supplementalGroups is RunAsAny in
  restricted-v2: fixed supplemental groups are accepted and not reported.
kubelet runAsNonRoot (only for Pods rendered for plain Kubernetes, `platform="kubernetes"`):
  a container of an image that runs as root (ROOT_IMAGES) with runAsNonRoot true needs a
  runAsUser, or the kubelet refuses to start it. Otherwise it is printed as a note.
"""

import re

BASELINE = "PSS baseline"
RESTRICTED = "PSS restricted"
SCC = "OpenShift restricted-v2"

BASELINE_CAPABILITIES = {
    "AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "MKNOD", "NET_BIND_SERVICE",
    "SETFCAP", "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT",
}
RESTRICTED_CAPABILITIES = {"NET_BIND_SERVICE"}
RESTRICTED_VOLUMES = {
    "configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim", "projected", "secret",
}
SELINUX_TYPES = {"", "container_t", "container_init_t", "container_kvm_t", "container_engine_t"}
# The safe set of Kubernetes 1.29 and later (newer versions allow more; a cluster's admission
# may be pinned to an older policy version, so only these count as safe here).
SAFE_SYSCTLS = {
    "kernel.shm_rmid_forced", "net.ipv4.ip_local_port_range", "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.tcp_syncookies", "net.ipv4.ping_group_range", "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time", "net.ipv4.tcp_fin_timeout", "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
}
APPARMOR_ANNOTATION = "container.apparmor.security.beta.kubernetes.io/"

# Workload kinds and where their Pod template is.
TEMPLATE_PATHS = {
    "Deployment": ("spec", "template"),
    "StatefulSet": ("spec", "template"),
    "DaemonSet": ("spec", "template"),
    "ReplicaSet": ("spec", "template"),
    "ReplicationController": ("spec", "template"),
    "Job": ("spec", "template"),
    "CronJob": ("spec", "jobTemplate", "spec", "template"),
}


class Finding:
    """One refusal: where (`pod` or `container NAME`), the field, why, and by which policies."""

    def __init__(self, where, field, problem, policies):
        self.where, self.field, self.problem, self.policies = where, field, problem, tuple(policies)

    def __str__(self):
        return f"{self.where}: {self.field} {self.problem} ({', '.join(self.policies)})"

    def __repr__(self):
        return f"Finding({str(self)!r})"


def pod_template(obj):
    """(metadata, spec) of the Pod an object creates, or None for kinds that create none.
    Raises ValueError when a workload kind has no Pod spec where it must be."""
    kind = obj.get("kind")
    if kind == "Pod":
        node = obj
    elif kind in TEMPLATE_PATHS:
        node = obj
        for key in TEMPLATE_PATHS[kind]:
            node = (node or {}).get(key) if isinstance(node, dict) else None
    else:
        return None
    if not isinstance(node, dict) or not isinstance(node.get("spec"), dict):
        raise ValueError(f"{kind} has no Pod spec at {'.'.join(TEMPLATE_PATHS.get(kind, ('spec',)))}")
    return node.get("metadata") or {}, node["spec"]


def _d(value):
    return value if isinstance(value, dict) else {}


def _l(value):
    return value if isinstance(value, list) else []


def containers(spec):
    """(label, container) for every container, init and ephemeral ones included."""
    for key, label in (("initContainers", "init container"), ("containers", "container"),
                       ("ephemeralContainers", "ephemeral container")):
        for c in _l(spec.get(key)):
            yield f"{label} {_d(c).get('name', '?')}", _d(c)


PLATFORMS = ("any", "kubernetes", "openshift")
KUBELET = "kubelet runAsNonRoot"


def check_pod(spec, metadata=None, platform="any"):
    """Every Finding against one Pod spec (`metadata`: the template's, for annotations).

    `platform`: `any`, the Pod must be admitted by PSS restricted and restricted-v2 both;
    `openshift`, the same; `kubernetes`, by PSS restricted, restricted-v2 left out, and
    containers of an image that runs as root must also set a runAsUser or the kubelet refuses
    to start them (see root_image_notes)."""
    found = [f for f in _check_pod(spec, metadata)
             if platform != "kubernetes" or set(f.policies) - {SCC}]
    if platform == "kubernetes":
        found = [Finding(f.where, f.field, f.problem, [p for p in f.policies if p != SCC]) for f in found]
        found += [Finding(where, "securityContext.runAsUser", f"must be set: {note}", [KUBELET])
                  for where, note in root_image_notes(spec)]
    return found


def _check_pod(spec, metadata):
    found = []

    def add(where, field, problem, *policies):
        found.append(Finding(where, field, problem, policies))

    psc = _d(spec.get("securityContext"))
    windows = _d(spec.get("os")).get("name") == "windows"
    all_containers = list(containers(spec))

    # --- host access
    if _d(psc.get("windowsOptions")).get("hostProcess") is True:
        add("pod", "securityContext.windowsOptions.hostProcess", "must be false or unset", BASELINE)
    for field in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(field) is True:
            add("pod", field, "must be false or unset", BASELINE, SCC)

    # --- volumes
    for v in _l(spec.get("volumes")):
        v = _d(v)
        sources = [k for k in v if k != "name"] or ["emptyDir"]  # no source: the API defaults emptyDir
        for source in sources:
            if source == "hostPath":
                add("pod", f"volumes[{v.get('name')}].hostPath", "is not allowed", BASELINE, SCC)
            elif source not in RESTRICTED_VOLUMES:
                add("pod", f"volumes[{v.get('name')}].{source}",
                    f"is not an allowed volume type (allowed: {', '.join(sorted(RESTRICTED_VOLUMES))})",
                    RESTRICTED, SCC)

    # --- pod-level security context
    for sysctl in _l(psc.get("sysctls")):
        name = _d(sysctl).get("name")
        if name not in SAFE_SYSCTLS:
            add("pod", f"securityContext.sysctls[{name}]", "is not a safe sysctl", BASELINE)
    run_as_non_root_pod = psc.get("runAsNonRoot")
    if run_as_non_root_pod is False:
        add("pod", "securityContext.runAsNonRoot", "must be true or unset (false here)", RESTRICTED)
    if "runAsUser" in psc and psc["runAsUser"] is not None:
        _run_as_user(add, "pod", "securityContext.runAsUser", psc["runAsUser"])
    if psc.get("fsGroup") is not None:
        add("pod", "securityContext.fsGroup",
            f"must be unset: fixed GID {psc['fsGroup']}; restricted-v2 (fsGroup MustRunAs) assigns one "
            "from the namespace's range", SCC)
    _selinux(add, "pod", "securityContext.seLinuxOptions", psc.get("seLinuxOptions"))
    _apparmor(add, "pod", "securityContext.appArmorProfile.type", psc.get("appArmorProfile"))
    pod_seccomp = _d(psc.get("seccompProfile")).get("type")
    _seccomp(add, "pod", "securityContext.seccompProfile.type", pod_seccomp)

    for key, value in _d(_d(metadata).get("annotations")).items():
        if key.startswith(APPARMOR_ANNOTATION) and not (
                value == "runtime/default" or str(value).startswith("localhost/")):
            add("pod", f"metadata.annotations[{key}]", f"must be runtime/default or localhost/*, not {value!r}",
                BASELINE)

    # --- every container
    for where, c in all_containers:
        sc = _d(c.get("securityContext"))
        if _d(sc.get("windowsOptions")).get("hostProcess") is True:
            add(where, "securityContext.windowsOptions.hostProcess", "must be false or unset", BASELINE)
        if sc.get("privileged") is True:
            add(where, "securityContext.privileged", "must be false or unset", BASELINE, SCC)
        for port in _l(c.get("ports")):
            host_port = _d(port).get("hostPort")
            if host_port not in (None, 0):
                add(where, f"ports[{_d(port).get('name') or _d(port).get('containerPort')}].hostPort",
                    f"must be unset or 0 (is {host_port})", BASELINE, SCC)
        if sc.get("procMount") not in (None, "Default"):
            add(where, "securityContext.procMount", f"must be Default or unset (is {sc['procMount']})", BASELINE)
        _selinux(add, where, "securityContext.seLinuxOptions", sc.get("seLinuxOptions"))
        _apparmor(add, where, "securityContext.appArmorProfile.type", sc.get("appArmorProfile"))

        ape = sc.get("allowPrivilegeEscalation")
        if ape is True:
            add(where, "securityContext.allowPrivilegeEscalation", "must be false (is true)", RESTRICTED, SCC)
        elif ape is not False and not windows:
            add(where, "securityContext.allowPrivilegeEscalation", "must be false (unset)", RESTRICTED)

        caps = _d(sc.get("capabilities"))
        for cap in _l(caps.get("add")):
            if cap in RESTRICTED_CAPABILITIES:
                continue
            if cap not in BASELINE_CAPABILITIES:
                add(where, "securityContext.capabilities.add", f"must not hold {cap}", BASELINE, SCC)
            else:
                add(where, "securityContext.capabilities.add", f"must hold at most NET_BIND_SERVICE, not {cap}",
                    *([SCC] if windows else [RESTRICTED, SCC]))
        if not windows and "ALL" not in _l(caps.get("drop")):
            add(where, "securityContext.capabilities.drop", "must include ALL", RESTRICTED)

        if sc.get("runAsNonRoot") is False:
            add(where, "securityContext.runAsNonRoot", "must be true or unset (false here)", RESTRICTED)
        elif sc.get("runAsNonRoot") is None and run_as_non_root_pod is not True:
            add(where, "securityContext.runAsNonRoot",
                "must be true (here or in the pod's securityContext)", RESTRICTED)
        if sc.get("runAsUser") is not None:
            _run_as_user(add, where, "securityContext.runAsUser", sc["runAsUser"])

        seccomp = _d(sc.get("seccompProfile")).get("type")
        _seccomp(add, where, "securityContext.seccompProfile.type", seccomp)
        if seccomp is None and pod_seccomp is None and not windows:
            add(where, "securityContext.seccompProfile.type",
                "must be RuntimeDefault or Localhost (here or in the pod's securityContext)", RESTRICTED)
    return found


def _run_as_user(add, where, field, uid):
    if uid == 0:
        add(where, field, "must not be 0", RESTRICTED, SCC)
    else:
        add(where, field, f"must be unset: fixed UID {uid}; restricted-v2 (MustRunAsRange) assigns one from the "
            "namespace's range", SCC)


def _seccomp(add, where, field, kind):
    if kind is None:
        return
    if kind == "Unconfined":
        add(where, field, "must not be Unconfined", BASELINE, SCC)
    elif kind not in ("RuntimeDefault", "Localhost"):
        add(where, field, f"must be RuntimeDefault or Localhost (is {kind!r})", RESTRICTED, SCC)
    elif kind == "Localhost":
        add(where, field, "must be RuntimeDefault (restricted-v2 allows only runtime/default)", SCC)


def _selinux(add, where, field, options):
    options = _d(options)
    if options.get("type") not in SELINUX_TYPES | {None}:
        add(where, f"{field}.type", f"must be one of {', '.join(sorted(SELINUX_TYPES - {''}))} (is "
            f"{options['type']!r})", BASELINE)
    for key in ("user", "role"):
        if options.get(key):
            add(where, f"{field}.{key}", "must be unset", BASELINE)
    if any(options.get(k) for k in ("type", "user", "role", "level")):
        add(where, field, "must be unset: restricted-v2 (seLinuxContext MustRunAs) assigns the namespace's "
            "SELinux context", SCC)


def _apparmor(add, where, field, profile):
    kind = _d(profile).get("type")
    if kind is not None and kind not in ("RuntimeDefault", "Localhost"):
        add(where, field, f"must be RuntimeDefault or Localhost (is {kind!r})", BASELINE)


# Images whose default user is root (no numeric USER): with `runAsNonRoot: true` and no
# runAsUser the kubelet refuses to start them ("image will run as root") on plain Kubernetes.
# OpenShift's restricted-v2 assigns a UID, so there they start. Admission accepts both, so
# this is a note (a finding only where `render --platform kubernetes` says the pod is for plain
# Kubernetes).
ROOT_IMAGES = [
    (re.compile(r"^(?:(?:docker\.io|index\.docker\.io|registry-1\.docker\.io)/)?(?:library/)?"
                r"redis(?::[^/@]*)?(?:@.*)?$"),
     "USER unset; its entrypoint drops to UID 999 itself"),
]


def root_image_notes(spec):
    """(where, note) for each container that plain Kubernetes' kubelet would refuse to start:
    an image that runs as root, runAsNonRoot true, no runAsUser (pod or container)."""
    psc = _d(spec.get("securityContext"))
    notes = []
    for where, c in containers(spec):
        sc = _d(c.get("securityContext"))
        non_root = sc.get("runAsNonRoot") if sc.get("runAsNonRoot") is not None else psc.get("runAsNonRoot")
        uid = sc.get("runAsUser") if sc.get("runAsUser") is not None else psc.get("runAsUser")
        if non_root is not True or uid is not None:
            continue
        for pattern, why in ROOT_IMAGES:
            if pattern.match(str(c.get("image", ""))):
                notes.append((where, f"image {c.get('image')} runs as root ({why}) and runAsNonRoot is true "
                                     "with no runAsUser, so the kubelet of plain Kubernetes refuses to start it "
                                     "(CreateContainerConfigError); OpenShift assigns a UID"))
    return notes
