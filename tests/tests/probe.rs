//! The probe's WebSEAL-like lifecycle against the real binary, on each store.

use redsess_tests::{run_probe, RedisServer, Shim};

#[test]
fn probe_passes_against_the_embedded_store() {
    let shim = Shim::start(&[], &[]);
    let (ok, out) = run_probe(&shim.url(), &[], &[]);
    assert!(ok, "{out}\n--- shim log:\n{}", shim.logs());
    assert!(out.contains("probe: 18 steps passed"), "{out}");
    // What the probe did shows in the metrics, result codes included.
    let (status, metrics) = shim.http_get("/metrics").expect("GET /metrics");
    assert_eq!(status, 200);
    for line in [
        r#"redsess_shim_requests_total{operation="getSession",result="success"} 3"#,
        r#"redsess_shim_requests_total{operation="getSession",result="session_not_found"} 1"#,
        r#"redsess_shim_requests_total{operation="changeSession",result="stale_version"} 1"#,
    ] {
        assert!(metrics.contains(line), "{line} missing from\n{metrics}");
    }
}

#[test]
fn probe_passes_against_redis() {
    let redis = RedisServer::start();
    let shim = Shim::start(&[], &[("REDSESS_REDIS_URL", &redis.url())]);
    let (ok, out) = run_probe(&shim.url(), &[], &[]);
    assert!(ok, "{out}\n--- shim log:\n{}", shim.logs());
    assert!(out.contains("getUpdates") && out.contains("held 1.5s"), "{out}");
}
