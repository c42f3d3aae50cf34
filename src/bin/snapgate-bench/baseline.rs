//! The baseline: a plain hyper 1 server that reads each request body in full and answers a
//! fixed body (the bytes of a real snapgate AuthorizeAndCapture answer) with the same content
//! type. It uses the same hyper connection settings as snapgate's server (timer, header
//! timeout, buffer size), so the difference to snapgate is snapgate's own work.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
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
        let (body, content_type) = (body.clone(), content_type.clone());
        let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
            let (body, content_type) = (body.clone(), content_type.clone());
            async move {
                // Read the request in full, as snapgate does, then answer the fixed bytes.
                let _ = req.into_body().collect().await;
                let mut resp = Response::new(Full::new(body));
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
