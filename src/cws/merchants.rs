//! Operating on merchant profiles (issue 10 item 2): one set of actions for the admin
//! endpoints and the `snapgate merchants` command (which runs them on the data folder, or
//! through the admin listener while the server holds it).
//!
//! Admin endpoints (no body; parameters in the query):
//! - `GET /admin/merchants[?service_key=SK]`: every profile, JSON array;
//! - `GET /admin/merchants/{SK}/{ID}`: one profile;
//! - `PUT /admin/merchants/{SK}/{ID}?name=..&service_id=..&serials=A,B&active=false`: declare
//!   or replace it;
//! - `DELETE /admin/merchants/{SK}/{ID}`: remove it (terminals registered under it keep their
//!   token until it expires or is revoked; they cannot register again).

use crate::store::profiles::{MerchantProfile, ProfileStore};
use crate::store::StoreError;
use serde_json::{json, Value};

/// What an operator asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    List { service_key: Option<String> },
    Show { service_key: String, id: String },
    Put(MerchantProfile),
    Remove { service_key: String, id: String },
}

#[derive(Debug, thiserror::Error)]
pub enum MerchantError {
    #[error("{0}")]
    Invalid(String),
    #[error("no such merchant profile")]
    NotFound,
    #[error("storage: {0}")]
    Store(#[from] StoreError),
}

pub fn profile_json(p: &MerchantProfile) -> Value {
    json!({
        "service_key": p.service_key,
        "merchant_profile_id": p.merchant_profile_id,
        "name": p.name,
        "service_id": p.service_id,
        "active": p.active,
        "device_serials": p.device_serials,
        "created_at": crate::store::from_ms(p.created_at_ms).to_rfc3339(),
    })
}

/// Run an action; the JSON answer.
pub fn run(store: &dyn ProfileStore, action: Action) -> Result<Value, MerchantError> {
    match action {
        Action::List { service_key } => Ok(Value::Array(
            store
                .merchants(service_key.as_deref())?
                .iter()
                .map(profile_json)
                .collect(),
        )),
        Action::Show { service_key, id } => store
            .merchant(&service_key, &id)?
            .map(|p| profile_json(&p))
            .ok_or(MerchantError::NotFound),
        Action::Put(p) => {
            p.validate().map_err(MerchantError::Invalid)?;
            store.put_merchant(&p)?;
            Ok(profile_json(&p))
        }
        Action::Remove { service_key, id } => {
            if store.delete_merchant(&service_key, &id)? {
                Ok(
                    json!({ "removed": true, "service_key": service_key, "merchant_profile_id": id }),
                )
            } else {
                Err(MerchantError::NotFound)
            }
        }
    }
}

/// The admin request for an action (method, path and query), for the CLI's remote path.
pub fn to_request(action: &Action) -> (hyper::Method, String) {
    match action {
        Action::List { service_key } => (
            hyper::Method::GET,
            match service_key {
                Some(sk) => format!("/admin/merchants?service_key={sk}"),
                None => "/admin/merchants".into(),
            },
        ),
        Action::Show { service_key, id } => (
            hyper::Method::GET,
            format!("/admin/merchants/{service_key}/{id}"),
        ),
        Action::Put(p) => {
            let mut q = vec![format!("active={}", p.active)];
            if !p.name.is_empty() {
                q.push(format!("name={}", p.name.replace(' ', "+")));
            }
            if let Some(s) = &p.service_id {
                q.push(format!("service_id={s}"));
            }
            if !p.device_serials.is_empty() {
                q.push(format!("serials={}", p.device_serials.join(",")));
            }
            (
                hyper::Method::PUT,
                format!(
                    "/admin/merchants/{}/{}?{}",
                    p.service_key,
                    p.merchant_profile_id,
                    q.join("&")
                ),
            )
        }
        Action::Remove { service_key, id } => (
            hyper::Method::DELETE,
            format!("/admin/merchants/{service_key}/{id}"),
        ),
    }
}

/// The action an admin request asks for (None: not a merchants path).
pub fn from_request(
    method: &hyper::Method,
    path: &str,
    query: &str,
    now_ms: i64,
) -> Option<Result<Action, MerchantError>> {
    let rest = path
        .strip_prefix("/admin/merchants")
        .filter(|r| r.is_empty() || r.starts_with('/'))?;
    let param = |name: &str| {
        query.split('&').find_map(|kv| {
            kv.split_once('=')
                .filter(|(k, _)| *k == name)
                .map(|(_, v)| v.replace('+', " "))
        })
    };
    let bad = |m: &str| Some(Err(MerchantError::Invalid(m.to_owned())));
    if rest.is_empty() || rest == "/" {
        return match *method {
            hyper::Method::GET => Some(Ok(Action::List {
                service_key: param("service_key"),
            })),
            _ => bad("use GET to list merchant profiles"),
        };
    }
    let Some((service_key, id)) = rest
        .strip_prefix('/')
        .and_then(|r| r.split_once('/'))
        .filter(|(s, i)| !s.is_empty() && !i.is_empty() && !i.contains('/'))
    else {
        return bad("the path is /admin/merchants/{serviceKey}/{merchantProfileId}");
    };
    let (service_key, id) = (service_key.to_owned(), id.to_owned());
    Some(Ok(match *method {
        hyper::Method::GET => Action::Show { service_key, id },
        hyper::Method::DELETE => Action::Remove { service_key, id },
        hyper::Method::PUT | hyper::Method::POST => Action::Put(MerchantProfile {
            service_key,
            merchant_profile_id: id,
            name: param("name").unwrap_or_default(),
            service_id: param("service_id").filter(|s| !s.is_empty()),
            active: param("active").as_deref() != Some("false"),
            device_serials: param("serials")
                .map(|s| {
                    s.split(',')
                        .filter(|x| !x.is_empty())
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default(),
            created_at_ms: now_ms,
        }),
        _ => return bad("use GET, PUT or DELETE"),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip_through_the_admin_form() {
        let p = MerchantProfile {
            service_key: "SK1".into(),
            merchant_profile_id: "MP-12345".into(),
            name: "Corner shop".into(),
            service_id: Some("2317000001".into()),
            active: false,
            device_serials: vec!["B1".into(), "B2".into()],
            created_at_ms: 7,
        };
        for a in [
            Action::List { service_key: None },
            Action::List {
                service_key: Some("SK1".into()),
            },
            Action::Show {
                service_key: "SK1".into(),
                id: "MP1".into(),
            },
            Action::Remove {
                service_key: "SK1".into(),
                id: "MP1".into(),
            },
            Action::Put(p),
        ] {
            let (m, target) = to_request(&a);
            let (path, query) = target.split_once('?').unwrap_or((&target, ""));
            let back = from_request(&m, path, query, 7).unwrap().unwrap();
            assert_eq!(back, a);
        }
        assert!(
            from_request(&hyper::Method::GET, "/admin/merchants/SK", "", 0)
                .unwrap()
                .is_err()
        );
        assert!(from_request(&hyper::Method::GET, "/admin/terminals", "", 0).is_none());
    }
}
