//! redsess-operator: reconciles `SessionCache` resources into Redis (with Sentinel when
//! replicated), the redsess-shim, and the configuration WebSEAL and IAG need.
//!
//! A reconcile is a pipeline: observe → validate → build (pure, one module per emitted kind)
//! → apply (server-side apply, one field manager) → status.

pub mod crd;
pub mod names;
pub mod validate;
