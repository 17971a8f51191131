//! The operator's HTTP endpoints: `/metrics` (Prometheus/OpenMetrics text), `/healthz` (the
//! process runs: always 200) and `/readyz` (200 once this replica knows its role: the leader
//! once its SessionCache watch has synchronised, a standby once it knows another replica leads;
//! and, with the admission webhook on, once that serves).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

use crate::metrics::Metrics;

/// What `/readyz` reports.
#[derive(Debug, Default)]
pub struct Health {
    /// The controller runs and its primary watch has listed every SessionCache.
    pub controller_ready: AtomicBool,
    /// Leader election found another replica leading: this one waits, which is a known state.
    pub standby: AtomicBool,
    /// The admission webhook is configured but not serving yet: the webhook Service must not
    /// send this replica reviews it cannot answer (they would be refused).
    pub webhook_pending: AtomicBool,
}

impl Health {
    pub fn is_ready(&self) -> bool {
        (self.controller_ready.load(Ordering::SeqCst) || self.standby.load(Ordering::SeqCst))
            && !self.webhook_pending.load(Ordering::SeqCst)
    }
}

#[derive(Clone)]
struct AppState {
    metrics: Arc<Metrics>,
    health: Arc<Health>,
}

pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, OPENMETRICS)], state.metrics.encode())
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(state): State<AppState>) -> (StatusCode, &'static str) {
    if state.health.is_ready() {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
    }
}

pub fn router(metrics: Arc<Metrics>, health: Arc<Health>) -> Router {
    Router::new()
        .route("/metrics", get(self::metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(AppState { metrics, health })
}

/// Serves the endpoints on `addr` until `shutdown` completes.
pub async fn serve(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(addr = %listener.local_addr()?, "serving /metrics, /healthz, /readyz");
    axum::serve(listener, router(metrics, health))
        .with_graceful_shutdown(shutdown)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use http::Request;
    use tower::ServiceExt;

    async fn get(router: Router, path: &str) -> (StatusCode, String, Option<String>) {
        let response = router
            .oneshot(Request::get(path).body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let content_type = response
            .headers()
            .get(header::CONTENT_TYPE)
            .map(|v| v.to_str().unwrap().to_string());
        let body = axum::body::to_bytes(response.into_body(), 1 << 20).await.unwrap();
        (status, String::from_utf8(body.to_vec()).unwrap(), content_type)
    }

    #[tokio::test]
    async fn endpoints() {
        let metrics = Arc::new(Metrics::new());
        metrics.reconcile_started();
        let health = Arc::new(Health::default());
        let app = router(metrics, health.clone());

        assert_eq!(get(app.clone(), "/healthz").await.0, StatusCode::OK);
        assert_eq!(get(app.clone(), "/readyz").await.0, StatusCode::SERVICE_UNAVAILABLE);
        health.standby.store(true, Ordering::SeqCst);
        assert_eq!(get(app.clone(), "/readyz").await.0, StatusCode::OK);
        health.standby.store(false, Ordering::SeqCst);
        health.controller_ready.store(true, Ordering::SeqCst);
        assert_eq!(get(app.clone(), "/readyz").await.0, StatusCode::OK);
        health.webhook_pending.store(true, Ordering::SeqCst);
        assert_eq!(
            get(app.clone(), "/readyz").await.0,
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready while its webhook does not serve"
        );
        health.webhook_pending.store(false, Ordering::SeqCst);

        let (status, body, content_type) = get(app, "/metrics").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(content_type.as_deref(), Some(OPENMETRICS));
        assert!(body.contains("redsess_operator_reconciles_total 1"), "{body}");
        assert!(body.ends_with("# EOF\n"), "{body}");
    }
}
