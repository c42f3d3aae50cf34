//! Ping: the platform's liveness operation, answered without touching state.

use super::{Reply, COMMON_PATH};
use crate::cws::soap::Base;

pub fn apply(base: Base) -> Reply {
    Reply {
        header: None,
        // PingResult's members are declared by the type's own namespace, `…Common/External`,
        // as the platform's schema has them: in the wrapper's namespace a generated client reads
        // IsSuccess as absent (false).
        body: format!(
            "<PingResponse xmlns=\"{b}{COMMON_PATH}\"><PingResult xmlns:e=\"{b}{COMMON_PATH}/External\">\
             <e:IsSuccess>true</e:IsSuccess><e:Message>snapgate is up</e:Message></PingResult></PingResponse>",
            b = base.uri()
        ),
    }
}
