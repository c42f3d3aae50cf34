//! RegisterTerminal: a terminal proves it holds a key derived from a configured BDK by sending
//! `MerchantProfileId|DeviceSerialNumber` encrypted under it, and gets a TerminalAccessToken.
//! Registering again resets the terminal: a new token, and every older one stops working.
//!
//! Every failure is the same AuthenticationFault to the client; the reason is only logged.

use super::{Context, Wire, SIS_PATH};
use crate::app::App;
use crate::cws::error::{AuthFailure, Error};
use crate::cws::limiter::Subject;
use crate::cws::soap::Element;
use crate::dukpt::{self, Ksn};
use crate::store::{self, to_ms, TerminalId, TerminalRecord};
use crate::token::{self, Claims, TokenId};

/// Longest encryptedSecret accepted, in hex digits (the secret is two or three short fields).
pub const MAX_SECRET_HEX: usize = 512;
/// Longest field inside the secret.
pub const MAX_FIELD_LEN: usize = 64;

/// What the terminal sent, before any check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    pub service_key: String,
    pub vendor_id: String,
    pub encrypted_secret: String,
    pub encryption_key_id: String,
}

/// A terminal whose secret decrypted and checked out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authenticated {
    pub bdk_id: String,
    pub ksn: Ksn,
    pub merchant_profile_id: String,
    pub device_serial: String,
    pub service_id: Option<String>,
}

/// Read the credentials from the body, falling back to the HTTP Basic credentials
/// `{EncryptedSecret}:{EncryptionKeyId}` (with or without a trailing `:`).
pub fn parse(op: &Element, basic: Option<&str>) -> Result<Credentials, Error> {
    let get = |name: &str| {
        op.child_text(name).map_err(|dup| {
            Error::validation(
                format!("RegisterTerminal/{dup}"),
                "The element appears more than once",
            )
        })
    };
    let service_key = get("serviceKey")?;
    let vendor_id = get("vendorId")?;
    let mut secret = get("encryptedSecret")?.map(str::to_owned);
    let mut ksn = get("encryptionKeyId")?.map(str::to_owned);
    if secret.is_none() && ksn.is_none() {
        if let Some((s, k)) = basic.and_then(split_basic) {
            secret = Some(s);
            ksn = Some(k);
        }
    }
    from_parts(service_key, vendor_id, secret.as_deref(), ksn.as_deref())
}

/// Build credentials from loose parts (the REST form gives service key and vendor in the path).
pub fn from_parts(
    service_key: Option<&str>,
    vendor_id: Option<&str>,
    encrypted_secret: Option<&str>,
    encryption_key_id: Option<&str>,
) -> Result<Credentials, Error> {
    match (service_key, vendor_id, encrypted_secret, encryption_key_id) {
        (Some(s), Some(v), Some(e), Some(k)) => Ok(Credentials {
            service_key: s.to_owned(),
            vendor_id: v.to_owned(),
            encrypted_secret: e.to_owned(),
            encryption_key_id: k.to_owned(),
        }),
        _ => Err(Error::Authentication(AuthFailure::MissingCredentials)),
    }
}

/// Split `ES:KSN` or `ES:KSN:` (the decoded Basic credentials).
pub fn split_basic(decoded: &str) -> Option<(String, String)> {
    let d = decoded.strip_suffix(':').unwrap_or(decoded);
    let (es, ksn) = d.split_once(':')?;
    if es.is_empty() || ksn.is_empty() || ksn.contains(':') {
        return None;
    }
    Some((es.trim().to_owned(), ksn.trim().to_owned()))
}

/// Check the credentials against the configured BDKs. Pure: no store access.
pub fn authenticate(app: &App, c: &Credentials) -> Result<Authenticated, Error> {
    let fail = |r| Error::Authentication(r);
    let ksn = Ksn::parse_hex(&c.encryption_key_id).map_err(|_| fail(AuthFailure::BadKsn))?;
    let keys = app.keys();
    let bdk = keys.bdk_for(&ksn).ok_or(fail(AuthFailure::UnknownKeySet))?;
    if !bdk.allows_service_key(&c.service_key) {
        return Err(fail(AuthFailure::ServiceKeyNotAllowed));
    }
    if !bdk.allows_vendor(&c.vendor_id) {
        return Err(fail(AuthFailure::VendorNotAllowed));
    }
    if ksn.counter() == 0 {
        return Err(fail(AuthFailure::ZeroCounter));
    }
    if c.encrypted_secret.len() > MAX_SECRET_HEX {
        return Err(fail(AuthFailure::BadCiphertext));
    }
    let ciphertext =
        hex::decode(&c.encrypted_secret).map_err(|_| fail(AuthFailure::BadCiphertext))?;
    let key = bdk
        .bdk
        .working_key(&ksn, &bdk.secret_usage)
        .map_err(|_| fail(AuthFailure::BadKsn))?;
    let plain =
        dukpt::decrypt_cbc(&key, &ciphertext).map_err(|_| fail(AuthFailure::BadCiphertext))?;
    let text = dukpt::strip_zero_padding(&plain);
    let (mid, serial, service_id) =
        parse_secret(text, bdk.secret_format.fields()).ok_or(fail(AuthFailure::BadSecret))?;
    Ok(Authenticated {
        bdk_id: bdk.id.clone(),
        ksn,
        merchant_profile_id: mid,
        device_serial: serial,
        service_id,
    })
}

/// `MerchantProfileId|DeviceSerialNumber[|ServiceId]`: printable ASCII, no empty field.
fn parse_secret(text: &[u8], fields: usize) -> Option<(String, String, Option<String>)> {
    if !text.iter().all(|b| (0x20..0x7F).contains(b)) {
        return None;
    }
    let text = std::str::from_utf8(text).ok()?;
    let parts: Vec<&str> = text.split('|').collect();
    if parts.len() != fields
        || parts
            .iter()
            .any(|p| p.trim().is_empty() || p.len() > MAX_FIELD_LEN || p.trim() != *p)
    {
        return None;
    }
    Some((
        parts[0].to_owned(),
        parts[1].to_owned(),
        parts.get(2).map(|s| (*s).to_owned()),
    ))
}

/// Authenticate, store the new terminal record durably, and return the new token.
///
/// Lockout (docs/DECISIONS.md, "Issue 13"): every failure counts against the source address.
/// The KSN and serial a request names are only counted once its secret decrypted to a
/// well-formed value (a replay): anyone can name a victim's KSN, so garbage under it must not
/// lock the victim out.
pub async fn apply(app: &App, c: &Credentials, ctx: &Context) -> Result<String, Error> {
    let now = app.clock.now();
    let address: Vec<Subject> = ctx
        .peer
        .map(|p| Subject::address(p.ip()))
        .into_iter()
        .collect();
    let result = if app.limiter.allowed(&address, now) {
        register(app, c, now, ctx).await
    } else {
        Err(Error::Authentication(AuthFailure::RateLimited))
    };
    match &result {
        Ok(_) => app.metrics.registration("ok"),
        Err(e) => {
            if let Error::Authentication(reason) = e {
                app.metrics.registration(reason.as_str());
                if *reason != AuthFailure::RateLimited {
                    app.limiter.failed(&address, now);
                }
            } else {
                app.metrics.registration("error");
            }
            tracing::info!(peer = ?ctx.peer, reason = %e, "registration refused");
        }
    }
    result
}

/// The registration itself, once the address is not locked out.
async fn register(
    app: &App,
    c: &Credentials,
    now: chrono::DateTime<chrono::Utc>,
    ctx: &Context,
) -> Result<String, Error> {
    let auth = authenticate(app, c)?;
    // Proven subjects: the secret decrypted under this KSN to a well-formed value. A device
    // or serial under attack by replays (the one failure with a genuine secret) is locked out
    // on its own.
    let proven = [
        Subject::Device(auth.ksn.device_id()),
        Subject::Serial(format!("{}/{}", c.service_key, auth.device_serial)),
    ];
    if !app.limiter.allowed(&proven, now) {
        return Err(Error::Authentication(AuthFailure::RateLimited));
    }
    // The platform knows its merchant profiles: a secret that decrypts to an undeclared one
    // (a wrong IV garbles only the first block, which holds the profile id) is refused.
    let profile = store::blocking(|| {
        app.profiles
            .merchant(&c.service_key, &auth.merchant_profile_id)
    })?;
    if !profile.is_some_and(|p| p.admits(&auth.device_serial)) {
        return Err(Error::Authentication(AuthFailure::UnknownMerchantProfile));
    }
    let tcfg = app.token();
    let device_id = auth.ksn.device_id();
    let claims = Claims {
        token_id: TokenId::random(),
        issuer: tcfg.issuer.clone(),
        issued_at: now,
        not_on_or_after: now + tcfg.lifetime(),
        service_key: c.service_key.clone(),
        merchant_profile_id: auth.merchant_profile_id.clone(),
        device_serial: auth.device_serial.clone(),
        device_id: device_id.clone(),
    };
    let record = TerminalRecord {
        merchant_profile_id: auth.merchant_profile_id.clone(),
        device_serial: auth.device_serial.clone(),
        service_key: c.service_key.clone(),
        vendor_id: c.vendor_id.clone(),
        service_id: auth.service_id.clone(),
        bdk_id: auth.bdk_id.clone(),
        device_id: device_id.clone(),
        registered_at_ms: to_ms(now),
        token_id: claims.token_id,
        issued_at_ms: to_ms(now),
        expires_at_ms: to_ms(claims.not_on_or_after),
        refresh_due_at_ms: to_ms(now + tcfg.refresh_age()),
        refresh_flag: false,
        pending: None,
        last_counter: auth.ksn.counter(),
        revoked: false,
        recent: Vec::new(),
    };
    let id = TerminalId::new(&c.service_key, &auth.device_serial);
    let replay_protection = app.config.security.replay_protection;
    // From here on the old token may be dead: finish rather than abandon.
    ctx.commit.mark()?;
    // Off the async worker: a new vendorId or BDK id is interned (and fsynced) in this write.
    let stored = store::blocking(|| {
        store::update(&*app.store, &id, |current| {
            if let Some(cur) = current {
                if replay_protection
                    && cur.device_id == device_id
                    && auth.ksn.counter() <= cur.last_counter
                {
                    return Err(Error::Authentication(AuthFailure::Replay));
                }
            }
            Ok((Some(record.clone()), ()))
        })
    });
    if let Err(Error::Authentication(AuthFailure::Replay)) = &stored {
        app.limiter.failed(&proven, now);
    }
    stored?;
    // Only the terminal's record was written (a new name is made durable by its interning).
    app.commit.durable_logged().await?;
    tracing::info!(
        terminal = %id,
        bdk = %auth.bdk_id,
        token_id = %claims.token_id,
        "terminal registered"
    );
    app.limiter.succeeded(&proven);
    Ok(token::issue(&app.keys().signing, &claims))
}

/// The response body for a new token: the SOAP response element, or for the REST form the
/// token as a JSON string.
pub fn respond(ctx: &Context, token: &str) -> String {
    match ctx.wire {
        Wire::Soap => format!(
            "<RegisterTerminalResponse xmlns=\"{}{SIS_PATH}\"><RegisterTerminalResult>{token}\
             </RegisterTerminalResult></RegisterTerminalResponse>",
            ctx.base.uri()
        ),
        Wire::Rest => format!("\"{token}\""),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_username_splits_with_or_without_trailing_colon() {
        let want = Some(("AB12".to_string(), "FFFF0079000007E0007C".to_string()));
        assert_eq!(split_basic("AB12:FFFF0079000007E0007C"), want);
        assert_eq!(split_basic("AB12:FFFF0079000007E0007C:"), want);
        assert_eq!(split_basic("AB12"), None);
        assert_eq!(split_basic(":KSN"), None);
        assert_eq!(split_basic("a:b:c:"), None);
    }

    #[test]
    fn secret_needs_the_configured_number_of_clean_fields() {
        assert_eq!(
            parse_secret(b"MP1|B1234567", 2),
            Some(("MP1".into(), "B1234567".into(), None))
        );
        assert_eq!(
            parse_secret(b"MP1|B1|2317000001", 3),
            Some(("MP1".into(), "B1".into(), Some("2317000001".into())))
        );
        for bad in [
            &b"MP1|B1|x"[..],
            b"MP1",
            b"|B1",
            b"MP1|",
            b"MP1|B1\x01",
            b"MP1| B1",
            b"\xffx|y",
        ] {
            assert_eq!(parse_secret(bad, 2), None, "{bad:?}");
        }
        assert_eq!(parse_secret(b"MP1|B1", 3), None);
    }
}
