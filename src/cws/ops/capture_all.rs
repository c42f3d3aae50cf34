//! CaptureAll: settles every listed sale (differenceData), or every authorized one when none
//! is listed; answers one capture response per sale.

use super::transaction::{self, FollowUp};
use super::{Context, OpName, Reply};
use crate::app::App;
use crate::cws::error::Error;
use crate::cws::processor::sandbox::Follow;
use crate::cws::soap::Element;
use std::sync::Arc;

pub fn parse<'a>(op: &'a Element<'a>) -> Result<FollowUp<'a, Vec<Follow>>, Error> {
    FollowUp::parse_all(OpName::CaptureAll, op)
}

pub async fn apply(
    app: &Arc<App>,
    ctx: &Context,
    f: FollowUp<'_, Vec<Follow>>,
) -> Result<Reply, Error> {
    transaction::run_follow(app, ctx, f, |sandbox, terminal, listed, _now| {
        sandbox.capture_all(terminal, listed)
    })
    .await
}
