//! Security contexts that OpenShift's `restricted-v2` SCC and the Kubernetes `restricted` Pod
//! Security Standard accept unchanged: non-root, no fixed UID or fsGroup (OpenShift assigns
//! them), no privilege escalation, every capability dropped, seccomp `RuntimeDefault`.

use k8s_openapi::api::core::v1::{Capabilities, PodSecurityContext, SeccompProfile, SecurityContext};

pub fn pod() -> PodSecurityContext {
    PodSecurityContext {
        run_as_non_root: Some(true),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".into(),
            ..SeccompProfile::default()
        }),
        ..PodSecurityContext::default()
    }
}

/// `read_only_root`: the program writes only to mounted volumes.
pub fn container(read_only_root: bool) -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        privileged: Some(false),
        run_as_non_root: Some(true),
        read_only_root_filesystem: Some(read_only_root),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".into()]),
            ..Capabilities::default()
        }),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".into(),
            ..SeccompProfile::default()
        }),
        ..SecurityContext::default()
    }
}
