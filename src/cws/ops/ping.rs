//! Ping: the platform's liveness operation, answered without touching state.

use super::{Reply, COMMON_PATH};
use crate::cws::soap::Base;

pub fn apply(base: Base) -> Reply {
    Reply {
        header: None,
        body: format!(
            "<PingResponse xmlns=\"{}{COMMON_PATH}\"><PingResult><IsSuccess>true</IsSuccess>\
             <Message>snapgate is up</Message></PingResult></PingResponse>",
            base.uri()
        ),
    }
}
