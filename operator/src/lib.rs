//! redsess-operator: reconciles `SessionCache` resources into Redis (with Sentinel when
//! replicated), the redsess-shim, and the configuration WebSEAL and IAG need.
//!
//! A reconcile is a pipeline: observe → validate → key material (`redis_tls`, `record_keys`:
//! they may draw new keys) → build (pure, one module per emitted kind) → apply (server-side apply, one field
//! manager) → status.

pub mod admission;
pub mod api_error;
pub mod apply;
pub mod build;
pub mod certificates;
pub mod controller;
pub mod crd;
pub mod defaulting;
pub mod discovery;
pub mod http;
pub mod leader;
pub mod metrics;
pub mod names;
pub mod observe;
pub mod record_keys;
pub mod redis_tls;
pub mod render;
pub mod status;
pub mod validate;
pub mod webhook;

#[cfg(test)]
mod fixtures;
