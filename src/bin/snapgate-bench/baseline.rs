//! The baseline: a plain hyper 1 server that reads each request body in full and answers a
//! fixed body (the bytes of a real snapgate AuthorizeAndCapture answer) with the same content
//! type. It uses the same hyper connection settings as snapgate's server (timer, header
//! timeout, buffer size), so the difference to snapgate is snapgate's own work.
//!
//! The relay baseline (`serve_relay`): the same server, but each body goes to an upstream
//! through snapgate's own upstream client (`Forward`) and the upstream's answer comes back as
//! is: a plain relay, none of the gateway's work. Forward mode against it is the cost of the
//! gateway itself (docs/BENCHMARKS.md, "Ceilings").

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use snapgate::cws::processor::forward::Forward;
use std::convert::Infallible;
use std::future::Future;
use tokio::net::TcpListener;

/// Serve until `shutdown` resolves; connections in flight are dropped with it.
pub async fn serve(
    listener: TcpListener,
    body: Bytes,
    content_type: HeaderValue,
    shutdown: impl Future<Output = ()>,
) {
    let answer = move |req: Incoming| {
        let body = body.clone();
        async move {
            // Read the request in full, as snapgate does, then answer the fixed bytes.
            let _ = req.collect().await;
            body
        }
    };
    serve_with(listener, answer, content_type, shutdown).await;
}

/// Serve until `shutdown` resolves, relaying each body to `upstream` and answering what it
/// answered (a fault's bytes too, with 200: the load client tells them apart by content).
pub async fn serve_relay(
    listener: TcpListener,
    upstream: Forward,
    content_type: HeaderValue,
    shutdown: impl Future<Output = ()>,
) {
    let answer = move |req: Incoming| {
        let upstream = upstream.clone();
        async move {
            let body = match req.collect().await {
                Ok(b) => b.to_bytes(),
                Err(_) => Bytes::new(),
            };
            let envelope = String::from_utf8_lossy(&body).into_owned();
            match upstream.send("relay", envelope).await {
                Ok(u) => u.body,
                Err(e) => Bytes::from(e.to_string()),
            }
        }
    };
    serve_with(listener, answer, content_type, shutdown).await;
}

/// The server both use: each request's body goes to `answer`, which reads it and answers.
async fn serve_with<F, Fut>(
    listener: TcpListener,
    answer: F,
    content_type: HeaderValue,
    shutdown: impl Future<Output = ()>,
) where
    F: Fn(Incoming) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Bytes> + Send,
{
    tokio::pin!(shutdown);
    loop {
        let (stream, _) = tokio::select! {
            _ = &mut shutdown => return,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(_) => continue,
            },
        };
        let _ = stream.set_nodelay(true);
        let (answer, content_type) = (answer.clone(), content_type.clone());
        let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
            let (answer, content_type) = (answer.clone(), content_type.clone());
            async move {
                let mut resp = Response::new(Full::new(answer(req.into_body()).await));
                resp.headers_mut().insert(CONTENT_TYPE, content_type);
                Ok::<_, Infallible>(resp)
            }
        });
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(std::time::Duration::from_secs(10))
            .max_buf_size(16 * 1024)
            .serve_connection(TokioIo::new(stream), svc);
        tokio::spawn(async move {
            let _ = conn.await;
        });
    }
}
