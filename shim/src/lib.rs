//! redsess-shim: speaks IBM WebSEAL's Distributed Session Cache protocol (SOAP) and keeps the
//! sessions in Redis, or in memory when no Redis is configured.
//!
//! One request's way: `server` (listener, `in_flight` bound, auth, size limit, `authorization`)
//! → `soap` (envelope) → `dsc` (typed operation) → `session` (the rules) → `store` (memory or
//! Redis) → `dsc` answer.

pub mod admin;
pub mod authorization;
pub mod client;
pub mod clock;
pub mod config;
pub mod dsc;
pub mod in_flight;
pub mod items;
pub mod metrics;
pub mod probe;
pub mod server;
pub mod session;
pub mod soap;
pub mod store;
