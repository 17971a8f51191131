//! Security contexts that OpenShift's `restricted-v2` SCC and the Kubernetes `restricted` Pod
//! Security Standard accept unchanged: non-root, no fixed UID or fsGroup (OpenShift assigns
//! them), no privilege escalation, every capability dropped, seccomp `RuntimeDefault`.

use k8s_openapi::api::core::v1::{Capabilities, PodSecurityContext, SeccompProfile, SecurityContext};

use crate::validate::Platform;

/// The `redis` user of the official Redis image.
pub const REDIS_IMAGE_UID: i64 = 999;

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

/// For images whose default user is root (the official Redis image): on plain Kubernetes
/// they run as that image's `redis` user, with it as fsGroup so the volumes are writable; on
/// OpenShift the platform assigns both, and a fixed one would be refused.
pub fn pod_for_root_image(platform: Platform) -> PodSecurityContext {
    match platform {
        Platform::OpenShift => pod(),
        Platform::Kubernetes => PodSecurityContext {
            run_as_user: Some(REDIS_IMAGE_UID),
            run_as_group: Some(REDIS_IMAGE_UID),
            fs_group: Some(REDIS_IMAGE_UID),
            fs_group_change_policy: Some("OnRootMismatch".into()),
            ..pod()
        },
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::{all, Emitted, Observed};
    use crate::crd::SessionCache;
    use crate::validate::validate;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

    /// Pod security contexts of every workload a replicated SessionCache emits on `platform`.
    fn pods(platform: Platform) -> Vec<(String, PodSecurityContext)> {
        let sc: SessionCache = serde_yaml::from_str(
            "apiVersion: redsess.io/v1alpha1\nkind: SessionCache\nmetadata: {name: c, namespace: n}\nspec: {redis: {replicas: 3}}\n",
        )
        .unwrap();
        let plan = validate(&sc).unwrap().on(platform);
        let mut secret = || "x".to_string();
        all(&plan, &OwnerReference::default(), &Observed::default(), &mut secret)
            .into_iter()
            .filter_map(|o| {
                let spec = match &o {
                    Emitted::StatefulSet(s) => s.spec.as_ref()?.template.spec.clone(),
                    Emitted::Deployment(d) => d.spec.as_ref()?.template.spec.clone(),
                    _ => None,
                }?;
                Some((o.name().to_string(), spec.security_context?))
            })
            .collect()
    }

    #[test]
    fn openshift_pods_carry_no_fixed_ids() {
        let pods = pods(Platform::OpenShift);
        assert_eq!(pods.len(), 3);
        for (name, ctx) in pods {
            assert_eq!((ctx.run_as_user, ctx.fs_group), (None, None), "{name}");
            assert_eq!(ctx.run_as_non_root, Some(true), "{name}");
        }
    }

    #[test]
    fn on_kubernetes_only_the_redis_image_pods_get_its_user() {
        for (name, ctx) in pods(Platform::Kubernetes) {
            let expected = (!name.ends_with("-shim")).then_some(REDIS_IMAGE_UID);
            assert_eq!((ctx.run_as_user, ctx.fs_group), (expected, expected), "{name}");
        }
    }
}
