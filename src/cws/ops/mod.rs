//! SOAP operations: one file per operation, each turning a parsed request element into a
//! response body or a typed error. `dispatch` picks the operation from the body element.

pub mod create_pairing_code;
pub mod ping;
pub mod register_terminal;
pub mod sign_on;
pub mod transaction;

use crate::app::App;
use crate::cws::error::{Error, Service};
use crate::cws::soap::{Base, Element};

pub const SIS_PATH: &str = "CWS/v2.0/ServiceInformation";
pub const TPS_PATH: &str = "CWS/v2.0/TransactionProcessing";
pub const COMMON_PATH: &str = "Ipc.General.WCF.Contracts.Common";

/// What the server hands an operation besides the body element.
#[derive(Debug, Clone, Default)]
pub struct Context {
    pub base: Base,
    /// The decoded HTTP Basic username, if any.
    pub basic_user: Option<String>,
    /// The client address, for rate limits and logs.
    pub peer: Option<std::net::SocketAddr>,
}

/// A successful answer: body content and optional SOAP header content.
#[derive(Debug, Clone, Default)]
pub struct Reply {
    pub header: Option<String>,
    pub body: String,
}

/// The operation a body element names, if it belongs to `service`: (name, base).
pub fn identify(service: Service, op: &Element) -> Option<(&str, Base)> {
    let (base, path) = Base::split(op.ns.as_deref()?)?;
    let ok = match service {
        Service::Sis => path == SIS_PATH || (path == COMMON_PATH && op.name == "Ping"),
        Service::Tps => path == TPS_PATH || (path == COMMON_PATH && op.name == "Ping"),
    };
    ok.then_some((op.name.as_str(), base))
}

/// The operation's name from our fixed list, for labels that must not carry request text.
pub fn known_operation(service: Service, name: &str) -> Option<&'static str> {
    let sis: &[&'static str] = &[
        "Ping",
        "RegisterTerminal",
        "SignOnWithToken",
        "CreatePairingCode",
    ];
    let list = match service {
        Service::Sis => sis,
        Service::Tps => transaction::OPERATIONS,
    };
    list.iter()
        .chain(["Ping"].iter())
        .find(|o| **o == name)
        .copied()
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

/// Run the operation `name` of `service`.
pub async fn dispatch(
    app: &App,
    service: Service,
    name: &str,
    op: &Element,
    ctx: &Context,
) -> Result<Reply, Error> {
    match (service, name) {
        (_, "Ping") => Ok(ping::apply(ctx.base)),
        (Service::Sis, "RegisterTerminal") => {
            let creds = register_terminal::parse(op, ctx.basic_user.as_deref())?;
            let token = register_terminal::apply(app, &creds, ctx).await?;
            Ok(Reply {
                header: None,
                body: register_terminal::respond(ctx.base, &token),
            })
        }
        (Service::Sis, "SignOnWithToken") => sign_on::apply(app, op, ctx.base),
        (Service::Sis, "CreatePairingCode") => create_pairing_code::apply(app, op, ctx.base),
        (Service::Tps, op_name) if transaction::OPERATIONS.contains(&op_name) => {
            transaction::apply(app, name, op, ctx).await
        }
        _ => Err(Error::UnknownOperation(name.to_owned())),
    }
}
