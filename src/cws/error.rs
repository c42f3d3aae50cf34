//! The gateway's error type and the one place errors become SOAP faults.
//!
//! Internal detail (which check failed, storage messages) stays in the error for logs and
//! metrics; what reaches the client is decided here and only here.

use crate::cws::soap::{EnvelopeError, Fault, FaultFamily, ValidationError};
use crate::store::StoreError;

pub const AUTH_PROBLEM: &str = "Terminal could not be authenticated";
pub const UNKNOWN_PROBLEM: &str =
    "An unknown error has occurred. Details have been logged on the server";

/// Past the commit point, when the answer cannot be confirmed in time (docs/DECISIONS.md,
/// "Issue 13": what a terminal does with it).
pub const OUTCOME_UNKNOWN_PROBLEM: &str = "The outcome of the request is unknown. Send the same \
     request again (same EncryptionKeyId, or same TransactionDateTime and Amount) to learn it";

/// An upstream fault, as the terminal sees it (the upstream's own text goes to the log).
pub const UPSTREAM_REFUSED_PROBLEM: &str =
    "The transaction processor refused the request. Details have been logged on the server";

/// The one answer for card data that does not read: no format, length or check-digit detail
/// (those would make the gateway a decryption oracle).
pub const CARD_DATA_PROBLEM: &str = "The card data could not be read";

/// Why a registration failed. Logged and counted, never told to the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthFailure {
    MissingCredentials,
    BadKsn,
    UnknownKeySet,
    ServiceKeyNotAllowed,
    VendorNotAllowed,
    ZeroCounter,
    BadCiphertext,
    BadSecret,
    Replay,
    RateLimited,
    /// The secret names a merchant profile not declared and active for the service key (or
    /// the profile's serial allow-list does not have the device).
    UnknownMerchantProfile,
}

impl AuthFailure {
    pub fn as_str(self) -> &'static str {
        match self {
            AuthFailure::MissingCredentials => "missing_credentials",
            AuthFailure::BadKsn => "bad_ksn",
            AuthFailure::UnknownKeySet => "unknown_key_set",
            AuthFailure::ServiceKeyNotAllowed => "service_key_not_allowed",
            AuthFailure::VendorNotAllowed => "vendor_not_allowed",
            AuthFailure::ZeroCounter => "zero_counter",
            AuthFailure::BadCiphertext => "bad_ciphertext",
            AuthFailure::BadSecret => "bad_secret",
            AuthFailure::Replay => "replay",
            AuthFailure::RateLimited => "rate_limited",
            AuthFailure::UnknownMerchantProfile => "unknown_merchant_profile",
        }
    }
}

impl std::fmt::Display for AuthFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which service answered: it picks fault namespaces and error ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    Sis,
    Tps,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("terminal could not be authenticated ({0})")]
    Authentication(AuthFailure),
    #[error("invalid token ({0})")]
    InvalidToken(&'static str),
    #[error("expired token")]
    ExpiredToken,
    #[error("malformed envelope: {0}")]
    Envelope(#[from] EnvelopeError),
    #[error("validation failed: {location}: {message}")]
    Validation {
        rule: &'static str,
        location: String,
        message: String,
    },
    #[error("operation {0} is not supported")]
    UnknownOperation(String),
    #[error("the SOAPAction header does not match the body")]
    ActionMismatch,
    #[error("transaction refused: {message}")]
    Transaction {
        message: String,
        transaction_id: Option<String>,
        state: Option<String>,
    },
    /// Card data that could not be read (why: logged and counted, never told).
    #[error("card data refused ({0})")]
    CardData(&'static str),
    #[error("upstream processor: {0}")]
    Upstream(String),
    /// A SOAP fault the upstream processor sent. Its text is for the log only: the terminal
    /// gets our own fault.
    #[error("upstream processor answered with a fault: {0}")]
    UpstreamFault(String),
    #[error("storage: {0}")]
    Store(#[from] StoreError),
    #[error("internal: {0}")]
    Internal(String),
    #[error("request body larger than {0} bytes")]
    PayloadTooLarge(usize),
    #[error("unsupported content type")]
    UnsupportedMediaType,
    #[error("request body not received in time")]
    BodyTimeout,
    #[error("request took too long")]
    HandlerTimeout,
    /// Past the commit point the request could not be confirmed in time (or its flush
    /// failed): it may or may not stand. The same request again tells (it is idempotent).
    #[error("outcome unknown: {0}")]
    OutcomeUnknown(String),
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("no such endpoint")]
    NotFound,
}

impl From<std::sync::Arc<StoreError>> for Error {
    fn from(e: std::sync::Arc<StoreError>) -> Self {
        Error::Internal(format!("durable write failed: {e}"))
    }
}

impl Error {
    /// A validation failure at `location` (an element path) with a message safe to show.
    pub fn validation(location: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Validation {
            rule: "InvalidElement",
            location: location.into(),
            message: message.into(),
        }
    }

    /// A short label for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::Authentication(_) => "authentication",
            Error::InvalidToken(_) => "invalid_token",
            Error::ExpiredToken => "expired_token",
            Error::Envelope(_) | Error::Validation { .. } | Error::ActionMismatch => "validation",
            Error::UnknownOperation(_) => "unknown_operation",
            Error::Transaction { .. } => "transaction",
            Error::CardData(_) => "card_data",
            Error::Upstream(_) | Error::UpstreamFault(_) => "upstream",
            Error::Store(_) | Error::Internal(_) => "internal",
            Error::PayloadTooLarge(_) => "payload_too_large",
            Error::UnsupportedMediaType => "unsupported_media_type",
            Error::BodyTimeout | Error::HandlerTimeout => "timeout",
            Error::OutcomeUnknown(_) => "outcome_unknown",
            Error::MethodNotAllowed => "method_not_allowed",
            Error::NotFound => "not_found",
        }
    }

    /// The fault the client sees.
    pub fn to_fault(&self, service: Service, operation: &str) -> Fault {
        let (svc_family, validation_id, cws_id, invalid_op_id) = match service {
            Service::Sis => (FaultFamily::ServiceInformation, 225, 207, 208),
            Service::Tps => (FaultFamily::Transactions, 325, 326, 315),
        };
        let mut f = Fault {
            http_status: 500,
            code: "s:Client",
            string: String::new(),
            family: svc_family,
            detail: "CWSValidationResultFault",
            error_id: validation_id,
            operation: operation.to_owned(),
            problem_type: String::new(),
            errors: Vec::new(),
            transaction_id: None,
            transaction_state: None,
        };
        let identity = |f: &mut Fault, detail: &'static str, id: u32, text: &str| {
            f.family = FaultFamily::Identity;
            f.detail = detail;
            f.error_id = id;
            f.string = text.to_owned();
            f.problem_type = text.to_owned();
        };
        let validation = |f: &mut Fault, rule: &str, location: &str, message: &str| {
            f.string = "Validation Errors Occurred".into();
            f.problem_type = "Validation Errors Occurred".into();
            f.errors.push(ValidationError {
                rule_key: rule.to_owned(),
                rule_location_key: location.to_owned(),
                rule_message: message.to_owned(),
            });
        };
        match self {
            Error::Authentication(_) => identity(&mut f, "AuthenticationFault", 406, AUTH_PROBLEM),
            Error::InvalidToken(_) => identity(
                &mut f,
                "InvalidTokenFault",
                5005,
                "The session token is not valid",
            ),
            Error::ExpiredToken => identity(
                &mut f,
                "ExpiredTokenFault",
                5000,
                "The session token has expired",
            ),
            Error::Envelope(e) => {
                validation(&mut f, "MalformedRequest", "Envelope", &e.to_string())
            }
            Error::Validation {
                rule,
                location,
                message,
            } => validation(&mut f, rule, location, message),
            Error::ActionMismatch => validation(
                &mut f,
                "SOAPActionMismatch",
                "SOAPAction",
                "The SOAPAction header names another operation than the body",
            ),
            Error::UnknownOperation(op) => {
                // The SIS fault schema declares no CWSInvalidOperationFault: a client generated
                // from it could not read one. SIS answers a CWSFault carrying the platform's
                // invalid-operation ErrorID instead; TPS has the typed fault.
                f.detail = match service {
                    Service::Sis => "CWSFault",
                    Service::Tps => "CWSInvalidOperationFault",
                };
                f.error_id = invalid_op_id;
                f.string = format!("Operation {op} is not supported");
                f.problem_type = f.string.clone();
            }
            Error::Transaction {
                message,
                transaction_id,
                state,
            } => {
                f.detail = "CWSFault";
                f.error_id = cws_id;
                f.string = message.clone();
                f.problem_type = message.clone();
                f.transaction_id = transaction_id.clone();
                f.transaction_state = state.clone();
            }
            Error::CardData(_) => {
                validation(&mut f, "InvalidCardData", "TenderData", CARD_DATA_PROBLEM)
            }
            Error::UpstreamFault(_) => {
                f.code = "s:Server";
                f.detail = "CWSFault";
                f.error_id = cws_id;
                f.string = UPSTREAM_REFUSED_PROBLEM.into();
                f.problem_type = UPSTREAM_REFUSED_PROBLEM.into();
            }
            Error::Upstream(_) => {
                f.code = "s:Server";
                f.detail = "CWSConnectionFault";
                f.error_id = 328;
                f.family = FaultFamily::Transactions;
                f.string = "The transaction processor could not be reached".into();
                f.problem_type = f.string.clone();
            }
            Error::Store(_) | Error::Internal(_) | Error::HandlerTimeout => {
                f.code = "s:Server";
                f.detail = "CWSFault";
                f.error_id = cws_id;
                f.string = UNKNOWN_PROBLEM.into();
                f.problem_type = UNKNOWN_PROBLEM.into();
            }
            Error::OutcomeUnknown(_) => {
                f.code = "s:Server";
                f.detail = "CWSFault";
                f.error_id = cws_id;
                f.string = OUTCOME_UNKNOWN_PROBLEM.into();
                f.problem_type = OUTCOME_UNKNOWN_PROBLEM.into();
            }
            Error::PayloadTooLarge(max) => {
                f.http_status = 413;
                validation(
                    &mut f,
                    "RequestTooLarge",
                    "Body",
                    &format!("The request body is larger than {max} bytes"),
                );
            }
            Error::UnsupportedMediaType => {
                f.http_status = 415;
                validation(
                    &mut f,
                    "UnsupportedMediaType",
                    "Content-Type",
                    "SOAP 1.1 requests must be sent as text/xml",
                );
            }
            Error::BodyTimeout => {
                f.http_status = 408;
                validation(
                    &mut f,
                    "RequestTimeout",
                    "Body",
                    "The request body was not received in time",
                );
            }
            Error::MethodNotAllowed => {
                f.http_status = 405;
                validation(
                    &mut f,
                    "MethodNotAllowed",
                    "Method",
                    "Use POST for SOAP requests, GET ?wsdl for the WSDL",
                );
            }
            Error::NotFound => {
                f.http_status = 404;
                validation(&mut f, "NotFound", "Path", "No service at this path");
            }
        }
        f
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_authentication_failure_looks_the_same_to_the_client() {
        let a =
            Error::Authentication(AuthFailure::BadKsn).to_fault(Service::Sis, "RegisterTerminal");
        let b =
            Error::Authentication(AuthFailure::Replay).to_fault(Service::Sis, "RegisterTerminal");
        assert_eq!(a, b);
        assert_eq!(a.error_id, 406);
        assert_eq!(a.detail, "AuthenticationFault");
        assert_eq!(a.problem_type, AUTH_PROBLEM);
    }

    #[test]
    fn storage_errors_do_not_leak_their_message() {
        let e = Error::Internal("disk /secret/path failed".into());
        let f = e.to_fault(Service::Tps, "Authorize");
        let env = f.to_envelope(crate::cws::soap::Base::Evosnap);
        assert!(!env.contains("/secret/path"));
        assert!(env.contains(UNKNOWN_PROBLEM));
        assert_eq!(f.code, "s:Server");
    }

    #[test]
    fn token_faults_carry_the_sts_error_ids() {
        assert_eq!(
            Error::ExpiredToken
                .to_fault(Service::Tps, "Authorize")
                .error_id,
            5000
        );
        assert_eq!(
            Error::InvalidToken("x")
                .to_fault(Service::Tps, "Authorize")
                .error_id,
            5005
        );
        let v = Error::validation("a", "b").to_fault(Service::Tps, "Authorize");
        assert_eq!((v.error_id, v.detail), (325, "CWSValidationResultFault"));
        let v = Error::validation("a", "b").to_fault(Service::Sis, "RegisterTerminal");
        assert_eq!(v.error_id, 225);
    }
}
