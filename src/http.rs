//! HTTP pieces every service uses on the shared listener: a response with a body and a content
//! type, reading a request body under the size and time limits (into a zeroizing buffer), and
//! HTTP Basic credentials.

use crate::app::App;
use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Request, Response, StatusCode};
use zeroize::{Zeroize, Zeroizing};

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

/// Read the whole body under the size and time limits, into a buffer this request owns and
/// that is zeroized when dropped: a keyed PAN or track data in it does not outlive the request
/// (issue 13, point 6). The buffer is sized from Content-Length up front and, when it must
/// grow, moved to a bigger one (the old one zeroized), so no copy is left in freed memory.
/// hyper's frames are wiped too when this buffer holds the only reference to them; while the
/// connection's own read buffer shares their allocation they are not ours to wipe (hyper
/// reuses or frees that memory).
pub async fn read_body(app: &App, body: Incoming) -> Result<Zeroizing<Vec<u8>>, BodyError> {
    use hyper::body::Body;
    let max = app.config.limits.max_body_bytes;
    let expected = body.size_hint().exact().unwrap_or(0);
    let read = async {
        let mut body = Limited::new(body, max);
        let mut out = Zeroizing::new(Vec::with_capacity((expected as usize).min(max)));
        while let Some(frame) = body.frame().await {
            let Ok(data) = frame?.into_data() else {
                continue; // trailers
            };
            append_wiped(&mut out, &data, max);
            if let Ok(mut own) = data.try_into_mut() {
                own.as_mut().zeroize();
            }
        }
        Ok::<_, Box<dyn std::error::Error + Send + Sync>>(out)
    };
    match tokio::time::timeout(app.config.limits.body_timeout(), read).await {
        Err(_) => Err(BodyError::Timeout),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => Err(BodyError::TooLarge(max)),
        Ok(Err(e)) => Err(BodyError::Read(e.to_string())),
        Ok(Ok(b)) => Ok(b),
    }
}

/// Append `data`, growing `out` by moving it to a bigger zeroizing buffer (never by `Vec`'s own
/// reallocation, which would free the old bytes unwiped).
fn append_wiped(out: &mut Zeroizing<Vec<u8>>, data: &[u8], max: usize) {
    let need = out.len() + data.len();
    if need > out.capacity() {
        let mut bigger = Zeroizing::new(Vec::with_capacity(
            need.max(2 * out.capacity()).min(max.max(need)),
        ));
        bigger.extend_from_slice(out);
        *out = bigger; // the old buffer is zeroized as it drops
    }
    out.extend_from_slice(data);
}

/// The decoded HTTP Basic credentials (`user:password`), if the header is there and decodes.
pub fn basic_credentials<B>(req: &Request<B>) -> Option<String> {
    let v = req
        .headers()
        .get(hyper::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    decode_basic(v)
}

/// The decoded `user:password` of a `Basic` Authorization value (at most 8 KiB of base64).
pub fn decode_basic(value: &str) -> Option<String> {
    let (scheme, b64) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") || b64.len() > 8192 {
        return None;
    }
    let raw = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .ok()?;
    String::from_utf8(raw).ok()
}

#[cfg(test)]
mod tests {
    use super::append_wiped;
    use zeroize::Zeroizing;

    #[test]
    fn appending_keeps_every_byte_in_order_across_growth() {
        let mut out = Zeroizing::new(Vec::with_capacity(4));
        for chunk in [&b"ab"[..], b"cd", b"efgh", b"i", b"jklmnopq"] {
            append_wiped(&mut out, chunk, 64);
            assert!(out.capacity() <= 64);
        }
        assert_eq!(&out[..], b"abcdefghijklmnopq");
    }
}
