//! snapgate: an EVO Snap* (CWS v2.0) Terminal Authentication gateway.
//!
//! One folder per service over shared parts (map: `docs/ARCHITECTURE.md`). The CWS request path:
//! `server` (HTTP, limits, routing) → `cws::soap` (envelope) → `cws::ops` (one file per
//! operation) → `dukpt` / `token` / `store` → back through `cws::error` (the one fault mapping).
#![forbid(unsafe_code)]

pub mod admin;
pub mod app;
pub mod cli;
pub mod clock;
pub mod config;
pub mod connector;
pub mod cws;
pub mod dukpt;
pub mod http;
pub mod metrics;
pub mod pairing;
pub mod server;
pub mod store;
pub mod tls;
pub mod token;
pub mod util;
pub mod ws;
