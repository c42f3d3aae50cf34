//! ReturnUnlinked: a refund to a card, not linked to an earlier sale.

use super::transaction::{self, NewTransaction};
use super::{Context, OpName, Reply};
use crate::app::App;
use crate::cws::error::Error;
use crate::cws::soap::Element;
use std::sync::Arc;

pub fn parse<'a>(op: &'a Element<'a>) -> Result<NewTransaction<'a>, Error> {
    NewTransaction::parse(OpName::ReturnUnlinked, op)
}

pub async fn apply(app: &Arc<App>, ctx: &Context, t: NewTransaction<'_>) -> Result<Reply, Error> {
    transaction::run_new(app, ctx, t, |sandbox, terminal, req, now| {
        sandbox.return_unlinked(terminal, req, now)
    })
    .await
}
