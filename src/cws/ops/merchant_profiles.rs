//! The SIS merchant-profile operations (issue 10 item 2): SaveMerchantProfiles,
//! GetMerchantProfiles, GetMerchantProfileIds, GetMerchantProfile, DeleteMerchantProfile and
//! IsMerchantProfileInitialized, over the same store as `snapgate merchants`.
//!
//! Never open: the `sessionToken` must be an operator token from the key file
//! (`snapgate keys add-operator`), which scopes the call to that operator's service key. A
//! terminal's token, or anything else, gets InvalidTokenFault. `serviceId` and `tenderType` are
//! accepted and ignored (one bankcard service).

use super::{OpName, Reply, SIS_PATH};
use crate::app::App;
use crate::cws::error::Error;
use crate::cws::soap::{self, Base, Element, XSI_NS};
use crate::store::profiles::MerchantProfile;

const ARRAYS_NS: &str = "http://schemas.microsoft.com/2003/10/Serialization/Arrays";
/// Most profiles one SaveMerchantProfiles may declare.
pub const MAX_SAVE: usize = 100;

pub struct MerchantRequest {
    name: OpName,
    session_token: Option<String>,
    merchant_profile_id: Option<String>,
    /// SaveMerchantProfiles: (ProfileId, ServiceId) of each entry.
    profiles: Result<Vec<(String, Option<String>)>, Error>,
}

impl MerchantRequest {
    pub fn name(&self) -> OpName {
        self.name
    }
}

fn text<'a>(e: &'a Element, path: &str, child: &str) -> Result<Option<&'a str>, Error> {
    e.child_text(child).map_err(|dup| {
        Error::validation(
            format!("{path}/{dup}"),
            "The element appears more than once",
        )
    })
}

pub fn parse(name: OpName, op: &Element) -> Result<MerchantRequest, Error> {
    let path = name.as_str();
    let profiles = match name {
        OpName::SaveMerchantProfiles => read_profiles(op),
        _ => Ok(Vec::new()),
    };
    Ok(MerchantRequest {
        name,
        session_token: text(op, path, "sessionToken")?.map(str::to_owned),
        merchant_profile_id: text(op, path, "merchantProfileId")?.map(str::to_owned),
        profiles,
    })
}

fn read_profiles(op: &Element) -> Result<Vec<(String, Option<String>)>, Error> {
    let loc = "SaveMerchantProfiles/merchantProfiles";
    let list = op
        .child("merchantProfiles")
        .map_err(|_| Error::validation(loc, "The element appears more than once"))?
        .filter(|l| !l.nil)
        .ok_or_else(|| Error::validation(loc, "merchantProfiles is required"))?;
    let entries: Vec<&Element> = list
        .children
        .iter()
        .filter(|c| c.name == "MerchantProfile" && !c.nil)
        .collect();
    if entries.is_empty() || entries.len() > MAX_SAVE {
        return Err(Error::validation(
            loc,
            format!("from 1 to {MAX_SAVE} MerchantProfile entries"),
        ));
    }
    entries
        .into_iter()
        .map(|e| {
            let p = format!("{loc}/MerchantProfile");
            let id = text(e, &p, "ProfileId")?.ok_or_else(|| {
                Error::validation(format!("{p}/ProfileId"), "ProfileId is required")
            })?;
            Ok((id.to_owned(), text(e, &p, "ServiceId")?.map(str::to_owned)))
        })
        .collect()
}

fn write_profile(out: &mut String, element: &str, p: &MerchantProfile) {
    out.push_str(&format!("<{element}>"));
    soap::text_element(out, "ProfileId", Some(&p.merchant_profile_id));
    soap::text_element(out, "ServiceId", p.service_id.as_deref());
    let updated =
        crate::store::from_ms(p.created_at_ms).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    soap::text_element(out, "LastUpdated", Some(&updated));
    out.push_str(&format!("</{element}>"));
}

pub async fn apply(app: &App, r: MerchantRequest, base: Base) -> Result<Reply, Error> {
    // Profile reads and writes, off the async worker.
    crate::store::blocking(|| run(app, r, base))
}

fn run(app: &App, r: MerchantRequest, base: Base) -> Result<Reply, Error> {
    let keys = app.keys();
    let operator = r
        .session_token
        .as_deref()
        .and_then(|t| keys.operator_for(t))
        .ok_or(Error::InvalidToken("not an operator token"))?;
    let sk = operator.service_key.clone();
    let name = r.name.as_str();
    let id_path = format!("{name}/merchantProfileId");
    let required = |id: Option<String>| {
        id.ok_or_else(|| Error::validation(&id_path, "merchantProfileId is required"))
    };
    // `xmlns:i` for the `i:nil` of a profile without a ServiceId.
    let mut out = format!(
        "<{name}Response xmlns=\"{}{SIS_PATH}\" xmlns:i=\"{XSI_NS}\">",
        base.uri()
    );
    match r.name {
        OpName::SaveMerchantProfiles => {
            let now = crate::store::to_ms(app.clock.now());
            for (id, service_id) in r.profiles? {
                // Keep an operator's allow-list and label when the platform form re-declares it.
                let old = app.profiles.merchant(&sk, &id)?;
                let p = MerchantProfile {
                    service_key: sk.clone(),
                    merchant_profile_id: id,
                    name: old.as_ref().map(|o| o.name.clone()).unwrap_or_default(),
                    service_id,
                    active: true,
                    device_serials: old.map(|o| o.device_serials).unwrap_or_default(),
                    created_at_ms: now,
                };
                p.validate().map_err(|m| {
                    Error::validation("SaveMerchantProfiles/merchantProfiles/MerchantProfile", m)
                })?;
                app.profiles.put_merchant(&p)?;
            }
            tracing::info!(operator = %operator.id, "merchant profiles saved over SIS");
        }
        OpName::GetMerchantProfiles => {
            out.push_str("<GetMerchantProfilesResult>");
            for p in app.profiles.merchants(Some(&sk))? {
                write_profile(&mut out, "MerchantProfile", &p);
            }
            out.push_str("</GetMerchantProfilesResult>");
        }
        OpName::GetMerchantProfileIds => {
            out.push_str(&format!(
                "<GetMerchantProfileIdsResult xmlns:a=\"{ARRAYS_NS}\">"
            ));
            for p in app.profiles.merchants(Some(&sk))? {
                soap::text_element(&mut out, "a:string", Some(&p.merchant_profile_id));
            }
            out.push_str("</GetMerchantProfileIdsResult>");
        }
        OpName::GetMerchantProfile => {
            let id = required(r.merchant_profile_id)?;
            let p = app
                .profiles
                .merchant(&sk, &id)?
                .ok_or_else(|| Error::validation(&id_path, "No merchant profile has this id"))?;
            write_profile(&mut out, "GetMerchantProfileResult", &p);
        }
        OpName::DeleteMerchantProfile => {
            let id = required(r.merchant_profile_id)?;
            if !app.profiles.delete_merchant(&sk, &id)? {
                return Err(Error::validation(
                    &id_path,
                    "No merchant profile has this id",
                ));
            }
            tracing::info!(operator = %operator.id, "merchant profile deleted over SIS");
        }
        OpName::IsMerchantProfileInitialized => {
            let id = required(r.merchant_profile_id)?;
            let yes = app.profiles.merchant(&sk, &id)?.is_some_and(|p| p.active);
            out.push_str(&format!(
                "<IsMerchantProfileInitializedResult>{yes}</IsMerchantProfileInitializedResult>"
            ));
        }
        _ => {
            return Err(Error::Internal(format!(
                "{name} is not a merchant profile operation"
            )))
        }
    }
    out.push_str(&format!("</{name}Response>"));
    Ok(Reply {
        header: None,
        body: out,
    })
}
