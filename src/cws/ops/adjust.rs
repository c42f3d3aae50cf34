//! Adjust: changes the amount of an authorized or captured sale.

use super::transaction::{self, FollowUp};
use super::{Context, OpName, Reply};
use crate::app::App;
use crate::cws::error::Error;
use crate::cws::processor::sandbox::Follow;
use crate::cws::soap::Element;
use std::sync::Arc;

pub fn parse<'a>(op: &'a Element<'a>) -> Result<FollowUp<'a, Follow>, Error> {
    FollowUp::parse_one(OpName::Adjust, op)
}

pub async fn apply(app: &Arc<App>, ctx: &Context, f: FollowUp<'_, Follow>) -> Result<Reply, Error> {
    transaction::run_follow(app, ctx, f, |sandbox, terminal, follow, _now| {
        Ok(vec![sandbox.adjust(terminal, follow)?])
    })
    .await
}
