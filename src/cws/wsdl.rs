//! The WSDLs we serve, with their `soap:address` set to where the client actually reaches us:
//! `server.public_url` when configured, else the request's scheme (TLS on the listener or not)
//! and Host header. A WSDL asked for at a service path (`/2.0.19/Txn?wsdl`) names that path;
//! `/wsdl/<file>` names the default `/2.1.32/…svc` path. Without this every generated client
//! (gSOAP, Mono, Perl SOAP::Lite in WSDL mode) defaults to `http://localhost:8080`.

use crate::cws::error::Service;
use crate::util::xml_escape_into;

/// Our WSDL files, compiled in so the binary serves them from anywhere.
pub const FILES: &[(&str, &str)] = &[
    ("SIS.wsdl", include_str!("../../wsdl/SIS.wsdl")),
    ("TPS.wsdl", include_str!("../../wsdl/TPS.wsdl")),
];

/// The address written in the files on disk, replaced when served.
const PLACEHOLDER: &str = "http://localhost:8080";
/// Longest Host header (or public URL) written into a WSDL.
const MAX_AUTHORITY: usize = 255;

pub fn file_for(service: Service) -> &'static str {
    match service {
        Service::Sis => "SIS.wsdl",
        Service::Tps => "TPS.wsdl",
    }
}

fn default_path(name: &str) -> &'static str {
    if name == "SIS.wsdl" {
        "/2.1.32/SIS.svc"
    } else {
        "/2.1.32/TPS.svc"
    }
}

/// A `server.public_url` we can write into an attribute: http(s), a host, no query or fragment.
pub fn check_public_url(u: &str) -> Result<(), String> {
    let rest = u
        .strip_prefix("https://")
        .or_else(|| u.strip_prefix("http://"))
        .ok_or("must start with http:// or https://")?;
    if u.len() > MAX_AUTHORITY || rest.is_empty() || rest.starts_with('/') {
        return Err("must name a host (at most 255 characters)".into());
    }
    if !u.bytes().all(|b| b.is_ascii_graphic()) || u.contains(['?', '#', '"', '<', '>', '\'']) {
        return Err("must be a plain URL without spaces, quotes, query or fragment".into());
    }
    Ok(())
}

/// A Host header fit to be written back: `host[:port]` (names, IPv4, bracketed IPv6).
fn clean_host(h: &str) -> Option<&str> {
    let ok = !h.is_empty()
        && h.len() <= MAX_AUTHORITY
        && h.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.:[]_".contains(&b));
    ok.then_some(h)
}

/// Where the client reached us, as `scheme://authority[/prefix]`, without a trailing slash.
pub fn base_url(public_url: Option<&str>, tls: bool, host: Option<&str>, listen: &str) -> String {
    if let Some(u) = public_url {
        return u.trim_end_matches('/').to_owned();
    }
    let scheme = if tls { "https" } else { "http" };
    let authority = host.and_then(clean_host).unwrap_or(listen);
    format!("{scheme}://{authority}")
}

/// The WSDL `name`, its service address set to `base` + (`service_path` or the default).
pub fn render(name: &str, base: &str, service_path: Option<&str>) -> Option<String> {
    let (_, text) = FILES.iter().find(|(n, _)| *n == name)?;
    let path = service_path.unwrap_or(default_path(name));
    let mut address = String::with_capacity(base.len() + path.len());
    xml_escape_into(&mut address, base);
    xml_escape_into(&mut address, path);
    let from = format!("location=\"{PLACEHOLDER}{}\"", default_path(name));
    debug_assert!(text.contains(&from), "{name} has the placeholder address");
    Some(text.replace(&from, &format!("location=\"{address}\"")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_address_follows_the_public_url_or_the_request() {
        let b = base_url(None, false, Some("10.0.0.5:9443"), "127.0.0.1:8080");
        assert_eq!(b, "http://10.0.0.5:9443");
        let w = render("TPS.wsdl", &b, Some("/2.0.19/Txn")).unwrap();
        assert!(w.contains(r#"location="http://10.0.0.5:9443/2.0.19/Txn""#));
        assert!(!w.contains("localhost:8080"));

        let b = base_url(Some("https://gw.example.com/cws/"), false, Some("x"), "l");
        assert_eq!(b, "https://gw.example.com/cws");
        let w = render("SIS.wsdl", &b, None).unwrap();
        assert!(w.contains(r#"location="https://gw.example.com/cws/2.1.32/SIS.svc""#));

        assert_eq!(
            base_url(None, true, Some("[::1]:8443"), "l"),
            "https://[::1]:8443"
        );
        // A Host that could break out of the attribute is not used.
        assert_eq!(
            base_url(None, false, Some("a\"><x"), "127.0.0.1:8080"),
            "http://127.0.0.1:8080"
        );
        assert_eq!(
            base_url(None, false, None, "127.0.0.1:8080"),
            "http://127.0.0.1:8080"
        );
    }

    #[test]
    fn public_urls_are_checked() {
        for ok in ["https://gw.example.com", "http://10.0.0.1:8080/cws"] {
            assert_eq!(check_public_url(ok), Ok(()), "{ok}");
        }
        for bad in [
            "gw.example.com",
            "ftp://x",
            "https://",
            "https:///x",
            "https://a b",
            "https://x/\"",
            "https://x/?q",
        ] {
            assert!(check_public_url(bad).is_err(), "{bad}");
        }
    }
}
