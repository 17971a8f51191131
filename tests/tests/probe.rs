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

/// Waiting long polls hold no thread: two probes, each holding a getUpdates for 1.5 s, pass
/// together against a shim that has a single worker thread.
#[test]
fn long_polls_share_a_single_worker_thread() {
    let redis = RedisServer::start();
    let shim = Shim::start(&["--worker-threads", "1"], &[("REDSESS_REDIS_URL", &redis.url())]);
    let workers = std::fs::read_dir(format!("/proc/{}/task", shim.pid()))
        .expect("the shim's threads")
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .filter(|name| name.trim() == "tokio-rt-worker")
        .count();
    assert_eq!(workers, 1, "--worker-threads 1 should start one worker thread");
    let started = std::time::Instant::now();
    let probes: Vec<_> = ["probe-a", "probe-b"]
        .into_iter()
        .map(|replica| {
            let url = shim.url();
            std::thread::spawn(move || run_probe(&url, &["--replica", replica], &[]))
        })
        .collect();
    for probe in probes {
        let (ok, out) = probe.join().expect("probe thread");
        assert!(ok, "{out}\n--- shim log:\n{}", shim.logs());
    }
    // One probe alone takes about its long poll's 1.5 s; two in turn would take twice that.
    assert!(
        started.elapsed() < std::time::Duration::from_millis(2900),
        "two probes took {:?}",
        started.elapsed()
    );
}

#[test]
fn a_worker_thread_count_out_of_range_is_refused_naming_the_setting() {
    let (status, err) = Shim::refuse(&["--worker-threads", "5000"], &[]);
    assert!(!status.success());
    assert!(err.contains("--worker-threads") && err.contains("0..=1024"), "{err}");
}
