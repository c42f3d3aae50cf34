//! Namespace strictness (issue 10 item 6). The readers find children by local name; this pass
//! checks that each element we read is in the namespace the platform's schema declares for it
//! (WCF DataContract rules: a member is qualified by the namespace of the type declaring it, so
//! `Amount` under TransactionData is `t:`, `TipAmount` beside it `b:`). WCF treats an element in
//! another namespace as absent, so a client that gets it wrong fails on the platform.
//!
//! `cws.namespaces = "strict"` (the default) answers such a request with a
//! CWSValidationResultFault naming the element; `"lenient"` accepts it as before. Both count
//! every mismatch in `snapgate_namespace_mismatches_total{element, action}`, so an operator can
//! see which clients would break before turning strictness on. Unknown elements are ignored
//! either way, as on the platform.

use super::{OpName, SIS_PATH, TPS_PATH};
use crate::cws::error::Error;
use crate::cws::soap::{Base, Element};
use serde::{Deserialize, Serialize};

const T: &str = "CWS/v2.0/Transactions";
const B: &str = "CWS/v2.0/Transactions/Bankcard";
const BP: &str = "CWS/v2.0/Transactions/Bankcard/Pro";

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NamespaceMode {
    /// Refuse a known element in the wrong namespace, as the platform does (it ignores it).
    #[default]
    Strict,
    /// Accept it (and count it).
    Lenient,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CwsConfig {
    pub namespaces: NamespaceMode,
}

/// One element in the wrong namespace: its name (from our tables, safe as a metric label),
/// where it is, and the namespace path it belongs in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch {
    pub element: &'static str,
    pub location: String,
    pub expected: &'static str,
}

/// Parameters of the operation wrappers: in the operation's own namespace.
const PARAMS: &[&str] = &[
    "sessionToken",
    "identityToken",
    "serviceKey",
    "vendorId",
    "encryptedSecret",
    "encryptionKeyId",
    "transaction",
    "applicationProfileId",
    "merchantProfileId",
    "workflowId",
    "differenceData",
    "batchIds",
    "forceClose",
    "applicationData",
    "serviceId",
    "tenderType",
    "merchantProfiles",
];
const TRANSACTION: &[(&str, &str)] = &[
    ("CustomerData", T),
    ("ReportingData", T),
    ("Addendum", T),
    ("ApplicationConfigurationData", B),
    ("TenderData", B),
    ("TransactionData", B),
    ("InterchangeData", BP),
];
const TENDER: &[(&str, &str)] = &[
    ("PaymentAccountDataToken", T),
    ("SecurePaymentAccountData", T),
    ("EncryptionKeyId", T),
    ("SwipeStatus", T),
    ("DeviceSerialNumber", T),
    ("CardData", B),
    ("CardSecurityData", B),
    ("EcommerceSecurityData", B),
];
const CARD: &[(&str, &str)] = &[
    ("CardType", B),
    ("CardholderName", B),
    ("PAN", B),
    ("Expire", B),
    ("Track1Data", B),
    ("Track2Data", B),
];
const TRANSACTION_DATA: &[(&str, &str)] = &[
    ("Amount", T),
    ("CurrencyCode", T),
    ("TransactionDateTime", T),
    ("CampaignId", T),
    ("Reference", T),
    ("AccountType", B),
    ("ApprovalCode", B),
    ("CashBackAmount", B),
    ("CustomerPresent", B),
    ("EmployeeId", B),
    ("EntryMode", B),
    ("GoodsType", B),
    ("InvoiceNumber", B),
    ("OrderNumber", B),
    ("SignatureCaptured", B),
    ("TerminalId", B),
    ("TipAmount", B),
    ("IsPartialShipment", B),
    ("FeeAmount", B),
    ("LaneId", B),
    ("PartialApprovalCapable", B),
    ("IsQuasiCash", B),
];
/// t:Capture, t:Undo, t:Return and their Bankcard extensions.
const DIFFERENCE: &[(&str, &str)] = &[
    ("TransactionId", T),
    ("Addendum", T),
    ("TransactionDateTime", T),
    ("Amount", B),
    ("TipAmount", B),
    ("ChargeType", B),
    ("ShipDate", B),
    ("TenderData", B),
    ("FeeAmount", B),
    ("TransactionCode", B),
    ("PINDebitReason", B),
    ("ForceVoid", B),
];
/// t:Adjust declares all its members itself.
const ADJUST: &[(&str, &str)] = &[
    ("Amount", T),
    ("TransactionId", T),
    ("Addendum", T),
    ("TipAmount", T),
];

struct Walk {
    base: Base,
    found: Vec<Mismatch>,
}

impl Walk {
    /// Check `e`'s children named in `table`; return them for descending. `path` (the
    /// segments down to `e`) is joined only for a mismatch, and the namespace is compared
    /// without building it: a request that passes allocates nothing here (issue 9).
    fn children<'e, 'x>(
        &mut self,
        e: &'e Element<'x>,
        path: &[&str],
        table: &[(&'static str, &'static str)],
    ) -> Vec<(&'static str, &'e Element<'x>)> {
        let mut known = Vec::new();
        for c in e.children.iter() {
            if let Some((name, ns)) = table.iter().find(|(n, _)| *n == c.name) {
                let under =
                    c.ns.as_deref()
                        .and_then(|u| u.strip_prefix(self.base.uri()));
                if under != Some(*ns) {
                    let mut location = path.join("/");
                    location.push('/');
                    location.push_str(name);
                    self.found.push(Mismatch {
                        element: name,
                        location,
                        expected: ns,
                    });
                }
                known.push((*name, c));
            }
        }
        known
    }
}

/// Every element of the request we read that is in another namespace than the schema's.
pub fn check(name: OpName, op: &Element, base: Base) -> Vec<Mismatch> {
    let own = match name {
        OpName::Ping => return Vec::new(),
        n if n.is_sis() => SIS_PATH,
        _ => TPS_PATH,
    };
    let mut w = Walk {
        base,
        found: Vec::new(),
    };
    let root = name.as_str();
    let params: Vec<(&'static str, &'static str)> = PARAMS.iter().map(|p| (*p, own)).collect();
    for (param, e) in w.children(op, &[root], &params) {
        match param {
            "transaction" => {
                for (part, e) in w.children(e, &[root, param], TRANSACTION) {
                    match part {
                        "TenderData" => {
                            for (t, e) in w.children(e, &[root, param, part], TENDER) {
                                if t == "CardData" {
                                    w.children(e, &[root, param, part, "CardData"], CARD);
                                }
                            }
                        }
                        "TransactionData" => {
                            w.children(e, &[root, param, part], TRANSACTION_DATA);
                        }
                        _ => {}
                    }
                }
            }
            "differenceData" if name == OpName::CaptureAll => {
                for (_, c) in w.children(e, &[root, param], &[("Capture", T)]) {
                    w.children(c, &[root, param, "Capture"], DIFFERENCE);
                }
            }
            "differenceData" if name == OpName::Adjust => {
                w.children(e, &[root, param], ADJUST);
            }
            "differenceData" => {
                w.children(e, &[root, param], DIFFERENCE);
            }
            _ => {}
        }
    }
    w.found
}

/// Apply the configured mode: count every mismatch, and in strict mode refuse the first.
pub fn enforce(
    mode: NamespaceMode,
    metrics: &crate::metrics::Metrics,
    name: OpName,
    op: &Element,
    base: Base,
) -> Result<(), Error> {
    let found = check(name, op, base);
    let action = match mode {
        NamespaceMode::Strict => "refused",
        NamespaceMode::Lenient => "accepted",
    };
    for m in &found {
        metrics.namespace_mismatch(m.element, action);
    }
    match (mode, found.into_iter().next()) {
        (NamespaceMode::Strict, Some(m)) => Err(Error::Validation {
            rule: "NamespaceMismatch",
            message: format!(
                "{} must be in the namespace {}",
                m.element,
                base.ns(m.expected)
            ),
            location: m.location,
        }),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cws::soap::{parse_envelope, XmlLimits};

    const LIMITS: XmlLimits = XmlLimits {
        max_depth: 32,
        max_elements: 500,
        max_attributes: 32,
    };

    fn op(body: &str) -> Element<'static> {
        let x = format!(
            "<s:Envelope xmlns:s=\"http://schemas.xmlsoap.org/soap/envelope/\"><s:Body>{body}</s:Body></s:Envelope>"
        );
        parse_envelope(x.as_bytes(), &LIMITS)
            .unwrap()
            .operation
            .into_owned()
    }

    #[test]
    fn wcf_qualification_passes_and_each_wrong_namespace_is_named() {
        let good = op(
            r#"<AuthorizeAndCapture xmlns="http://schemas.evosnap.com/CWS/v2.0/TransactionProcessing"
              xmlns:t="http://schemas.evosnap.com/CWS/v2.0/Transactions"
              xmlns:b="http://schemas.evosnap.com/CWS/v2.0/Transactions/Bankcard">
            <sessionToken>x</sessionToken><transaction><b:TenderData><t:SecurePaymentAccountData>AA</t:SecurePaymentAccountData>
            <b:CardData><b:PAN>4</b:PAN></b:CardData></b:TenderData>
            <b:TransactionData><t:Amount>1.00</t:Amount><b:TipAmount>0</b:TipAmount><Unknown/></b:TransactionData></transaction>
            </AuthorizeAndCapture>"#,
        );
        assert_eq!(
            check(OpName::AuthorizeAndCapture, &good, Base::Evosnap),
            vec![]
        );

        // What node `soap` sent without xsi:type: TenderData and its children in tp.
        let bad = op(
            r#"<AuthorizeAndCapture xmlns="http://schemas.evosnap.com/CWS/v2.0/TransactionProcessing">
            <sessionToken>x</sessionToken><transaction><TenderData><SecurePaymentAccountData>AA</SecurePaymentAccountData></TenderData>
            </transaction></AuthorizeAndCapture>"#,
        );
        let m = check(OpName::AuthorizeAndCapture, &bad, Base::Evosnap);
        assert_eq!(
            m.iter().map(|m| m.location.as_str()).collect::<Vec<_>>(),
            [
                "AuthorizeAndCapture/transaction/TenderData",
                "AuthorizeAndCapture/transaction/TenderData/SecurePaymentAccountData"
            ]
        );

        // SOAP::Lite's unqualified RegisterTerminal children.
        let lite = op(
            r#"<si:RegisterTerminal xmlns:si="http://schemas.evosnap.com/CWS/v2.0/ServiceInformation">
            <serviceKey>K</serviceKey></si:RegisterTerminal>"#,
        );
        let m = check(OpName::RegisterTerminal, &lite, Base::Evosnap);
        assert_eq!(m[0].element, "serviceKey");

        // Adjust's members are all t:, Capture's Amount b:.
        let adj = op(
            r#"<Adjust xmlns="http://schemas.evosnap.com/CWS/v2.0/TransactionProcessing"
              xmlns:t="http://schemas.evosnap.com/CWS/v2.0/Transactions" xmlns:b="http://schemas.evosnap.com/CWS/v2.0/Transactions/Bankcard">
            <differenceData><t:TransactionId>1</t:TransactionId><b:Amount>1</b:Amount></differenceData></Adjust>"#,
        );
        let m = check(OpName::Adjust, &adj, Base::Evosnap);
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].location, "Adjust/differenceData/Amount");
    }

    #[test]
    fn modes_refuse_or_count() {
        let lite = op(
            r#"<si:RegisterTerminal xmlns:si="http://schemas.ipcommerce.com/CWS/v2.0/ServiceInformation">
            <serviceKey>K</serviceKey><vendorId>V</vendorId></si:RegisterTerminal>"#,
        );
        let m = crate::metrics::Metrics::default();
        let e = enforce(
            NamespaceMode::Strict,
            &m,
            OpName::RegisterTerminal,
            &lite,
            Base::IpCommerce,
        )
        .unwrap_err();
        assert!(e.to_string().contains("RegisterTerminal/serviceKey"), "{e}");
        assert!(enforce(
            NamespaceMode::Lenient,
            &m,
            OpName::RegisterTerminal,
            &lite,
            Base::IpCommerce
        )
        .is_ok());
        let text = m.render();
        assert!(text.contains(
            "snapgate_namespace_mismatches_total{element=\"serviceKey\",action=\"refused\"} 1"
        ));
        assert!(text.contains(
            "snapgate_namespace_mismatches_total{element=\"vendorId\",action=\"accepted\"} 1"
        ));
    }
}
