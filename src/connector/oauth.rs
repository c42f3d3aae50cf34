//! OAuth2 client credentials (RFC 6749 §4.4) for the connector: the clients (created with a
//! random secret shown once, kept as an Argon2id hash), the token endpoint
//! `POST /oauth2/v1/{domain}/token`, and the bearer check the listeners run before upgrading.
//!
//! Argon2id is slow on purpose: a stolen store does not give the secrets away. Hashing runs on
//! the blocking pool under a small semaphore so a flood of token requests cannot starve the
//! server; an unknown client id costs the same hash as a known one (no id oracle), and the
//! final comparison is password-hash's constant-time one.

use super::error::ConnectorError;
use super::jwt::{self, Claims, Kind};
use super::Connector;
use crate::store::connector::{ClientRecord, ClientRole, ConnectorStore, Scope};
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use zeroize::Zeroizing;

/// Hash a client secret with Argon2id at the given cost (PHC string).
pub fn hash_secret(secret: &str, memory_kib: u32, iterations: u32) -> Result<String, String> {
    let params = Params::new(memory_kib.max(8), iterations.max(1), 1, None)
        .map_err(|e| format!("bad Argon2 parameters: {e}"))?;
    let mut salt = [0u8; 16];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut salt);
    let salt = SaltString::encode_b64(&salt).map_err(|e| e.to_string())?;
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
        .hash_password(secret.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| e.to_string())
}

/// Whether `secret` matches the PHC string (with the cost stored in it).
pub fn verify_secret(secret: &str, phc: &str) -> bool {
    match PasswordHash::new(phc) {
        Ok(h) => Argon2::default()
            .verify_password(secret.as_bytes(), &h)
            .is_ok(),
        Err(_) => false,
    }
}

/// A new client and its secret (shown to the operator once, never stored).
pub struct NewClient {
    pub record: ClientRecord,
    pub secret: Zeroizing<String>,
}

/// Create a client. The id is random unless given.
#[allow(clippy::too_many_arguments)]
pub fn add_client(
    store: &dyn ConnectorStore,
    id: Option<String>,
    domain: &str,
    role: ClientRole,
    scope: Scope,
    memory_kib: u32,
    iterations: u32,
    now_ms: i64,
) -> Result<NewClient, String> {
    let id = id.unwrap_or_else(jwt::random_id);
    if id.is_empty()
        || id.len() > 128
        || !id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    {
        return Err("a client id is 1 to 128 of A-Z a-z 0-9 - _ .".into());
    }
    if domain.is_empty() || domain.contains('/') || scope.merchant.is_empty() {
        return Err("domain and merchant must not be empty (and domain has no /)".into());
    }
    if store.get_client(&id).map_err(|e| e.to_string())?.is_some() {
        return Err(format!("client {id} exists already; remove it first"));
    }
    let mut raw = Zeroizing::new([0u8; 32]);
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut *raw);
    let secret = Zeroizing::new(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(*raw));
    let record = ClientRecord {
        id,
        domain: domain.to_owned(),
        secret_hash: hash_secret(&secret, memory_kib, iterations)?,
        role,
        scope,
        created_at_ms: now_ms,
    };
    store.put_client(&record).map_err(|e| e.to_string())?;
    Ok(NewClient { record, secret })
}

/// A client as operators see it: no hash.
pub fn client_json(c: &ClientRecord) -> serde_json::Value {
    serde_json::json!({
        "client_id": c.id,
        "domain": c.domain,
        "role": c.role.as_str(),
        "merchant": c.scope.merchant,
        "store": c.scope.store,
        "tsn": c.scope.tsn,
        "created_at": crate::store::from_ms(c.created_at_ms).to_rfc3339(),
    })
}

/// `application/x-www-form-urlencoded` decoding of one name or value.
pub fn form_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let h = b.get(i + 1..i + 3)?;
                out.push(u8::from_str_radix(std::str::from_utf8(h).ok()?, 16).ok()?);
                i += 2;
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

/// Credentials from `Authorization: Basic` (RFC 6749 §2.3.1: each part form-encoded).
fn basic_credentials<B>(req: &Request<B>) -> Option<Result<(String, Zeroizing<String>), ()>> {
    let v = req.headers().get(hyper::header::AUTHORIZATION)?;
    let parse = || {
        let (scheme, b64) = v.to_str().ok()?.trim().split_once(' ')?;
        if !scheme.eq_ignore_ascii_case("basic") || b64.len() > 1024 {
            return None;
        }
        let raw = Zeroizing::new(
            base64::engine::general_purpose::STANDARD
                .decode(b64.trim())
                .ok()?,
        );
        let text = std::str::from_utf8(&raw).ok()?;
        let (id, secret) = text.split_once(':')?;
        Some((form_decode(id)?, Zeroizing::new(form_decode(secret)?)))
    };
    Some(parse().ok_or(()))
}

/// The token endpoint.
pub async fn token_endpoint(
    c: &Connector,
    domain: &str,
    req: Request<Incoming>,
) -> Response<Full<Bytes>> {
    match token(c, domain, req).await {
        Ok(r) => r,
        Err(e) => {
            c.metrics.token(false);
            e.response()
        }
    }
}

async fn token(
    c: &Connector,
    domain: &str,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, ConnectorError> {
    if req.method() != Method::POST {
        return Err(ConnectorError::MethodNotAllowed);
    }
    let form_type = req
        .headers()
        .get(hyper::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|m| {
            m.trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        });
    if !form_type {
        return Err(ConnectorError::InvalidRequest(
            "the body must be application/x-www-form-urlencoded".into(),
        ));
    }
    let basic = basic_credentials(&req);
    let collect = Limited::new(req.into_body(), c.max_body).collect();
    let body = match tokio::time::timeout(c.body_timeout, collect).await {
        Ok(Ok(b)) => Zeroizing::new(b.to_bytes().to_vec()),
        Ok(Err(_)) => {
            return Err(ConnectorError::InvalidRequest(format!(
                "the body could not be read or is over {} bytes",
                c.max_body
            )))
        }
        Err(_) => {
            return Err(ConnectorError::InvalidRequest(
                "the body did not arrive in time".into(),
            ))
        }
    };
    let text = std::str::from_utf8(&body)
        .map_err(|_| ConnectorError::InvalidRequest("the body is not UTF-8".into()))?;
    let (mut grant, mut id, mut secret) = (None, None, None);
    for pair in text.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let (k, v) = match (form_decode(k), form_decode(v)) {
            (Some(k), Some(v)) => (k, Zeroizing::new(v)),
            _ => {
                return Err(ConnectorError::InvalidRequest(
                    "the body is not valid form encoding".into(),
                ))
            }
        };
        let slot = match k.as_str() {
            "grant_type" => &mut grant,
            "client_id" => &mut id,
            "client_secret" => &mut secret,
            _ => continue, // `scope` and extensions: the client's scope is fixed
        };
        if slot.is_some() {
            // RFC 6749 §3.2: parameters must not be included more than once.
            return Err(ConnectorError::InvalidRequest(format!(
                "parameter {k} repeated"
            )));
        }
        *slot = Some(v);
    }
    let grant = grant.ok_or_else(|| ConnectorError::InvalidRequest("grant_type missing".into()))?;
    if grant.as_str() != "client_credentials" {
        return Err(ConnectorError::UnsupportedGrantType);
    }
    let (id, secret, used_basic) = match (basic, id, secret) {
        (Some(_), _, Some(_)) => {
            // §2.3.1: one authentication method per request.
            return Err(ConnectorError::InvalidRequest(
                "client credentials both in the header and the body".into(),
            ));
        }
        (Some(Ok((id, secret))), None, None) => (id, secret, true),
        (Some(Ok((id, secret))), Some(body_id), None) if body_id.as_str() == id => {
            (id, secret, true)
        }
        (Some(_), _, None) => return Err(ConnectorError::InvalidClient { basic: true }),
        (None, Some(id), Some(secret)) => (id.to_string(), secret, false),
        (None, _, _) => return Err(ConnectorError::InvalidClient { basic: false }),
    };
    let client = authenticate(c, domain, &id, secret)
        .await?
        .ok_or(ConnectorError::InvalidClient { basic: used_basic })?;
    let now = c.clock.now().timestamp();
    let ttl = i64::from(c.config.access_token_seconds.max(1));
    let token = c.keys.sign(&Claims {
        iss: jwt::ISSUER.into(),
        aud: jwt::ACCESS_AUDIENCE.into(),
        sub: client.id.clone(),
        iat: now,
        exp: now + ttl,
        jti: jwt::random_id(),
        kind: Kind::Access,
        client: client.id.clone(),
        takeover: false,
    });
    c.metrics.token(true);
    tracing::info!(client = %client.id, domain, "issued a connector access token");
    let body = serde_json::json!({
        "access_token": token,
        "token_type": "Bearer",
        "expires_in": ttl,
    });
    Ok(super::error::json_response(
        StatusCode::OK,
        body.to_string(),
    ))
}

/// Check a client's secret. None: unknown client, wrong domain or wrong secret (one answer).
async fn authenticate(
    c: &Connector,
    domain: &str,
    id: &str,
    secret: Zeroizing<String>,
) -> Result<Option<ClientRecord>, ConnectorError> {
    let record = if id.len() <= 128 {
        crate::store::blocking(|| c.store.get_client(id))?
    } else {
        None
    };
    let permit = tokio::time::timeout(c.body_timeout, c.hash_permits.clone().acquire_owned())
        .await
        .map_err(|_| ConnectorError::TemporarilyUnavailable)?
        .map_err(|_| ConnectorError::TemporarilyUnavailable)?;
    // Unknown clients are checked against a dummy hash of the same cost.
    let phc = record
        .as_ref()
        .map(|r| r.secret_hash.clone())
        .unwrap_or_else(|| c.dummy_hash());
    let ok = tokio::task::spawn_blocking(move || {
        let _permit = permit;
        verify_secret(&secret, &phc)
    })
    .await
    .unwrap_or(false);
    Ok(record.filter(|r| ok && r.domain == domain))
}

/// The listeners' check: a valid access token of an existing client (removing a client revokes
/// its tokens) whose role allows this listener.
pub fn authorize(
    c: &Connector,
    req: &Request<Incoming>,
    device: bool,
) -> Result<ClientRecord, ConnectorError> {
    let token = bearer(req)?;
    let claims = c
        .keys
        .verify(&token, Kind::Access, jwt::ACCESS_AUDIENCE, &*c.clock)?;
    let client = crate::store::blocking(|| c.store.get_client(&claims.client))?
        .ok_or(ConnectorError::InvalidToken)?;
    let allowed = if device {
        client.role.device()
    } else {
        client.role.pos()
    };
    if !allowed {
        return Err(ConnectorError::WrongRole);
    }
    Ok(client)
}

/// The bearer token of `Authorization: Bearer …`.
pub fn bearer<B>(req: &Request<B>) -> Result<Zeroizing<String>, ConnectorError> {
    let v = req
        .headers()
        .get(hyper::header::AUTHORIZATION)
        .ok_or(ConnectorError::MissingToken)?;
    let v = v.to_str().map_err(|_| ConnectorError::InvalidToken)?.trim();
    match v.split_once(' ') {
        Some((scheme, t)) if scheme.eq_ignore_ascii_case("bearer") => {
            Ok(Zeroizing::new(t.trim().to_owned()))
        }
        _ => Err(ConnectorError::MissingToken),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_verifies_against_its_hash_and_nothing_else_does() {
        let h = hash_secret("s3cret", 64, 1).unwrap();
        assert!(h.starts_with("$argon2id$v=19$m=64,t=1,p=1$"), "{h}");
        assert!(verify_secret("s3cret", &h));
        assert!(!verify_secret("s3cret ", &h));
        assert!(!verify_secret("s3cret", "not a hash"));
        assert_ne!(h, hash_secret("s3cret", 64, 1).unwrap(), "salted");
    }

    #[test]
    fn form_decoding_handles_plus_and_percent_and_refuses_broken_escapes() {
        assert_eq!(form_decode("a+b%2Fc%3A").as_deref(), Some("a b/c:"));
        assert_eq!(form_decode("%4"), None);
        assert_eq!(form_decode("%zz"), None);
        assert_eq!(form_decode("%FF"), None, "not UTF-8");
    }
}
