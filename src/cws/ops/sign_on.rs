//! SignOnWithToken: CWS clients sign on with an identity token and use the answer as their
//! session token. A terminal's TerminalAccessToken already is its session token, so signing on
//! with it checks it exactly as a transaction would and hands it back; anything else gets the
//! same token faults a transaction gets.

use super::{Reply, SIS_PATH};
use crate::app::App;
use crate::cws::error::Error;
use crate::cws::session;
use crate::cws::soap::{Base, Element};

/// The `identityToken`, as sent.
pub struct SignOnWithToken {
    identity_token: Option<String>,
}

pub fn parse(op: &Element) -> Result<SignOnWithToken, Error> {
    let token = op.child_text("identityToken").map_err(|dup| {
        Error::validation(
            format!("SignOnWithToken/{dup}"),
            "The element appears more than once",
        )
    })?;
    Ok(SignOnWithToken {
        identity_token: token.map(str::to_owned),
    })
}

pub fn apply(app: &App, s: SignOnWithToken, base: Base) -> Result<Reply, Error> {
    session::authenticate(app, s.identity_token.as_deref())?;
    let token = s.identity_token.unwrap_or_default();
    Ok(Reply {
        header: None,
        body: format!(
            "<SignOnWithTokenResponse xmlns=\"{}{SIS_PATH}\"><SignOnWithTokenResult>{token}\
             </SignOnWithTokenResult></SignOnWithTokenResponse>",
            base.uri()
        ),
    })
}
