//! Prometheus metrics of the shim, served at `/metrics`: requests by operation and result,
//! their duration, faults by cause, and the long polls waiting now.

use std::sync::atomic::AtomicI64;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

// Labels are the shim's own names (operations, result codes, causes), never a client's text:
// `&'static str` keeps counting a request free of allocations.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OperationResult {
    pub operation: &'static str,
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Operation {
    pub operation: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Cause {
    pub cause: &'static str,
}

pub struct Metrics {
    registry: Registry,
    requests: Family<OperationResult, Counter>,
    durations: Family<Operation, Histogram>,
    faults: Family<Cause, Counter>,
    pub waiting_polls: Gauge<i64, AtomicI64>,
    redis: RedisGauges,
}

/// Redis as the shim last saw it (`store::ServerHealth`), every `HEALTH_EVERY`.
#[derive(Default)]
struct RedisGauges {
    up: Gauge,
    connected_replicas: Gauge,
    replication_lag_bytes: Gauge,
    used_memory_bytes: Gauge,
    max_memory_bytes: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("redsess_shim");
        let requests = Family::<OperationResult, Counter>::default();
        registry.register(
            "requests",
            "DSC requests answered, by operation and result code",
            requests.clone(),
        );
        // 50 µs .. ~1.6 s; long polls are counted but their hold time is not a latency.
        let durations = Family::<Operation, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.00005, 2.0, 16))
        });
        registry.register(
            "request_duration_seconds",
            "Time to answer a DSC request (getUpdates excluded)",
            durations.clone(),
        );
        let faults = Family::<Cause, Counter>::default();
        registry.register(
            "faults",
            "Requests answered with a SOAP fault or an HTTP error, by cause",
            faults.clone(),
        );
        registry.register(
            "records_unopened",
            "Session records treated as absent because they did not open, by cause (tampered, unknown_key, plain, no_keys, truncated)",
            crate::store::sealing::UNOPENED.clone(),
        );
        registry.register(
            "sessions_evicted",
            "Sessions the embedded store ended, least recently used first, to stay within --max-sessions",
            crate::store::memory::EVICTED.clone(),
        );
        registry.register(
            "embedded_sessions",
            "Sessions the embedded store holds (0 with Redis)",
            crate::store::memory::STORED.clone(),
        );
        let waiting_polls = Gauge::<i64, AtomicI64>::default();
        registry.register(
            "waiting_polls",
            "getUpdates long polls waiting now",
            waiting_polls.clone(),
        );
        let redis = RedisGauges::default();
        for (name, help, gauge) in [
            (
                "redis_up",
                "Whether the Redis the shim writes to answered its last look as a primary (1) or not (0)",
                &redis.up,
            ),
            (
                "redis_connected_replicas",
                "Replicas streaming from the primary",
                &redis.connected_replicas,
            ),
            (
                "redis_replication_lag_bytes",
                "How far the furthest replica is behind the primary, in bytes of the replication stream",
                &redis.replication_lag_bytes,
            ),
            ("redis_used_memory_bytes", "Memory Redis uses", &redis.used_memory_bytes),
            (
                "redis_max_memory_bytes",
                "Redis's maxmemory (0: none)",
                &redis.max_memory_bytes,
            ),
        ] {
            registry.register(name, help, gauge.clone());
        }
        Self {
            registry,
            requests,
            durations,
            faults,
            waiting_polls,
            redis,
        }
    }

    pub fn answered(&self, operation: &'static str, result: &'static str, took: Duration) {
        self.requests
            .get_or_create(&OperationResult { operation, result })
            .inc();
        if operation != "getUpdates" {
            self.durations
                .get_or_create(&Operation { operation })
                .observe(took.as_secs_f64());
        }
    }

    /// What a look at Redis found: its health, or nothing (it did not answer).
    pub fn redis_seen(&self, health: Option<&crate::store::ServerHealth>) {
        let r = &self.redis;
        match health {
            Some(h) => {
                r.up.set(i64::from(h.primary));
                r.connected_replicas.set(h.connected_replicas);
                r.replication_lag_bytes.set(h.replication_lag_bytes);
                r.used_memory_bytes.set(h.used_memory_bytes);
                r.max_memory_bytes.set(h.max_memory_bytes);
            }
            None => {
                r.up.set(0);
            }
        }
    }

    pub fn fault(&self, cause: &'static str) {
        self.faults.get_or_create(&Cause { cause }).inc();
    }

    /// The text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry).expect("writing to a String");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_show_in_the_exposition() {
        let m = Metrics::new();
        m.answered("getSession", "success", Duration::from_micros(300));
        m.fault("store_unavailable");
        let text = m.encode();
        assert!(
            text.contains(r#"redsess_shim_requests_total{operation="getSession",result="success"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"redsess_shim_faults_total{cause="store_unavailable"} 1"#),
            "{text}"
        );
        assert!(text.contains("redsess_shim_request_duration_seconds_bucket"), "{text}");
    }
}
