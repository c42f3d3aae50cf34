//! CWS operations. A request is identified once (`OpName::lookup` from the body element's name
//! and namespace), parsed once into an `Operation` (each operation's file has its own `parse`
//! and `apply`), and run by `execute`, which applies the handler timeout and counts the result
//! in the metrics for the SOAP and the REST forms alike. The TPS operations share their reading
//! and processing steps in `transaction.rs`.

pub mod adjust;
pub mod authorize;
pub mod authorize_and_capture;
pub mod capture;
pub mod capture_all;
pub mod create_pairing_code;
pub mod merchant_profiles;
pub mod namespaces;
pub mod ping;
pub mod register_terminal;
pub mod return_by_id;
pub mod return_unlinked;
pub mod service_information;
pub mod sign_on;
pub mod transaction;
pub mod undo;

use crate::app::App;
use crate::cws::error::{Error, Service};
use crate::cws::processor::sandbox::Follow;
use crate::cws::soap::{Base, Element};
use std::sync::Arc;
use transaction::{FollowUp, NewTransaction};

pub const SIS_PATH: &str = "CWS/v2.0/ServiceInformation";
pub const TPS_PATH: &str = "CWS/v2.0/TransactionProcessing";
pub const COMMON_PATH: &str = "Ipc.General.WCF.Contracts.Common";

/// Which form the request came in: a SOAP envelope, or the REST registration.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Wire {
    #[default]
    Soap,
    Rest,
}

/// What the server hands an operation besides the body element.
#[derive(Debug, Clone, Default)]
pub struct Context {
    pub base: Base,
    pub wire: Wire,
    /// The decoded HTTP Basic username, if any.
    pub basic_user: Option<String>,
    /// The client address, for rate limits and logs.
    pub peer: Option<std::net::SocketAddr>,
    /// Set by the operation just before its first write.
    pub commit: CommitPoint,
}

/// When a request passed its commit point (its first write that matters: a sale stored, a
/// registration replacing the old token), or that it was abandoned before it. Before it, the
/// handler timeout may abandon the request; after it, the request is finished (see `execute`).
/// Whichever comes first wins: a store trip still running on a store thread when its request
/// was abandoned finds `mark` refused and stops before writing.
#[derive(Debug, Clone, Default)]
pub struct CommitPoint(std::sync::Arc<std::sync::OnceLock<Option<tokio::time::Instant>>>);

impl CommitPoint {
    /// Mark the commit point, just before the first write. Err once the request was abandoned:
    /// the caller must not write.
    pub fn mark(&self) -> Result<(), Error> {
        let _ = self.0.set(Some(tokio::time::Instant::now()));
        match self.0.get() {
            Some(Some(_)) => Ok(()),
            _ => Err(Error::HandlerTimeout),
        }
    }

    pub fn at(&self) -> Option<tokio::time::Instant> {
        self.0.get().copied().flatten()
    }

    /// Abandon the request if it has not reached its commit point; false if it has.
    pub fn abandon(&self) -> bool {
        let _ = self.0.set(None);
        self.at().is_none()
    }
}

/// A successful answer: body content and optional SOAP header content.
#[derive(Debug, Clone, Default)]
pub struct Reply {
    pub header: Option<String>,
    pub body: String,
}

/// The operations snapgate answers. Names come from this list only, never from request text,
/// so they are safe as metric labels and log fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpName {
    Ping,
    RegisterTerminal,
    SignOnWithToken,
    CreatePairingCode,
    Authorize,
    AuthorizeAndCapture,
    ReturnUnlinked,
    Capture,
    Adjust,
    Undo,
    ReturnById,
    CaptureAll,
    GetServiceInformation,
    SaveApplicationData,
    GetApplicationData,
    DeleteApplicationData,
    SaveMerchantProfiles,
    GetMerchantProfiles,
    GetMerchantProfileIds,
    GetMerchantProfile,
    DeleteMerchantProfile,
    IsMerchantProfileInitialized,
}

impl OpName {
    pub const ALL: [OpName; 22] = [
        OpName::Ping,
        OpName::RegisterTerminal,
        OpName::SignOnWithToken,
        OpName::CreatePairingCode,
        OpName::Authorize,
        OpName::AuthorizeAndCapture,
        OpName::ReturnUnlinked,
        OpName::Capture,
        OpName::Adjust,
        OpName::Undo,
        OpName::ReturnById,
        OpName::CaptureAll,
        OpName::GetServiceInformation,
        OpName::SaveApplicationData,
        OpName::GetApplicationData,
        OpName::DeleteApplicationData,
        OpName::SaveMerchantProfiles,
        OpName::GetMerchantProfiles,
        OpName::GetMerchantProfileIds,
        OpName::GetMerchantProfile,
        OpName::DeleteMerchantProfile,
        OpName::IsMerchantProfileInitialized,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            OpName::Ping => "Ping",
            OpName::RegisterTerminal => "RegisterTerminal",
            OpName::SignOnWithToken => "SignOnWithToken",
            OpName::CreatePairingCode => "CreatePairingCode",
            OpName::Authorize => "Authorize",
            OpName::AuthorizeAndCapture => "AuthorizeAndCapture",
            OpName::ReturnUnlinked => "ReturnUnlinked",
            OpName::Capture => "Capture",
            OpName::Adjust => "Adjust",
            OpName::Undo => "Undo",
            OpName::ReturnById => "ReturnById",
            OpName::CaptureAll => "CaptureAll",
            OpName::GetServiceInformation => "GetServiceInformation",
            OpName::SaveApplicationData => "SaveApplicationData",
            OpName::GetApplicationData => "GetApplicationData",
            OpName::DeleteApplicationData => "DeleteApplicationData",
            OpName::SaveMerchantProfiles => "SaveMerchantProfiles",
            OpName::GetMerchantProfiles => "GetMerchantProfiles",
            OpName::GetMerchantProfileIds => "GetMerchantProfileIds",
            OpName::GetMerchantProfile => "GetMerchantProfile",
            OpName::DeleteMerchantProfile => "DeleteMerchantProfile",
            OpName::IsMerchantProfileInitialized => "IsMerchantProfileInitialized",
        }
    }

    /// A ServiceInformation (SIS) operation; every other but Ping is TPS.
    pub fn is_sis(self) -> bool {
        matches!(
            self,
            OpName::RegisterTerminal
                | OpName::SignOnWithToken
                | OpName::CreatePairingCode
                | OpName::GetServiceInformation
                | OpName::SaveApplicationData
                | OpName::GetApplicationData
                | OpName::DeleteApplicationData
                | OpName::SaveMerchantProfiles
                | OpName::GetMerchantProfiles
                | OpName::GetMerchantProfileIds
                | OpName::GetMerchantProfile
                | OpName::DeleteMerchantProfile
                | OpName::IsMerchantProfileInitialized
        )
    }

    /// The service that answers it (Ping: both).
    fn serves(self, service: Service) -> bool {
        match self {
            OpName::Ping => true,
            o if o.is_sis() => service == Service::Sis,
            _ => service == Service::Tps,
        }
    }

    /// A transaction, counted by operation and outcome in the metrics.
    pub fn is_transaction(self) -> bool {
        self.serves(Service::Tps) && self != OpName::Ping
    }

    /// The operation `service` answers under `name`.
    pub fn lookup(service: Service, name: &str) -> Option<OpName> {
        OpName::ALL
            .into_iter()
            .find(|o| o.as_str() == name && o.serves(service))
    }

    /// The operation a body element names, if it belongs to `service`, and its namespace base.
    pub fn identify(service: Service, op: &Element) -> Option<(OpName, Base)> {
        let (base, path) = Base::split(op.ns.as_deref()?)?;
        let name = OpName::lookup(service, &op.name)?;
        let ok = match (name, service) {
            (OpName::Ping, _) => path == COMMON_PATH || path == service_path(service),
            _ => path == service_path(service),
        };
        ok.then_some((name, base))
    }

    /// The SOAPAction a client should send for it.
    pub fn soap_action(self, service: Service, base: Base) -> String {
        soap_action(service, base, self.as_str())
    }
}

fn service_path(service: Service) -> &'static str {
    match service {
        Service::Sis => SIS_PATH,
        Service::Tps => TPS_PATH,
    }
}

/// The SOAPAction a client should send for an operation.
pub fn soap_action(service: Service, base: Base, op: &str) -> String {
    match (service, op) {
        (_, "Ping") => format!(
            "{}{COMMON_PATH}/IExternallyFacingStandardOperations/Ping",
            base.uri()
        ),
        (Service::Sis, _) => format!("{}{SIS_PATH}/ICWSServiceInformation/{op}", base.uri()),
        (Service::Tps, _) => format!("{}{TPS_PATH}/ICwsTransactionProcessing/{op}", base.uri()),
    }
}

/// A request parsed into the operation it names. Borrowed from the parsed envelope: forward
/// mode relays the element as it came.
pub enum Operation<'a> {
    Ping,
    RegisterTerminal(register_terminal::Credentials),
    SignOnWithToken(sign_on::SignOnWithToken),
    CreatePairingCode(create_pairing_code::CreatePairingCode),
    Authorize(NewTransaction<'a>),
    AuthorizeAndCapture(NewTransaction<'a>),
    ReturnUnlinked(NewTransaction<'a>),
    Capture(FollowUp<'a, Follow>),
    Adjust(FollowUp<'a, Follow>),
    Undo(FollowUp<'a, Follow>),
    ReturnById(FollowUp<'a, Follow>),
    CaptureAll(FollowUp<'a, Vec<Follow>>),
    /// GetServiceInformation and Save/Get/DeleteApplicationData.
    Sis(service_information::SisRequest),
    /// The merchant-profile operations (operator credentials).
    Merchants(merchant_profiles::MerchantRequest),
}

impl<'a> Operation<'a> {
    /// Read the request for `name` from its body element (and the HTTP Basic username).
    pub fn parse(name: OpName, op: &'a Element<'a>, ctx: &Context) -> Result<Self, Error> {
        Ok(match name {
            OpName::Ping => Operation::Ping,
            OpName::RegisterTerminal => Operation::RegisterTerminal(register_terminal::parse(
                op,
                ctx.basic_user.as_deref(),
            )?),
            OpName::SignOnWithToken => Operation::SignOnWithToken(sign_on::parse(op)?),
            OpName::CreatePairingCode => {
                Operation::CreatePairingCode(create_pairing_code::parse(op)?)
            }
            OpName::Authorize => Operation::Authorize(authorize::parse(op)?),
            OpName::AuthorizeAndCapture => {
                Operation::AuthorizeAndCapture(authorize_and_capture::parse(op)?)
            }
            OpName::ReturnUnlinked => Operation::ReturnUnlinked(return_unlinked::parse(op)?),
            OpName::Capture => Operation::Capture(capture::parse(op)?),
            OpName::Adjust => Operation::Adjust(adjust::parse(op)?),
            OpName::Undo => Operation::Undo(undo::parse(op)?),
            OpName::ReturnById => Operation::ReturnById(return_by_id::parse(op)?),
            OpName::CaptureAll => Operation::CaptureAll(capture_all::parse(op)?),
            OpName::GetServiceInformation
            | OpName::SaveApplicationData
            | OpName::GetApplicationData
            | OpName::DeleteApplicationData => {
                Operation::Sis(service_information::parse(name, op)?)
            }
            OpName::SaveMerchantProfiles
            | OpName::GetMerchantProfiles
            | OpName::GetMerchantProfileIds
            | OpName::GetMerchantProfile
            | OpName::DeleteMerchantProfile
            | OpName::IsMerchantProfileInitialized => {
                Operation::Merchants(merchant_profiles::parse(name, op)?)
            }
        })
    }

    pub fn name(&self) -> OpName {
        match self {
            Operation::Ping => OpName::Ping,
            Operation::RegisterTerminal(_) => OpName::RegisterTerminal,
            Operation::SignOnWithToken(_) => OpName::SignOnWithToken,
            Operation::CreatePairingCode(_) => OpName::CreatePairingCode,
            Operation::Authorize(_) => OpName::Authorize,
            Operation::AuthorizeAndCapture(_) => OpName::AuthorizeAndCapture,
            Operation::ReturnUnlinked(_) => OpName::ReturnUnlinked,
            Operation::Capture(_) => OpName::Capture,
            Operation::Adjust(_) => OpName::Adjust,
            Operation::Undo(_) => OpName::Undo,
            Operation::ReturnById(_) => OpName::ReturnById,
            Operation::CaptureAll(_) => OpName::CaptureAll,
            Operation::Sis(r) => r.name(),
            Operation::Merchants(r) => r.name(),
        }
    }

    pub async fn apply(self, app: &Arc<App>, ctx: &Context) -> Result<Reply, Error> {
        match self {
            Operation::Ping => Ok(ping::apply(ctx.base)),
            Operation::RegisterTerminal(c) => {
                let token = register_terminal::apply(app, &c, ctx).await?;
                Ok(Reply {
                    header: None,
                    body: register_terminal::respond(ctx, &token),
                })
            }
            // Synchronous, with store reads (and a pairing code's write and flush): off the
            // async worker.
            Operation::SignOnWithToken(s) => {
                crate::store::blocking(|| sign_on::apply(app, s, ctx.base))
            }
            Operation::CreatePairingCode(c) => {
                crate::store::blocking(|| create_pairing_code::apply(app, c, ctx.base))
            }
            Operation::Authorize(t) => authorize::apply(app, ctx, t).await,
            Operation::AuthorizeAndCapture(t) => authorize_and_capture::apply(app, ctx, t).await,
            Operation::ReturnUnlinked(t) => return_unlinked::apply(app, ctx, t).await,
            Operation::Capture(f) => capture::apply(app, ctx, f).await,
            Operation::Adjust(f) => adjust::apply(app, ctx, f).await,
            Operation::Undo(f) => undo::apply(app, ctx, f).await,
            Operation::ReturnById(f) => return_by_id::apply(app, ctx, f).await,
            Operation::CaptureAll(f) => capture_all::apply(app, ctx, f).await,
            Operation::Sis(r) => service_information::apply(app, r, ctx).await,
            Operation::Merchants(r) => merchant_profiles::apply(app, r, ctx.base).await,
        }
    }
}

/// Run a parsed request (or count its parse failure) and record the result in the metrics.
/// The one way every CWS request, SOAP or REST, is run.
///
/// The handler timeout applies only before the request's commit point: abandoning it there
/// leaves nothing behind. Past it, the request gets `commit_timeout` from the commit point to
/// finish (the flush); if it cannot, the answer is `OutcomeUnknown` — the write still becomes
/// durable through group commit, and the same request again returns the stored answer.
pub async fn execute(
    app: &Arc<App>,
    name: OpName,
    parsed: Result<Operation<'_>, Error>,
    ctx: &Context,
) -> Result<Reply, Error> {
    let started = std::time::Instant::now();
    let result = match parsed {
        Ok(op) => {
            let limits = &app.config.limits;
            let work = op.apply(app, ctx);
            tokio::pin!(work);
            let before = tokio::time::sleep(limits.handler_timeout());
            tokio::pin!(before);
            let mut after: Option<std::pin::Pin<Box<tokio::time::Sleep>>> = None;
            // The work is polled first; the commit point is marked while it runs, so which
            // deadline applies is known right after each poll.
            std::future::poll_fn(|cx| {
                use std::future::Future;
                use std::task::Poll;
                if let Poll::Ready(r) = work.as_mut().poll(cx) {
                    return Poll::Ready(r);
                }
                // Before the commit point the handler timeout abandons the request, unless
                // an offloaded trip reaches the commit point first.
                if ctx.commit.at().is_none()
                    && before.as_mut().poll(cx).is_ready()
                    && ctx.commit.abandon()
                {
                    return Poll::Ready(Err(Error::HandlerTimeout));
                }
                if let Some(at) = ctx.commit.at() {
                    let deadline = at + limits.commit_timeout();
                    let sleep =
                        after.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                    if sleep.as_mut().poll(cx).is_ready() {
                        return Poll::Ready(Err(Error::OutcomeUnknown(
                            "not finished within the commit timeout".into(),
                        )));
                    }
                }
                Poll::Pending
            })
            .await
        }
        Err(e) => Err(e),
    };
    record(app, name, &result, started.elapsed());
    result
}

/// Count one operation in the metrics.
fn record(app: &App, name: OpName, result: &Result<Reply, Error>, took: std::time::Duration) {
    let m = &app.metrics;
    let label = name.as_str();
    m.observe(label, took);
    match result {
        Ok(r) => {
            if r.header.is_some() {
                m.token_renewed();
            }
            if name.is_transaction() {
                m.transaction(label, "ok");
            }
        }
        Err(e) => {
            m.fault(e.kind());
            if name.is_transaction() {
                m.transaction(label, e.kind());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_of_mark_and_abandon_wins() {
        // Marked first: the request is finished; abandoning it is refused.
        let c = CommitPoint::default();
        assert!(c.mark().is_ok());
        let at = c.at().unwrap();
        assert!(!c.abandon());
        assert!(c.mark().is_ok(), "a second mark (a retry's answer) is fine");
        assert_eq!(c.at(), Some(at), "and keeps the first instant");
        // Abandoned first: a store trip still running must not write.
        let c = CommitPoint::default();
        assert!(c.abandon());
        assert!(matches!(c.mark(), Err(Error::HandlerTimeout)));
        assert_eq!(c.at(), None);
        // Shared by clones: the trip holds one, `execute` another.
        let c = CommitPoint::default();
        let trip = c.clone();
        assert!(c.abandon());
        assert!(trip.mark().is_err());
    }
}
