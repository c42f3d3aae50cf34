//! HTTP pieces every service uses on the shared listener: a response with a body and a content
//! type, reading a request body under the size and time limits, and HTTP Basic credentials.

use crate::app::App;
use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Request, Response, StatusCode};

pub fn plain(status: StatusCode, content_type: &'static str, body: Bytes) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

/// Why a request body could not be read.
#[derive(Debug)]
pub enum BodyError {
    TooLarge(usize),
    Timeout,
    Read(String),
}

/// Read the whole body under the size and time limits.
pub async fn read_body(app: &App, body: Incoming) -> Result<Bytes, BodyError> {
    let max = app.config.limits.max_body_bytes;
    let collect = Limited::new(body, max).collect();
    match tokio::time::timeout(app.config.limits.body_timeout(), collect).await {
        Err(_) => Err(BodyError::Timeout),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => Err(BodyError::TooLarge(max)),
        Ok(Err(e)) => Err(BodyError::Read(e.to_string())),
        Ok(Ok(c)) => Ok(c.to_bytes()),
    }
}

/// The decoded HTTP Basic credentials (`user:password`), if the header is there and decodes.
pub fn basic_credentials<B>(req: &Request<B>) -> Option<String> {
    let v = req
        .headers()
        .get(hyper::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, b64) = v.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") || b64.len() > 8192 {
        return None;
    }
    let raw = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .ok()?;
    String::from_utf8(raw).ok()
}
