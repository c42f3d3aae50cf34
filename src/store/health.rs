//! Liveness and readiness of a node: live while the process answers; ready while its store
//! answers too (a load balancer takes a node whose database is unreachable out of rotation).

use super::TerminalStore;
use bytes::Bytes;
use http_body_util::Full;
use hyper::{Response, StatusCode};
use std::sync::Arc;

/// `GET /readyz`: 200 "ready" once a store round trip succeeds, else 503 naming no secret
/// (the ping is bounded by the store's own timeout and runs off the async workers).
pub async fn readyz(store: Arc<dyn TerminalStore>) -> Response<Full<Bytes>> {
    let res = tokio::task::spawn_blocking(move || store.ping()).await;
    let (status, body) = match res {
        Ok(Ok(())) => (StatusCode::OK, "ready\n".to_owned()),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "not ready: the store does not answer");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "not ready: store unavailable\n".to_owned(),
            )
        }
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "not ready\n".to_owned()),
    };
    crate::http::plain(status, "text/plain; charset=utf-8", Bytes::from(body))
}
