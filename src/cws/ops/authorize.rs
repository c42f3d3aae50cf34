//! Authorize: a new sale authorised and held; Capture, Adjust or Undo follow it up.

use super::transaction::{self, NewTransaction};
use super::{Context, OpName, Reply};
use crate::app::App;
use crate::cws::error::Error;
use crate::cws::soap::Element;
use std::sync::Arc;

pub fn parse<'a>(op: &'a Element<'a>) -> Result<NewTransaction<'a>, Error> {
    NewTransaction::parse(OpName::Authorize, op)
}

pub async fn apply(app: &Arc<App>, ctx: &Context, t: NewTransaction<'_>) -> Result<Reply, Error> {
    transaction::run_new(app, ctx, t, |sandbox, terminal, req, now| {
        sandbox.authorize(terminal, req, false, now)
    })
    .await
}
