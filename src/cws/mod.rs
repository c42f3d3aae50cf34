//! The CWS gateway: EVO Snap* / CWS v2.0 Terminal Authentication and transaction processing over
//! SOAP 1.1 (and the REST registration form).
//!
//! Request path inside this service: `soap` (envelope codec, limits) → `ops` (one file per
//! operation) → `session` (token authentication, refresh state machine) and `processor`
//! (sandbox or forward) with `card` (track data) → `error` (the one mapping to CWS faults).
//! Shared parts (`dukpt`, `token`, `store`, `config`) live beside this folder.

pub mod card;
pub mod error;
pub mod http;
pub mod limiter;
pub mod merchants;
pub mod ops;
pub mod processor;
pub mod session;
pub mod soap;
pub mod wsdl;
