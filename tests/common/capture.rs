//! Keeps every SOAP reply the tests receive, for the schema check (issue 10): with
//! `SNAPGATE_CAPTURE_DIR` set, each `text/xml` envelope is written there as its own file (a
//! comment names the request), and `tests/schema/validate.py` validates them all against the
//! schemas in our WSDLs. Replies the server relayed from an upstream as they came are marked
//! `.relayed.xml`: they are the upstream's bytes, not ours.

use std::sync::atomic::{AtomicUsize, Ordering};

static SEQ: AtomicUsize = AtomicUsize::new(0);

pub fn save(method: &str, path: &str, content_type: &str, relayed: bool, body: &str) {
    let Some(dir) = std::env::var_os("SNAPGATE_CAPTURE_DIR") else {
        return;
    };
    if !content_type.starts_with("text/xml") || !body.contains("Envelope") {
        return;
    }
    let n = SEQ.fetch_add(1, Ordering::Relaxed);
    let test = std::thread::current()
        .name()
        .unwrap_or("unnamed")
        .replace(|c: char| !c.is_ascii_alphanumeric() && c != '_', "_");
    let kind = if relayed { "relayed.xml" } else { "xml" };
    let file =
        std::path::Path::new(&dir).join(format!("{}-{n:05}-{test}.{kind}", std::process::id()));
    // A comment may not hold "--".
    let what = format!("{method} {path}").replace("--", "- -");
    std::fs::write(&file, format!("<!-- {what} -->\n{body}"))
        .unwrap_or_else(|e| panic!("SNAPGATE_CAPTURE_DIR: writing {}: {e}", file.display()));
}
