//! snapgate: an EVO Snap* (CWS v2.0) Terminal Authentication gateway.
//!
//! Request path: `server` (HTTP, limits, routing) → `soap` (envelope) → `ops` (one file per
//! operation) → `dukpt` / `token` / `store` → back through `error` (the one fault mapping).
#![forbid(unsafe_code)]

pub mod admin;
pub mod app;
pub mod card;
pub mod clock;
pub mod config;
pub mod dukpt;
pub mod error;
pub mod limiter;
pub mod metrics;
pub mod ops;
pub mod processor;
pub mod server;
pub mod session;
pub mod soap;
pub mod store;
pub mod tls;
pub mod token;
pub mod util;
