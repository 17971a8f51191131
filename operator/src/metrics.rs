//! The operator's Prometheus metrics (prometheus-client), served on `/metrics` by [`crate::http`]:
//!
//! - `redsess_operator_reconciles_total`: reconciles started;
//! - `redsess_operator_reconcile_failures_total{reason}`: reconciles that failed, by reason
//!   (`invalid_spec`, `observe`, `apply`, `cleanup`, `status`, …);
//! - `redsess_operator_reconcile_duration_seconds`: histogram of reconcile durations.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FailureLabels {
    pub reason: String,
}

pub struct Metrics {
    registry: Registry,
    reconciles: Counter,
    failures: Family<FailureLabels, Counter>,
    duration: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics")
            .field("reconciles", &self.reconciles.get())
            .finish_non_exhaustive()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("redsess_operator");
        let reconciles = Counter::default();
        let failures = Family::<FailureLabels, Counter>::default();
        // 5 ms … ~41 s.
        let duration = Histogram::new(exponential_buckets(0.005, 2.0, 14));
        registry.register("reconciles", "Reconciles of SessionCache resources", reconciles.clone());
        registry.register(
            "reconcile_failures",
            "Reconciles that failed, by reason",
            failures.clone(),
        );
        registry.register_with_unit(
            "reconcile_duration",
            "How long a reconcile took",
            Unit::Seconds,
            duration.clone(),
        );
        Self {
            registry,
            reconciles,
            failures,
            duration,
        }
    }

    pub fn reconcile_started(&self) {
        self.reconciles.inc();
    }

    pub fn reconcile_finished(&self, took: Duration) {
        self.duration.observe(took.as_secs_f64());
    }

    pub fn reconcile_failed(&self, reason: &str) {
        self.failures
            .get_or_create(&FailureLabels { reason: reason.into() })
            .inc();
    }

    pub fn failures(&self, reason: &str) -> u64 {
        self.failures
            .get(&FailureLabels { reason: reason.into() })
            .map(|c| c.get())
            .unwrap_or(0)
    }

    pub fn reconciles(&self) -> u64 {
        self.reconciles.get()
    }

    /// The OpenMetrics text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_documented_scheme() {
        let m = Metrics::new();
        m.reconcile_started();
        m.reconcile_failed("apply");
        m.reconcile_finished(Duration::from_millis(20));
        let text = m.encode();
        assert!(text.contains("redsess_operator_reconciles_total 1"), "{text}");
        assert!(
            text.contains("redsess_operator_reconcile_failures_total{reason=\"apply\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("redsess_operator_reconcile_duration_seconds_count 1"),
            "{text}"
        );
        assert!(
            text.contains("redsess_operator_reconcile_duration_seconds_bucket{le="),
            "{text}"
        );
        assert_eq!(m.failures("apply"), 1);
        assert_eq!(m.failures("status"), 0);
    }
}
