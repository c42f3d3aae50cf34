//! The SIS operations a platform client calls before its first transaction (issue 10):
//! GetServiceInformation (the services this gateway offers) and Save/Get/DeleteApplicationData
//! (a stored application profile; `applicationProfileId` on transactions must name one). Each
//! authenticates its `sessionToken` as a transaction would.

use super::{Context, OpName, Reply, SIS_PATH};
use crate::app::App;
use crate::cws::error::Error;
use crate::cws::session;
use crate::cws::soap::{self, Element};
use crate::store::profiles::{MAX_APPLICATION_FIELDS, MAX_APPLICATION_VALUE};
use std::collections::BTreeMap;

/// ApplicationData's members, in the schema's order.
pub const APPLICATION_FIELDS: [&str; 14] = [
    "ApplicationAttended",
    "ApplicationLocation",
    "ApplicationName",
    "DeveloperId",
    "HardwareType",
    "PINCapability",
    "PTLSSocketId",
    "ReadCapability",
    "SerialNumber",
    "SoftwareVersion",
    "SoftwareVersionDate",
    "VendorId",
    "EncryptionType",
    "DeviceSerialNumber",
];

/// The service id answered when the terminal's registration named none: EVO's sample one.
pub const DEFAULT_SERVICE_ID: &str = "2317000001";

/// What the TPS side implements, by the schema's Operations member names.
const OPERATIONS: [(&str, bool); 16] = [
    ("Verify", false),
    ("QueryAccount", false),
    ("AuthAndCapture", true),
    ("Authorize", true),
    ("Adjust", true),
    ("ReturnById", true),
    ("ReturnUnlinked", true),
    ("Undo", true),
    ("Capture", true),
    ("CaptureSelective", false),
    ("CaptureAll", true),
    ("QueryRejected", false),
    ("ManageAccount", false),
    ("ManageAccountById", false),
    ("Disburse", false),
    ("CloseBatch", false),
];

/// A parsed SIS request: the token and, for the application data operations, their argument.
pub struct SisRequest {
    name: OpName,
    session_token: Option<String>,
    application_profile_id: Option<String>,
    data: Result<BTreeMap<String, String>, Error>,
}

fn text<'a>(op: &'a Element, name: OpName, child: &str) -> Result<Option<&'a str>, Error> {
    op.child_text(child).map_err(|dup| {
        Error::validation(
            format!("{}/{dup}", name.as_str()),
            "The element appears more than once",
        )
    })
}

impl SisRequest {
    pub fn name(&self) -> OpName {
        self.name
    }
}

pub fn parse(name: OpName, op: &Element) -> Result<SisRequest, Error> {
    let data = match name {
        OpName::SaveApplicationData => read_application_data(op),
        _ => Ok(BTreeMap::new()),
    };
    Ok(SisRequest {
        name,
        session_token: text(op, name, "sessionToken")?.map(str::to_owned),
        application_profile_id: text(op, name, "applicationProfileId")?.map(str::to_owned),
        data,
    })
}

fn read_application_data(op: &Element) -> Result<BTreeMap<String, String>, Error> {
    let loc = "SaveApplicationData/applicationData";
    let d = op
        .child("applicationData")
        .map_err(|_| Error::validation(loc, "The element appears more than once"))?
        .filter(|d| !d.nil)
        .ok_or_else(|| Error::validation(loc, "applicationData is required"))?;
    let mut out = BTreeMap::new();
    for field in APPLICATION_FIELDS {
        let v = d.child_text(field).map_err(|_| {
            Error::validation(
                format!("{loc}/{field}"),
                "The element appears more than once",
            )
        })?;
        if let Some(v) = v {
            if v.len() > MAX_APPLICATION_VALUE || v.chars().any(char::is_control) {
                return Err(Error::validation(
                    format!("{loc}/{field}"),
                    format!("at most {MAX_APPLICATION_VALUE} printable characters"),
                ));
            }
            out.insert(field.to_owned(), v.to_owned());
        }
    }
    debug_assert!(out.len() <= MAX_APPLICATION_FIELDS);
    Ok(out)
}

pub async fn apply(app: &App, r: SisRequest, ctx: &Context) -> Result<Reply, Error> {
    let base = ctx.base;
    let s = crate::store::blocking(|| session::authenticate(app, r.session_token.as_deref()))?;
    if s.wrote {
        // A pending token became current (the old one is dead): past the commit point, the
        // request finishes rather than time out.
        ctx.commit.mark()?;
        app.commit.durable_logged().await?; // the terminal's record only
    }
    let name = r.name.as_str();
    let ns = format!("{}{SIS_PATH}", base.uri());
    let id_path = format!("{name}/applicationProfileId");
    let mut out = format!("<{name}Response xmlns=\"{ns}\">");
    match r.name {
        OpName::GetServiceInformation => {
            let service_id = s.record.service_id.as_deref().unwrap_or(DEFAULT_SERVICE_ID);
            let mode = if app.forward.is_some() {
                "forward"
            } else {
                "sandbox"
            };
            out.push_str(
                "<GetServiceInformationResult><BankcardServices><BankcardService><Operations>",
            );
            for (op, yes) in OPERATIONS.iter().filter(|(op, _)| *op != "CloseBatch") {
                out.push_str(&format!("<{op}>{yes}</{op}>"));
            }
            out.push_str("</Operations>");
            soap::text_element(&mut out, "ServiceId", Some(service_id));
            soap::text_element(&mut out, "ServiceName", Some(&format!("snapgate {mode}")));
            out.push_str(
                "<Tenders><Credit>true</Credit><PINDebit>false</PINDebit>\
                 <PINlessDebit>false</PINlessDebit></Tenders></BankcardService></BankcardServices>\
                 </GetServiceInformationResult>",
            );
        }
        OpName::SaveApplicationData => {
            let data = r.data?;
            let now = crate::store::to_ms(app.clock.now());
            let id = crate::store::blocking(|| app.profiles.add_application(data, now))?;
            soap::text_element(&mut out, "SaveApplicationDataResult", Some(&id));
        }
        OpName::GetApplicationData => {
            let id = r
                .application_profile_id
                .ok_or_else(|| Error::validation(&id_path, "applicationProfileId is required"))?;
            let p = crate::store::blocking(|| app.profiles.application(&id))?
                .ok_or_else(|| Error::validation(&id_path, "No application profile has this id"))?;
            out.push_str("<GetApplicationDataResult>");
            for field in APPLICATION_FIELDS {
                if let Some(v) = p.data.get(field) {
                    soap::text_element(&mut out, field, Some(v));
                }
            }
            out.push_str("</GetApplicationDataResult>");
        }
        OpName::DeleteApplicationData => {
            let id = r
                .application_profile_id
                .ok_or_else(|| Error::validation(&id_path, "applicationProfileId is required"))?;
            if !crate::store::blocking(|| app.profiles.delete_application(&id))? {
                return Err(Error::validation(
                    &id_path,
                    "No application profile has this id",
                ));
            }
        }
        _ => {
            return Err(Error::Internal(format!(
                "{name} is not a SIS profile operation"
            )))
        }
    }
    out.push_str(&format!("</{name}Response>"));
    Ok(Reply {
        header: None,
        body: out,
    })
}
