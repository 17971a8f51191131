//! The listener: HTTP or HTTPS (optionally requiring client certificates), HTTP Basic
//! authentication, the two DSC endpoints, `/healthz` and `/readyz`, and a graceful shutdown
//! that answers waiting long polls and lets in-flight requests finish.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use base64::Engine;
use subtle::ConstantTimeEq;
use tokio::sync::watch;

use crate::authorization::{Authorization, Identity};
use crate::config::{BasicAuth, Config, StoreConfig, TlsConfig};
use crate::dsc::{self, Endpoint, Request, ResultCode};
use crate::in_flight::InFlightLimit;
use crate::metrics::Metrics;
use crate::session::{poll_hold, replica_set_of, SessionService};
use crate::soap::{self, FaultCode};
use crate::store::memory::MemoryStore;
use crate::store::redis::RedisStore;
use crate::store::{Store, StoreError};
use tower::Layer;

pub const CLIENT_PATH: &str = "/DSess/services/DSess";
pub const ADMIN_PATH: &str = "/DSess/services/DSessAdmin";
/// How often activity heard by this shim is written to the store.
const HEARTBEAT_FLUSH: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot use the TLS material: {0}")]
    Tls(String),
    #[error("cannot set up the session store: {0}")]
    Store(#[from] StoreError),
    #[error("the listener failed: {0}")]
    Listener(#[from] std::io::Error),
}

#[derive(Clone)]
struct App {
    service: Arc<SessionService>,
    /// `Basic <base64(user:password)>`'s token, compared in constant time.
    basic_token: Option<Arc<[u8]>>,
    /// The Basic user: the identity of a request the token admitted.
    basic_user: Option<Arc<str>>,
    /// Which replica sets each identity may use (`--authorization-file`).
    authorization: Option<Arc<Authorization>>,
    max_body_bytes: usize,
    request_timeout: Duration,
    body_timeout: Duration,
    metrics: Arc<Metrics>,
}

/// What one request may cost the shim.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest request body (413 past it).
    pub max_body_bytes: usize,
    /// Longest wait on the store (503 past it).
    pub request_timeout: Duration,
    /// Longest a client may take to send its body (408 past it).
    pub body_timeout: Duration,
    /// Requests handled at once (503 at once past it).
    pub max_in_flight: usize,
}

/// Builds the store the configuration names.
pub fn build_store(config: &StoreConfig) -> Result<Arc<dyn Store>, ServerError> {
    Ok(match config {
        StoreConfig::Memory { max_sessions } => {
            let store = Arc::new(MemoryStore::bounded(*max_sessions));
            store.spawn_sweeper(crate::clock::now);
            store
        }
        StoreConfig::Redis(settings) => {
            let store = Arc::new(RedisStore::new((**settings).clone())?);
            store.spawn_rotation_listener();
            store.follow_record_keys();
            store
        }
    })
}

/// The routes, for a given service; shared by the binary and in-process tests.
pub fn router(
    service: Arc<SessionService>,
    basic_auth: Option<&BasicAuth>,
    authorization: Option<Authorization>,
    limits: Limits,
) -> Router {
    let counters = Arc::new(Metrics::new());
    watch_redis_health(service.store().clone(), &counters);
    let in_flight = InFlightLimit::new(limits.max_in_flight, counters.clone(), overloaded);
    let app = App {
        service,
        basic_token: basic_auth.map(|a| {
            base64::engine::general_purpose::STANDARD
                .encode(format!("{}:{}", a.user, a.password))
                .into_bytes()
                .into()
        }),
        basic_user: basic_auth.map(|a| a.user.as_str().into()),
        authorization: authorization.map(Arc::new),
        max_body_bytes: limits.max_body_bytes,
        request_timeout: limits.request_timeout,
        body_timeout: limits.body_timeout,
        metrics: counters,
    };
    let soap = Router::new()
        .route(CLIENT_PATH, post(soap_endpoint(Endpoint::Client)))
        .route(ADMIN_PATH, post(soap_endpoint(Endpoint::Admin)))
        .layer(in_flight);
    Router::new()
        .merge(soap)
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .route("/metrics", get(metrics))
        .with_state(Arc::new(app))
}

/// Past `--max-in-flight`: 503 at once (see `in_flight`).
fn overloaded() -> Response {
    fault(
        StatusCode::SERVICE_UNAVAILABLE,
        FaultCode::Server,
        "the shim is handling as many requests as it may (--max-in-flight); try again",
    )
}

/// Runs the shim until `shutdown` completes; `on_listening` hears the bound address.
pub async fn run(
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
    on_listening: impl FnOnce(SocketAddr) + Send + 'static,
) -> Result<(), ServerError> {
    let store = build_store(&config.store)?;
    let (stop_polls, polls_stopped) = watch::channel(false);
    let service = Arc::new(SessionService::new(
        store,
        config.session.clone(),
        Arc::new(crate::clock::now),
        polls_stopped,
    ));
    spawn_background(&service);
    if config.basic_auth.is_none() && config.tls.as_ref().and_then(|t| t.client_ca.as_ref()).is_none() {
        tracing::warn!(
            "no client authentication is configured: anyone who reaches this port can read and forge sessions"
        );
    }
    let app = router(
        service,
        config.basic_auth.as_ref(),
        config.authorization.clone(),
        Limits {
            max_body_bytes: config.max_body_bytes,
            request_timeout: config.request_timeout,
            body_timeout: config.body_timeout,
            max_in_flight: config.max_in_flight,
        },
    );

    let handle = axum_server::Handle::new();
    let grace = config.shutdown_grace;
    let delay = config.shutdown_delay;
    {
        let handle = handle.clone();
        tokio::spawn(async move {
            shutdown.await;
            if !delay.is_zero() {
                tracing::info!(
                    ?delay,
                    "shutdown signalled: serving on while the endpoint removal spreads"
                );
                tokio::time::sleep(delay).await;
            }
            tracing::info!("shutting down: answering long polls, finishing in-flight requests");
            let _ = stop_polls.send(true);
            handle.graceful_shutdown(Some(grace));
        });
    }
    let scheme = if config.tls.is_some() { "https" } else { "http" };
    {
        let handle = handle.clone();
        tokio::spawn(async move {
            if let Some(addr) = handle.listening().await {
                tracing::info!("listening on {scheme}://{addr}");
                on_listening(addr);
            }
        });
    }
    let make = app.into_make_service();
    match &config.tls {
        None => axum_server::bind(config.listen).handle(handle).serve(make).await?,
        Some(tls) => {
            let rustls = axum_server::tls_rustls::RustlsConfig::from_config(Arc::new(server_tls(tls)?));
            axum_server::bind(config.listen)
                .acceptor(ClientCertificateAcceptor {
                    inner: axum_server::tls_rustls::RustlsAcceptor::new(rustls),
                })
                .handle(handle)
                .serve(make)
                .await?
        }
    }
    Ok(())
}

/// How often the shim looks at Redis for its metrics (`redsess_shim_redis_*`).
const HEALTH_EVERY: Duration = Duration::from_secs(15);

/// Looks at Redis every `HEALTH_EVERY` while the metrics live; nothing for the embedded store.
fn watch_redis_health(store: Arc<dyn Store>, metrics: &Arc<Metrics>) {
    let metrics = Arc::downgrade(metrics);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(HEALTH_EVERY);
        loop {
            tick.tick().await;
            let health = store.health().await;
            let Some(metrics) = metrics.upgrade() else { return };
            match health {
                Ok(None) => return,
                Ok(Some(h)) => metrics.redis_seen(Some(&h)),
                Err(e) => {
                    tracing::debug!(error = %e, "cannot look at Redis for the metrics");
                    metrics.redis_seen(None);
                }
            }
        }
    });
}

fn spawn_background(service: &Arc<SessionService>) {
    let weak = Arc::downgrade(service);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(HEARTBEAT_FLUSH);
        loop {
            tick.tick().await;
            let Some(service) = weak.upgrade() else { return };
            if let Err(e) = service.flush_heartbeats().await {
                tracing::warn!(error = %e, "cannot record replica activity");
            }
        }
    });
    if let Some(interval) = service.settings().key_rotation_secs {
        let weak = Arc::downgrade(service);
        let every = Duration::from_secs((interval as u64 / 4).clamp(1, 30));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                let Some(service) = weak.upgrade() else { return };
                if let Err(e) = service.rotate_due_keys().await {
                    tracing::warn!(error = %e, "cannot rotate keys");
                }
            }
        });
    }
}

/// Installs the process's TLS crypto provider once.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

fn server_tls(tls: &TlsConfig) -> Result<rustls::ServerConfig, ServerError> {
    install_crypto_provider();
    let read = |path: &std::path::Path| {
        std::fs::read(path).map_err(|e| ServerError::Tls(format!("cannot read {}: {e}", path.display())))
    };
    let certs = rustls_pemfile::certs(&mut read(&tls.cert)?.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ServerError::Tls(format!("{}: {e}", tls.cert.display())))?;
    if certs.is_empty() {
        return Err(ServerError::Tls(format!("{} holds no certificate", tls.cert.display())));
    }
    let key = rustls_pemfile::private_key(&mut read(&tls.key)?.as_slice())
        .map_err(|e| ServerError::Tls(format!("{}: {e}", tls.key.display())))?
        .ok_or_else(|| ServerError::Tls(format!("{} holds no private key", tls.key.display())))?;
    let builder = rustls::ServerConfig::builder();
    let builder = match &tls.client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in rustls_pemfile::certs(&mut read(ca)?.as_slice()) {
                let cert = cert.map_err(|e| ServerError::Tls(format!("{}: {e}", ca.display())))?;
                roots
                    .add(cert)
                    .map_err(|e| ServerError::Tls(format!("{}: {e}", ca.display())))?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder(Arc::new(roots))
                .build()
                .map_err(|e| ServerError::Tls(format!("{}: {e}", ca.display())))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder
        .with_single_cert(certs, key)
        .map_err(|e| ServerError::Tls(format!("the certificate and key do not fit: {e}")))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

async fn ready(State(app): State<Arc<App>>) -> Response {
    match tokio::time::timeout(app.request_timeout, app.service.store().ping()).await {
        Ok(Ok(())) => (StatusCode::OK, "ready\n").into_response(),
        Ok(Err(e)) => (StatusCode::SERVICE_UNAVAILABLE, format!("{e}\n")).into_response(),
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "the session store did not answer in time\n",
        )
            .into_response(),
    }
}

async fn metrics(State(app): State<Arc<App>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
        )],
        app.metrics.encode(),
    )
        .into_response()
}

/// The subject of the client certificate a TLS connection's handshake verified.
#[derive(Debug, Clone, Default)]
struct ClientCertificate(Option<String>);

/// Accepts TLS connections and gives each request on one the subject of its client
/// certificate, for `--authorization-file`.
#[derive(Clone)]
struct ClientCertificateAcceptor {
    inner: axum_server::tls_rustls::RustlsAcceptor,
}

impl<I, S> axum_server::accept::Accept<I, S> for ClientCertificateAcceptor
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    S: Send + 'static,
{
    type Stream = tokio_rustls::server::TlsStream<I>;
    type Service = axum::middleware::AddExtension<S, ClientCertificate>;
    type Future = futures::future::BoxFuture<'static, std::io::Result<(Self::Stream, Self::Service)>>;

    fn accept(&self, stream: I, service: S) -> Self::Future {
        let acceptor = self.inner.clone();
        Box::pin(async move {
            let (stream, service) = acceptor.accept(stream, service).await?;
            let subject = stream
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|chain| chain.first())
                .and_then(|der| x509_parser::parse_x509_certificate(der).ok())
                .map(|(_, certificate)| certificate.subject().to_string());
            Ok((stream, axum::Extension(ClientCertificate(subject)).layer(service)))
        })
    }
}

/// The handler of one SOAP endpoint. It takes the request whole: axum's header extractor
/// would copy every header of every request.
fn soap_endpoint(
    endpoint: Endpoint,
) -> impl Fn(State<Arc<App>>, axum::extract::Request) -> futures::future::BoxFuture<'static, Response> + Clone {
    move |State(app), request| {
        let (mut parts, body) = request.into_parts();
        let certificate = parts.extensions.remove::<ClientCertificate>().and_then(|c| c.0);
        Box::pin(serve_soap(app, endpoint, certificate, parts.headers, body))
    }
}

fn xml(status: StatusCode, body: String) -> Response {
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/xml; charset=utf-8"),
        )],
        body,
    )
        .into_response()
}

fn fault(status: StatusCode, code: FaultCode, message: &str) -> Response {
    xml(status, soap::fault(code, message))
}

fn authorized(app: &App, headers: &HeaderMap) -> bool {
    let Some(expected) = &app.basic_token else { return true };
    let Some(value) = headers.get(header::AUTHORIZATION).map(|v| v.as_bytes()) else {
        return false;
    };
    let Some(space) = value.iter().position(|b| *b == b' ') else {
        return false;
    };
    let (scheme, token) = value.split_at(space);
    scheme.eq_ignore_ascii_case(b"basic") && bool::from(token.trim_ascii().ct_eq(expected))
}

/// A body somewhat over the limit is read to its end (and dropped) before the 413 goes out:
/// a client still writing it would otherwise find the connection reset instead of the answer.
/// Past this many times the limit, or past the request timeout, the shim stops reading.
const DRAIN_FACTOR: usize = 8;

enum BodyError {
    TooLarge,
    Read(axum::Error),
}

/// The body, if it holds at most `max` bytes; when it holds more, drains it (see DRAIN_FACTOR).
async fn read_body(body: Body, max: usize, drain_within: Duration) -> Result<bytes::Bytes, BodyError> {
    use futures::StreamExt;
    let mut stream = body.into_data_stream();
    let mut buf = bytes::BytesMut::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(BodyError::Read)?;
        if buf.len() + chunk.len() > max {
            let mut seen = buf.len() + chunk.len();
            let _ = tokio::time::timeout(drain_within, async {
                while seen <= max.saturating_mul(DRAIN_FACTOR) {
                    match stream.next().await {
                        Some(Ok(c)) => seen += c.len(),
                        _ => break,
                    }
                }
            })
            .await;
            return Err(BodyError::TooLarge);
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf.freeze())
}

/// `response` with `Connection: close`: the rest of the body is not read, so the connection
/// cannot carry another request.
fn closing(mut response: Response) -> Response {
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

/// The cause a fault is counted under, when its status alone does not tell.
#[derive(Clone, Copy)]
struct FaultCause(&'static str);

async fn serve_soap(
    app: Arc<App>,
    endpoint: Endpoint,
    certificate: Option<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let response = answer_soap(&app, endpoint, certificate, headers, body).await;
    if let Some(FaultCause(cause)) = response.extensions().get::<FaultCause>() {
        app.metrics.fault(cause);
    } else if response.status() != StatusCode::OK {
        app.metrics.fault(match response.status() {
            StatusCode::UNAUTHORIZED => "unauthorized",
            StatusCode::PAYLOAD_TOO_LARGE => "too_large",
            StatusCode::REQUEST_TIMEOUT => "slow_body",
            StatusCode::SERVICE_UNAVAILABLE => "store_unavailable",
            _ => "bad_request",
        });
    }
    response
}

async fn answer_soap(
    app: &App,
    endpoint: Endpoint,
    certificate: Option<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    if !authorized(app, &headers) {
        let mut r = fault(
            StatusCode::UNAUTHORIZED,
            FaultCode::Client,
            "HTTP Basic authentication is required",
        );
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"redsess\""),
        );
        return r;
    }
    let too_large = || {
        closing(fault(
            StatusCode::PAYLOAD_TOO_LARGE,
            FaultCode::Client,
            &format!("the request body is larger than {} bytes", app.max_body_bytes),
        ))
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > app.max_body_bytes.saturating_mul(DRAIN_FACTOR)) {
        return too_large();
    }
    let read = tokio::time::timeout(
        app.body_timeout,
        read_body(body, app.max_body_bytes, app.request_timeout),
    );
    let bytes = match read.await {
        Err(_) => {
            return closing(fault(
                StatusCode::REQUEST_TIMEOUT,
                FaultCode::Client,
                &format!("the request body did not arrive within {:?}", app.body_timeout),
            ))
        }
        Ok(read) => read,
    };
    let bytes = match bytes {
        Ok(b) => b,
        Err(BodyError::TooLarge) => return too_large(),
        Err(BodyError::Read(e)) => {
            return fault(
                StatusCode::BAD_REQUEST,
                FaultCode::Client,
                &format!("cannot read the request body: {e}"),
            )
        }
    };
    let operation = match soap::read_operation(&bytes) {
        Ok(op) => op,
        Err(e) => {
            tracing::debug!(error = %e, "refused a request that is not a SOAP envelope");
            return fault(StatusCode::BAD_REQUEST, FaultCode::Client, &e.to_string());
        }
    };
    let request = match dsc::parse_request(endpoint, &operation) {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(error = %e, "refused a request");
            return match e.known_operation() {
                // WebSEAL understands an answer in the operation's own shape best.
                Some(op) => {
                    app.metrics
                        .answered(op, ResultCode::InvalidParameter.name(), Duration::ZERO);
                    xml(
                        StatusCode::OK,
                        dsc::Response::refusal(op, ResultCode::InvalidParameter).to_xml(),
                    )
                }
                None => fault(StatusCode::BAD_REQUEST, FaultCode::Client, &e.to_string()),
            };
        }
    };
    let operation = request.operation();
    if let Some(authorization) = &app.authorization {
        let identity = Identity {
            user: app.basic_user.as_deref().map(String::from),
            certificate,
        };
        let replica_set = replica_set_of(&request);
        if !authorization.permits(&identity, replica_set) {
            tracing::warn!(%identity, operation, replica_set,
                "refused a request: the identity may not use the replica set (--authorization-file)");
            let refused = ResultCode::NotAuthorized;
            app.metrics.answered(operation, refused.name(), Duration::ZERO);
            return xml(StatusCode::OK, dsc::Response::refusal(operation, refused).to_xml());
        }
    }
    let limit = match &request {
        Request::GetUpdates(r) => app.request_timeout + poll_hold(r.response_by_secs),
        _ => app.request_timeout,
    };
    let started = std::time::Instant::now();
    let polling = matches!(request, Request::GetUpdates(_));
    if polling {
        app.metrics.waiting_polls.inc();
    }
    let handled = tokio::time::timeout(limit, app.service.handle(request)).await;
    if polling {
        app.metrics.waiting_polls.dec();
    }
    match handled {
        Ok(Ok(answer)) => {
            tracing::debug!(operation, result = answer.result().name(), "answered");
            app.metrics
                .answered(operation, answer.result().name(), started.elapsed());
            xml(StatusCode::OK, answer.to_xml())
        }
        Ok(Err(e)) => {
            tracing::warn!(operation, error = %e, "the session store failed");
            let mut r = fault(StatusCode::SERVICE_UNAVAILABLE, FaultCode::Server, &e.to_string());
            r.extensions_mut().insert(FaultCause(e.cause()));
            r
        }
        Err(_) => {
            tracing::warn!(operation, "the session store did not answer in time");
            fault(
                StatusCode::SERVICE_UNAVAILABLE,
                FaultCode::Server,
                &format!("the session store did not answer within {:?}", app.request_timeout),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A body of `chunks` × 4 KiB that counts how much of it was read.
    fn counted_body(chunks: usize) -> (Body, Arc<AtomicUsize>) {
        let read = Arc::new(AtomicUsize::new(0));
        let counter = read.clone();
        let stream = futures::stream::iter((0..chunks).map(move |_| {
            counter.fetch_add(4096, Ordering::SeqCst);
            Ok::<_, std::io::Error>(bytes::Bytes::from(vec![b'a'; 4096]))
        }));
        (Body::from_stream(stream), read)
    }

    /// Regression: a body over the limit was left unread, so a client still sending it found
    /// the connection reset instead of the 413 (and reused a connection about to close).
    #[tokio::test]
    async fn bodies_over_the_limit_are_drained_then_refused() {
        let (body, read) = counted_body(50);
        let outcome = read_body(body, 65536, Duration::from_secs(5)).await;
        assert!(matches!(outcome, Err(BodyError::TooLarge)));
        assert_eq!(
            read.load(Ordering::SeqCst),
            50 * 4096,
            "the rest of the body was not drained"
        );

        // Far over the limit, draining stops.
        let (body, read) = counted_body(1000);
        let outcome = read_body(body, 65536, Duration::from_secs(5)).await;
        assert!(matches!(outcome, Err(BodyError::TooLarge)));
        assert!(read.load(Ordering::SeqCst) <= 65536 * DRAIN_FACTOR + 4096);

        let (body, _) = counted_body(16);
        let bytes = read_body(body, 65536, Duration::from_secs(5)).await.ok().unwrap();
        assert_eq!(bytes.len(), 65536);
    }
}
