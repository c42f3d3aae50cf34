//! ReturnById: a refund linked to a captured sale, up to its captured amount.

use super::transaction::{self, FollowUp};
use super::{Context, OpName, Reply};
use crate::app::App;
use crate::cws::error::Error;
use crate::cws::processor::sandbox::Follow;
use crate::cws::soap::Element;
use std::sync::Arc;

pub fn parse<'a>(op: &'a Element<'a>) -> Result<FollowUp<'a, Follow>, Error> {
    FollowUp::parse_one(OpName::ReturnById, op)
}

pub async fn apply(app: &Arc<App>, ctx: &Context, f: FollowUp<'_, Follow>) -> Result<Reply, Error> {
    transaction::run_follow(app, ctx, f, |sandbox, terminal, follow, now| {
        Ok(vec![sandbox.return_by_id(terminal, follow, now)?])
    })
    .await
}
