//! The simulated terminals and the requests they send.
//!
//! Terminal `i` is a device of its own: its TDES KSN is the ANSI sample `FFFF9876543210E00000`
//! with the 19 device-id bits (after the key-set id `FFFF987654`, so the dev BDK serves it) set
//! to `i`, and its DeviceSerialNumber is `BENCH{i:07}`. Each terminal keeps one strictly
//! increasing KSN counter for everything it sends, registrations and transactions alike, as the
//! server's replay protection requires. Envelopes come from the test fixtures.

use bytes::Bytes;
use snapgate::config::{BdkConfig, Keys, DEV_SERVICE_KEY, DEV_VENDOR_ID};
use snapgate::dukpt::{self, Ksn};

/// The TDES KSN every terminal's KSN is derived from.
pub const KSN_BASE: [u8; 10] = [0xFF, 0xFF, 0x98, 0x76, 0x54, 0x32, 0x10, 0xE0, 0x00, 0x00];
/// How many distinct devices fit in the 19 device-id bits.
pub const MAX_DEVICES: u32 = 1 << 19;
/// EVO's sample card on track 2.
pub const TRACK2: &str = ";5454545454545454=13121010134988000010?";
/// An amount the sandbox approves (no decline trigger in the cents).
pub const AMOUNT: &str = "10.00";
/// What an approved transaction response contains.
pub const APPROVED: &[u8] = b"<t:Status>Successful</t:Status>";
/// The same, as forward mode re-writes the upstream's answer (default namespaces, no prefix).
pub const APPROVED_RELAYED: &[u8] =
    b"<Status xmlns=\"http://schemas.evosnap.com/CWS/v2.0/Transactions\">Successful</Status>";

pub const SIS_PATH: &str = "/2.1.32/SIS.svc";
pub const TPS_PATH: &str = "/2.1.32/TPS.svc";
pub const REGISTER_ACTION: &str =
    "http://schemas.evosnap.com/CWS/v2.0/ServiceInformation/ICWSServiceInformation/RegisterTerminal";
pub const SALE_ACTION: &str = "http://schemas.evosnap.com/CWS/v2.0/TransactionProcessing/ICwsTransactionProcessing/AuthorizeAndCapture";

const REGISTER_XML: &str = include_str!("../../../fixtures/register_terminal.xml");
const TRANSACTION_XML: &str = include_str!("../../../fixtures/tps/new_transaction.xml");

/// The operations the harness measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Op {
    Register,
    Sale,
}

impl Op {
    pub const ALL: [Op; 2] = [Op::Register, Op::Sale];

    pub fn index(self) -> usize {
        self as usize
    }

    pub fn name(self) -> &'static str {
        match self {
            Op::Register => "RegisterTerminal",
            Op::Sale => "AuthorizeAndCapture",
        }
    }
}

/// One request, ready to send.
pub struct Req {
    pub op: Op,
    pub path: &'static str,
    pub action: &'static str,
    pub body: Bytes,
}

/// A simulated terminal.
#[derive(Debug, Clone)]
pub struct Terminal {
    /// Device number (0..MAX_DEVICES), also in the serial number.
    pub device: u32,
    /// The last KSN counter used.
    pub counter: u32,
    /// The current TerminalAccessToken, once registered.
    pub token: Option<String>,
}

impl Terminal {
    pub fn new(device: u32) -> Terminal {
        Terminal {
            device,
            counter: 0,
            token: None,
        }
    }

    pub fn serial(&self) -> String {
        format!("BENCH{:07}", self.device)
    }

    /// The KSN for the next message, advancing the counter.
    fn next_ksn(&mut self) -> Ksn {
        self.counter += 1;
        device_ksn(self.device, self.counter)
    }
}

/// The KSN of device `device` at `counter`.
pub fn device_ksn(device: u32, counter: u32) -> Ksn {
    let mut b = KSN_BASE;
    b[5] = (device >> 11) as u8;
    b[6] = (device >> 3) as u8;
    b[7] = ((device & 7) << 5) as u8;
    Ksn::Tdes(b).with_counter(counter)
}

/// A fixture with `{{NAME}}` placeholders, split once so rendering is a few pushes.
struct Template {
    parts: Vec<(String, Option<String>)>,
}

impl Template {
    fn parse(text: &str) -> Template {
        let mut parts = Vec::new();
        let mut rest = text;
        while let Some(open) = rest.find("{{") {
            let close = rest[open..].find("}}").expect("closed placeholder") + open;
            parts.push((
                rest[..open].to_owned(),
                Some(rest[open + 2..close].to_owned()),
            ));
            rest = &rest[close + 2..];
        }
        parts.push((rest.to_owned(), None));
        Template { parts }
    }

    fn render(&self, vars: &[(&str, &str)]) -> Bytes {
        let mut out = String::with_capacity(2048);
        for (lit, var) in &self.parts {
            out.push_str(lit);
            if let Some(v) = var {
                let value = vars
                    .iter()
                    .find(|(k, _)| k == v)
                    .unwrap_or_else(|| panic!("no value for {{{{{v}}}}}"));
                out.push_str(value.1);
            }
        }
        Bytes::from(out)
    }
}

/// What every terminal shares: the BDK configuration and the envelope templates.
pub struct Fleet {
    keys: Keys,
    register: Template,
    sale: Template,
}

impl Fleet {
    /// `keys` must have a TDES BDK for key-set id `FFFF987654` (the dev key file does).
    pub fn new(keys: Keys) -> Result<Fleet, String> {
        if keys.bdk_for(&device_ksn(0, 1)).is_none() {
            return Err("the key file has no TDES BDK for key-set id FFFF987654".into());
        }
        Ok(Fleet {
            keys,
            register: Template::parse(REGISTER_XML),
            sale: Template::parse(TRANSACTION_XML),
        })
    }

    fn bdk(&self, ksn: &Ksn) -> &BdkConfig {
        self.keys.bdk_for(ksn).expect("checked in Fleet::new")
    }

    /// RegisterTerminal with `MerchantProfileId|DeviceSerialNumber` encrypted under the next KSN.
    pub fn register(&self, t: &mut Terminal) -> Req {
        let ksn = t.next_ksn();
        let bdk = self.bdk(&ksn);
        let key = dukpt::working_key(&bdk.bdk, &ksn, &bdk.secret_usage).expect("TDES KSN");
        // MP1: a merchant profile the dev setup declares (issue 10).
        let secret = format!("MP1|{}", t.serial());
        let es = hex::encode_upper(dukpt::encrypt_cbc(&key, secret.as_bytes()));
        let body = self.register.render(&[
            ("SERVICE_KEY", DEV_SERVICE_KEY),
            ("VENDOR_ID", DEV_VENDOR_ID),
            ("ENCRYPTED_SECRET", &es),
            ("KSN", &ksn.to_hex()),
        ]);
        Req {
            op: Op::Register,
            path: SIS_PATH,
            action: REGISTER_ACTION,
            body,
        }
    }

    /// AuthorizeAndCapture with EVO's sample card as track 2 encrypted under the next KSN.
    pub fn sale(&self, t: &mut Terminal) -> Req {
        let ksn = t.next_ksn();
        let bdk = self.bdk(&ksn);
        let key = dukpt::working_key(&bdk.bdk, &ksn, &bdk.track_usage).expect("TDES KSN");
        let track = hex::encode_upper(dukpt::encrypt_cbc(&key, TRACK2.as_bytes()));
        let reference = format!("{}-{}", t.device, t.counter);
        let body = self.sale.render(&[
            ("OP", "AuthorizeAndCapture"),
            ("TOKEN", t.token.as_deref().unwrap_or("")),
            ("TRACK", &track),
            ("KSN", &ksn.to_hex()),
            ("AMOUNT", AMOUNT),
            ("REFERENCE", &reference),
        ]);
        Req {
            op: Op::Sale,
            path: TPS_PATH,
            action: SALE_ACTION,
            body,
        }
    }
}

/// The text of `<name>...</name>` in a response, trimmed.
pub fn element_text<'a>(body: &'a [u8], name: &str) -> Option<&'a str> {
    let text = std::str::from_utf8(body).ok()?;
    let open = format!("<{name}>");
    let start = text.find(&open)? + open.len();
    let end = text[start..].find(&format!("</{name}>"))? + start;
    Some(text[start..end].trim())
}

/// Whether `needle` occurs in `hay`.
pub fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_bits_sit_between_key_set_id_and_counter() {
        let k = device_ksn(0x3210 << 3 | 7, 1);
        assert_eq!(k.to_hex(), "FFFF9876543210E00001");
        let a = device_ksn(5, 9);
        assert_eq!(a.key_set_id(), "FFFF987654");
        assert_eq!(a.counter(), 9);
        assert_ne!(a.device_id(), device_ksn(6, 9).device_id());
        assert_eq!(a.device_id(), device_ksn(5, 10).device_id());
        let last = device_ksn(MAX_DEVICES - 1, 1);
        assert_eq!(last.key_set_id(), "FFFF987654");
        assert_eq!(last.counter(), 1);
    }

    #[test]
    fn templates_fill_every_placeholder() {
        let t = Template::parse("a{{X}}b{{Y}}c");
        assert_eq!(&t.render(&[("X", "1"), ("Y", "2")])[..], b"a1b2c");
        assert_eq!(element_text(b"<A><R>\n tok </R></A>", "R"), Some("tok"));
    }
}
