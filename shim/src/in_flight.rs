//! The bound on SOAP requests handled at once (`--max-in-flight`), as a tower layer on the
//! SOAP routes. Past the bound a request gets a 503 fault at once, rather than a place in a
//! queue that would hold every client's connection. The probes and `/metrics` stay outside
//! it, so an overloaded shim is still seen as alive.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::extract::Request;
use axum::response::Response;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::metrics::Metrics;

/// What a request refused by the bound is answered, and counted as.
pub type Refusal = fn() -> Response;

#[derive(Clone)]
pub struct InFlightLimit {
    permits: Arc<Semaphore>,
    metrics: Arc<Metrics>,
    refusal: Refusal,
}

impl InFlightLimit {
    pub fn new(max: usize, metrics: Arc<Metrics>, refusal: Refusal) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(max)),
            metrics,
            refusal,
        }
    }
}

impl<S> tower::Layer<S> for InFlightLimit {
    type Service = InFlight<S>;

    fn layer(&self, inner: S) -> InFlight<S> {
        InFlight {
            inner,
            limit: self.clone(),
        }
    }
}

#[derive(Clone)]
pub struct InFlight<S> {
    inner: S,
    limit: InFlightLimit,
}

impl<S> tower::Service<Request> for InFlight<S>
where
    S: tower::Service<Request, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Admitted<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        match self.limit.permits.clone().try_acquire_owned() {
            Ok(permit) => Admitted::Handling {
                inner: self.inner.call(request),
                _permit: permit,
            },
            Err(_) => {
                self.limit.metrics.fault("overloaded");
                Admitted::Refused {
                    response: Some((self.limit.refusal)()),
                }
            }
        }
    }
}

pin_project_lite::pin_project! {
    /// A request's answer: handled while it holds its place, or refused at once. No box: the
    /// bound costs a request one atomic operation and nothing else.
    #[project = AdmittedProjection]
    pub enum Admitted<F> {
        Handling { #[pin] inner: F, _permit: OwnedSemaphorePermit },
        Refused { response: Option<Response> },
    }
}

impl<F> Future for Admitted<F>
where
    F: Future<Output = Result<Response, Infallible>>,
{
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            AdmittedProjection::Handling { inner, .. } => inner.poll(cx),
            AdmittedProjection::Refused { response } => Poll::Ready(Ok(response.take().unwrap_or_default())),
        }
    }
}
