//! The connector's tokens: OAuth2 access tokens and single-use connection JWTs, both HS256 under
//! one per-deployment key (`connector.key`, 32 random bytes in hex, mode 600). Several nodes share
//! the key file, so a token issued by one node verifies on every other.
//!
//! jsonwebtoken checks the signature and the algorithm only; lifetimes are checked here against
//! the injectable clock, and the audience here too, so a JWT meant for another URL is told apart
//! (403) from a bad or expired one (401).

use super::error::ConnectorError;
use crate::clock::Clock;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use std::path::Path;
use zeroize::Zeroizing;

pub const ISSUER: &str = "snapgate-connector";
/// The audience of every access token; connection JWTs carry their URL instead.
pub const ACCESS_AUDIENCE: &str = "snapgate-connector:listeners";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// An OAuth2 access token for the listeners.
    Access,
    /// A device's connection JWT.
    Device,
    /// A POS's session JWT.
    Session,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    pub aud: String,
    /// The client id (access) or the terminal serial number (device, session).
    pub sub: String,
    pub iat: i64,
    pub exp: i64,
    pub jti: String,
    pub kind: Kind,
    /// The client the token was issued to.
    pub client: String,
    /// Session JWTs: the claim asked to take over a session the same client holds.
    #[serde(default)]
    pub takeover: bool,
}

pub struct Keys {
    enc: EncodingKey,
    dec: DecodingKey,
    validation: Validation,
}

impl Keys {
    pub fn from_secret(secret: &[u8]) -> Keys {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        validation.required_spec_claims.clear();
        Keys {
            enc: EncodingKey::from_secret(secret),
            dec: DecodingKey::from_secret(secret),
            validation,
        }
    }

    /// Read the key file, or create it with a fresh random key.
    pub fn load_or_create(path: &Path) -> Result<Keys, String> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => Zeroizing::new(t),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut raw = Zeroizing::new([0u8; 32]);
                rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut *raw);
                let hex = Zeroizing::new(hex::encode(*raw) + "\n");
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
                }
                match crate::config::write_private(path, &hex) {
                    Ok(()) => {
                        tracing::info!(file = %path.display(), "created the connector key");
                        hex
                    }
                    // Another node or process created it first: use theirs.
                    Err(crate::config::ConfigError::Exists(_)) => Zeroizing::new(
                        std::fs::read_to_string(path)
                            .map_err(|e| format!("{}: {e}", path.display()))?,
                    ),
                    Err(e) => return Err(e.to_string()),
                }
            }
            Err(e) => return Err(format!("{}: {e}", path.display())),
        };
        let raw = Zeroizing::new(hex::decode(text.trim()).map_err(|_| {
            format!(
                "{}: the connector key must be hex (64 digits)",
                path.display()
            )
        })?);
        if raw.len() < 32 {
            return Err(format!(
                "{}: the connector key must be at least 32 bytes",
                path.display()
            ));
        }
        Ok(Keys::from_secret(&raw))
    }

    pub fn sign(&self, claims: &Claims) -> String {
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &self.enc)
            .expect("HS256 signing of a plain struct does not fail")
    }

    /// Check signature, issuer, kind, audience and lifetime. A token for another audience is
    /// `WrongAudience` (403); anything else wrong is `InvalidToken` (401).
    pub fn verify(
        &self,
        token: &str,
        kind: Kind,
        audience: &str,
        clock: &dyn Clock,
    ) -> Result<Claims, ConnectorError> {
        if token.len() > 4096 {
            return Err(ConnectorError::InvalidToken);
        }
        let data = jsonwebtoken::decode::<Claims>(token, &self.dec, &self.validation)
            .map_err(|_| ConnectorError::InvalidToken)?;
        let c = data.claims;
        if c.iss != ISSUER || c.kind != kind {
            return Err(ConnectorError::InvalidToken);
        }
        if clock.now().timestamp() >= c.exp {
            return Err(ConnectorError::InvalidToken);
        }
        if c.aud != audience {
            return Err(ConnectorError::WrongAudience);
        }
        Ok(c)
    }
}

/// 128 random bits in hex: token ids and client ids.
pub fn random_id() -> String {
    let mut b = [0u8; 16];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut b);
    hex::encode(b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    fn claims(now: i64, aud: &str) -> Claims {
        Claims {
            iss: ISSUER.into(),
            aud: aud.into(),
            sub: "T1".into(),
            iat: now,
            exp: now + 60,
            jti: random_id(),
            kind: Kind::Device,
            client: "c".into(),
            takeover: false,
        }
    }

    #[test]
    fn a_token_verifies_until_it_expires_on_the_injected_clock() {
        let clock = ManualClock::new(chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap());
        let k = Keys::from_secret(&[7; 32]);
        let t = k.sign(&claims(1_800_000_000, "wss://a/x"));
        assert!(k.verify(&t, Kind::Device, "wss://a/x", &clock).is_ok());
        clock.advance(chrono::Duration::seconds(59));
        assert!(k.verify(&t, Kind::Device, "wss://a/x", &clock).is_ok());
        clock.advance(chrono::Duration::seconds(1));
        assert!(matches!(
            k.verify(&t, Kind::Device, "wss://a/x", &clock),
            Err(ConnectorError::InvalidToken)
        ));
    }

    #[test]
    fn another_audience_is_403_and_another_key_or_kind_is_401() {
        let clock = ManualClock::new(chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap());
        let k = Keys::from_secret(&[7; 32]);
        let t = k.sign(&claims(1_800_000_000, "wss://a/x"));
        assert!(matches!(
            k.verify(&t, Kind::Device, "wss://a/y", &clock),
            Err(ConnectorError::WrongAudience)
        ));
        assert!(matches!(
            k.verify(&t, Kind::Session, "wss://a/x", &clock),
            Err(ConnectorError::InvalidToken)
        ));
        let other = Keys::from_secret(&[8; 32]);
        assert!(matches!(
            other.verify(&t, Kind::Device, "wss://a/x", &clock),
            Err(ConnectorError::InvalidToken)
        ));
        assert!(matches!(
            k.verify("not.a.jwt", Kind::Device, "wss://a/x", &clock),
            Err(ConnectorError::InvalidToken)
        ));
    }

    #[test]
    fn the_key_file_is_created_once_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("connector.key");
        let a = Keys::load_or_create(&p).unwrap();
        let b = Keys::load_or_create(&p).unwrap();
        let clock = ManualClock::new(chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap());
        let t = a.sign(&claims(1_800_000_000, "u"));
        assert!(b.verify(&t, Kind::Device, "u", &clock).is_ok());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&p).unwrap().permissions().mode();
            assert_eq!(mode & 0o077, 0, "mode {mode:o}");
        }
    }
}
