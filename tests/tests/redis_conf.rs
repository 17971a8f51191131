//! The redis.conf the operator renders, run by a real `redis-server`: Redis takes every line of
//! it, and the memory bound and policy are what validation planned. (Port and bind address are
//! overridden on the command line and the data directory rebased, as nothing here is a pod.)

use std::collections::BTreeMap;

use redsess_operator::build::{self, Emitted, Observed};
use redsess_operator::validate::validate;
use redsess_tests::RedisServer;

fn rendered_conf(spec: &str) -> String {
    let sc = serde_yaml::from_str(&format!(
        "apiVersion: redsess.io/v1alpha1\nkind: SessionCache\nmetadata: {{name: sessions, namespace: isam, uid: u1}}\nspec: {spec}"
    ))
    .unwrap();
    let plan = validate(&sc).unwrap();
    let owner = k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
        api_version: "redsess.io/v1alpha1".into(),
        kind: "SessionCache".into(),
        name: "sessions".into(),
        uid: "u1".into(),
        ..Default::default()
    };
    build::all(&plan, &owner, &Observed::default(), &mut String::new)
        .into_iter()
        .find_map(|o| match o {
            Emitted::ConfigMap(c) if c.metadata.name.as_deref() == Some("sessions-redis-config") => c
                .data
                .and_then(|d: BTreeMap<String, String>| d.get("redis.conf").cloned()),
            _ => None,
        })
        .expect("the Redis ConfigMap has redis.conf")
}

fn config_get(redis: &RedisServer, name: &str) -> String {
    redsess_tests::resp_strings(&redis.command(&format!("CONFIG GET {name}")).unwrap())
        .get(1)
        .cloned()
        .unwrap_or_default()
}

#[test]
fn redis_takes_the_rendered_conf_with_its_memory_bound() {
    for (spec, maxmemory, policy) in [
        (
            "{redis: {resources: {limits: {memory: 1536Mi}}}}",
            "805306368",
            "noeviction",
        ),
        (
            "{redis: {config: {maxmemory: 1gb, maxmemory-policy: volatile-ttl}}}",
            "1073741824",
            "volatile-ttl",
        ),
        ("{}", "0", "noeviction"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("redis.conf");
        // Redis changes into `dir` as it reads the line: the pod's volume is a directory here.
        let text = rendered_conf(spec);
        assert!(text.contains("\ndir /data\n"), "{text}");
        let text = text.replace("\ndir /data\n", &format!("\ndir {}\n", dir.path().display()));
        std::fs::write(&conf, text).unwrap();
        let redis = RedisServer::start_with_conf(Some(&conf), &[]);
        assert_eq!(config_get(&redis, "maxmemory"), maxmemory, "{spec}");
        assert_eq!(config_get(&redis, "maxmemory-policy"), policy, "{spec}");
    }
}
