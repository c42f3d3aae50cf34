//! The SOAP 1.1 codec: reads an envelope into a small element tree under explicit limits, and
//! writes response and fault envelopes. It knows nothing of operations.
//!
//! The reader accepts UTF-8 only, never processes a DTD (a DOCTYPE is an error, so no entity can
//! be declared or expanded), and bounds depth, element count and attributes per element. The
//! tree keeps namespaces resolved, `i:type` (resolved to namespace + local name) and `i:nil`;
//! other attributes are counted against the limit and dropped.
//!
//! The tree borrows from the request (issue 9, item 4): names and texts are slices of the
//! request's bytes, and only a text with an entity or character reference in it is copied
//! (unescaped). A document's elements share one `Arc<str>` per namespace URI, and a namespace
//! name is bounded too (`MAX_NAMESPACE_BYTES`). Error messages quote the request only in short
//! excerpts, cut on a character boundary.
//!
//! Allocations per parse are counted (`tests/soap_allocations.rs`, issue 9's seventh sitting):
//! children are gathered on one list and moved into a Vec of their exact size, and quick-xml's
//! empty-element expansion and per-element duplicate-attribute lists are replaced by our own,
//! which give the same events and the same errors.

use quick_xml::events::attributes::AttrError;
use quick_xml::events::{BytesStart, Event};
use quick_xml::name::{QName, ResolveResult};
use quick_xml::NsReader;
use std::borrow::Cow;
use std::ops::Range;
use std::sync::Arc;

pub const SOAP_ENV_NS: &str = "http://schemas.xmlsoap.org/soap/envelope/";
pub const XSI_NS: &str = "http://www.w3.org/2001/XMLSchema-instance";
/// Longest namespace name an element or `i:type` may resolve to (real ones are under 100).
pub const MAX_NAMESPACE_BYTES: usize = 512;
/// Longest error message quoting the request.
const MAX_MESSAGE_BYTES: usize = 160;

/// The namespace base a client used: today's or the IP Commerce era's. Responses echo it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Base {
    #[default]
    Evosnap,
    IpCommerce,
}

impl Base {
    pub fn uri(self) -> &'static str {
        match self {
            Base::Evosnap => "http://schemas.evosnap.com/",
            Base::IpCommerce => "http://schemas.ipcommerce.com/",
        }
    }

    /// Split a namespace URI into the base and the path under it.
    pub fn split(ns: &str) -> Option<(Base, &str)> {
        if let Some(p) = ns.strip_prefix(Base::Evosnap.uri()) {
            Some((Base::Evosnap, p))
        } else {
            ns.strip_prefix(Base::IpCommerce.uri())
                .map(|p| (Base::IpCommerce, p))
        }
    }

    pub fn ns(self, path: &str) -> String {
        format!("{}{}", self.uri(), path)
    }
}

/// Bounds on one envelope.
#[derive(Debug, Clone, Copy)]
pub struct XmlLimits {
    pub max_depth: usize,
    pub max_elements: usize,
    pub max_attributes: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    #[error("the request is not UTF-8")]
    NotUtf8,
    #[error("the request is not well-formed XML: {0}")]
    Syntax(String),
    #[error("document type declarations are not accepted")]
    Dtd,
    #[error("processing instructions are not accepted")]
    ProcessingInstruction,
    #[error("elements nest deeper than {0}")]
    TooDeep(usize),
    #[error("the envelope has more than {0} elements")]
    TooManyElements(usize),
    #[error("an element has more than {0} attributes")]
    TooManyAttributes(usize),
    #[error("a namespace name is longer than {0} bytes")]
    NamespaceTooLong(usize),
    #[error("the document is not a SOAP 1.1 Envelope")]
    NotAnEnvelope,
    #[error("the Envelope must hold exactly one Body")]
    BodyCount,
    #[error("the Body must hold exactly one element")]
    BodyElementCount,
    #[error("the Envelope holds something other than Header and Body")]
    UnexpectedEnvelopeChild,
}

/// One element: resolved name, the attributes we use, text and children, borrowed from the
/// request where it can be (`'a`). A document's elements share one allocation per namespace URI
/// (`Arc<str>`): an envelope names four or five namespaces across dozens of elements.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Element<'a> {
    pub ns: Option<Arc<str>>,
    pub name: Cow<'a, str>,
    /// `i:type`, resolved: (namespace, local name).
    pub xsi_type: Option<(Option<Arc<str>>, Cow<'a, str>)>,
    pub nil: bool,
    pub text: Cow<'a, str>,
    pub children: Vec<Element<'a>>,
}

impl<'a> Element<'a> {
    pub fn is(&self, ns: &str, name: &str) -> bool {
        self.name == name && self.ns.as_deref() == Some(ns)
    }

    /// The only child with this local name; a second one is an error (the name is returned).
    pub fn child<'e>(&'e self, name: &str) -> Result<Option<&'e Element<'a>>, String> {
        let mut it = self.children.iter().filter(|c| c.name == name);
        let first = it.next();
        if it.next().is_some() {
            return Err(name.to_owned());
        }
        Ok(first)
    }

    /// The trimmed text of the only child with this name; absent, nil or empty gives None.
    pub fn child_text<'e>(&'e self, name: &str) -> Result<Option<&'e str>, String> {
        Ok(self
            .child(name)?
            .filter(|c| !c.nil)
            .map(|c| c.text.trim())
            .filter(|t| !t.is_empty()))
    }

    pub fn type_name(&self) -> Option<&str> {
        self.xsi_type.as_ref().map(|(_, n)| &**n)
    }

    /// A copy that owns all its text, for keeping a tree beyond the bytes it was read from.
    pub fn into_owned(self) -> Element<'static> {
        Element {
            ns: self.ns,
            name: Cow::Owned(self.name.into_owned()),
            xsi_type: self
                .xsi_type
                .map(|(ns, local)| (ns, Cow::Owned(local.into_owned()))),
            nil: self.nil,
            text: Cow::Owned(self.text.into_owned()),
            children: self.children.into_iter().map(Element::into_owned).collect(),
        }
    }
}

/// A parsed request envelope, borrowing from the request's bytes.
#[derive(Debug, Clone)]
pub struct Envelope<'a> {
    pub header: Option<Element<'a>>,
    /// The one element inside Body: the operation.
    pub operation: Element<'a>,
}

impl Envelope<'_> {
    /// A copy that owns all its text (see `Element::into_owned`).
    pub fn into_owned(self) -> Envelope<'static> {
        Envelope {
            header: self.header.map(Element::into_owned),
            operation: self.operation.into_owned(),
        }
    }
}

/// Read an envelope under `limits`.
pub fn parse_envelope<'a>(
    bytes: &'a [u8],
    limits: &XmlLimits,
) -> Result<Envelope<'a>, EnvelopeError> {
    let text = std::str::from_utf8(bytes).map_err(|_| EnvelopeError::NotUtf8)?;
    let root = parse_document(text, limits)?;
    if !root.is(SOAP_ENV_NS, "Envelope") {
        return Err(EnvelopeError::NotAnEnvelope);
    }
    let mut header = None;
    let mut body = None;
    let mut bodies = 0;
    for c in root.children {
        if c.ns.as_deref() != Some(SOAP_ENV_NS) {
            return Err(EnvelopeError::UnexpectedEnvelopeChild);
        }
        match &*c.name {
            "Header" if header.is_none() && body.is_none() => header = Some(c),
            "Body" => {
                bodies += 1;
                body = Some(c);
            }
            _ => return Err(EnvelopeError::UnexpectedEnvelopeChild),
        }
    }
    if bodies != 1 {
        return Err(EnvelopeError::BodyCount);
    }
    let mut body = body.ok_or(EnvelopeError::BodyCount)?;
    if body.children.len() != 1 || !body.text.trim().is_empty() {
        return Err(EnvelopeError::BodyElementCount);
    }
    let operation = body.children.pop().ok_or(EnvelopeError::BodyElementCount)?;
    Ok(Envelope { header, operation })
}

fn syntax(e: impl std::fmt::Display) -> EnvelopeError {
    // quick-xml's messages name positions and tags, which can be long and non-ASCII: keep a
    // short excerpt, cut on a character boundary (`String::truncate` panics inside a char).
    let mut m = e.to_string();
    if m.len() > MAX_MESSAGE_BYTES {
        let mut end = MAX_MESSAGE_BYTES;
        while !m.is_char_boundary(end) {
            end -= 1;
        }
        m.truncate(end);
    }
    EnvelopeError::Syntax(m)
}

/// The resolved namespace URI's bytes, bounded, borrowed from the reader.
fn ns_bytes(r: ResolveResult<'_>) -> Result<Option<&[u8]>, EnvelopeError> {
    match r {
        ResolveResult::Bound(ns) if ns.into_inner().len() > MAX_NAMESPACE_BYTES => {
            Err(EnvelopeError::NamespaceTooLong(MAX_NAMESPACE_BYTES))
        }
        ResolveResult::Bound(ns) => Ok(Some(ns.into_inner())),
        ResolveResult::Unbound => Ok(None),
        ResolveResult::Unknown(p) => Err(syntax(format_args!(
            "undeclared namespace prefix {:?}",
            String::from_utf8_lossy(&p)
        ))),
    }
}

/// The namespace URIs one document has used so far (a handful: a linear scan beats hashing),
/// and which one was used last: an element's namespace is mostly its previous sibling's, so
/// that one is compared first.
#[derive(Default)]
struct Namespaces {
    known: Vec<Arc<str>>,
    last: usize,
}

impl Namespaces {
    fn get(&mut self, r: ResolveResult<'_>) -> Result<Option<Arc<str>>, EnvelopeError> {
        let Some(uri) = ns_bytes(r)? else {
            return Ok(None);
        };
        // Compared as bytes: a known URI was checked as UTF-8 when it was added, so an equal
        // one is UTF-8 too; only a new URI is checked.
        if let Some(known) = self.known.get(self.last).filter(|k| k.as_bytes() == uri) {
            return Ok(Some(known.clone()));
        }
        if let Some(i) = self.known.iter().position(|k| k.as_bytes() == uri) {
            self.last = i;
            return Ok(Some(self.known[i].clone()));
        }
        let new: Arc<str> = std::str::from_utf8(uri)
            .map_err(|_| EnvelopeError::NotUtf8)?
            .into();
        self.last = self.known.len();
        self.known.push(new.clone());
        Ok(Some(new))
    }
}

/// `part` as a slice of `src` when it lies inside it (the reader hands out slices of the text it
/// reads), else an owned copy. The address arithmetic only decides which; the slice is taken
/// with `str::get`, so a part that is not inside `src`, or not on its character boundaries, is
/// copied instead.
fn borrowed<'a>(src: &'a str, part: &[u8]) -> Result<Cow<'a, str>, EnvelopeError> {
    let start = (part.as_ptr() as usize).wrapping_sub(src.as_ptr() as usize);
    let inside = start
        .checked_add(part.len())
        .and_then(|end| src.get(start..end))
        .filter(|s| s.as_ptr() == part.as_ptr());
    match inside {
        Some(s) => Ok(Cow::Borrowed(s)),
        None => Ok(Cow::Owned(
            std::str::from_utf8(part)
                .map_err(|_| EnvelopeError::NotUtf8)?
                .to_owned(),
        )),
    }
}

/// A text event's content, unescaped, as `BytesText::unescape` gives it but without its UTF-8
/// check (the reader's text is a slice of a `&str`, so `borrowed` only checks the slice's
/// ends) and without its scan for references when the text has no `&` (most texts).
fn unescaped<'a>(src: &'a str, raw: &[u8]) -> Result<Cow<'a, str>, EnvelopeError> {
    let s = borrowed(src, raw)?;
    if !raw.contains(&b'&') {
        return Ok(s);
    }
    // The same error as `BytesText::unescape` gives (quick-xml's `Error::Escape`).
    let copy = match quick_xml::escape::unescape(&s) {
        Ok(Cow::Borrowed(_)) => None,
        Ok(Cow::Owned(u)) => Some(u),
        Err(e) => return Err(syntax(quick_xml::Error::from(e))),
    };
    Ok(copy.map_or(s, Cow::Owned))
}

/// Append a piece of an element's text: the first piece is kept as it is (borrowed when it
/// had no reference to unescape), a second one (text around a comment, CDATA) makes a copy.
/// Whitespace after whitespace is dropped: it is what indentation between a parent's children
/// gives, one piece per child, and every reader trims it away (a relayed request only loses
/// some of its indentation).
fn append<'a>(text: &mut Cow<'a, str>, piece: Cow<'a, str>) {
    if text.is_empty() {
        *text = piece;
    } else if !(xml_space(&piece) && xml_space(text)) {
        text.to_mut().push_str(&piece);
    }
}

/// Only XML's whitespace (space, tab, CR, LF): cheaper than `trim`, and never more.
fn xml_space(s: &str) -> bool {
    s.bytes().all(|b| matches!(b, b' ' | b'\t' | b'\r' | b'\n'))
}

/// quick-xml's duplicate attribute check, on one list of names for the whole document: its own
/// check allocates a list per element with attributes (nine per sale). The same comparison
/// (the raw qualified names) and the same error, positions counted from the start of the tag.
fn check_duplicate(
    tag: &[u8],
    key: &[u8],
    keys: &mut Vec<Range<usize>>,
) -> Result<(), EnvelopeError> {
    // The key is a slice of the tag (the attribute iterator slices it): where it starts.
    let at = (key.as_ptr() as usize).wrapping_sub(tag.as_ptr() as usize);
    if let Some(prev) = keys.iter().find(|r| tag.get((*r).clone()) == Some(key)) {
        return Err(syntax(AttrError::Duplicated(at, prev.start)));
    }
    keys.push(at..at + key.len());
    Ok(())
}

/// The error of a malformed attribute, as quick-xml's checking iterator gives it: that one
/// checks for a duplicate name before it reads the value, so `a="1" a=2` is a duplicate there,
/// not an unquoted value. Only reached on an error, so the second pass costs nothing otherwise.
fn attribute_error(tag: &BytesStart) -> EnvelopeError {
    match tag.attributes().find_map(Result::err) {
        Some(e) => syntax(e),
        None => EnvelopeError::Syntax("malformed attribute".into()),
    }
}

/// An element's end: its children (`done[first..]`) move into it, and it joins `done` to wait
/// for its parent's end, or is the root when no element is open.
fn close<'a>(
    mut el: Element<'a>,
    first: usize,
    open: &[(Element<'a>, usize)],
    done: &mut Vec<Element<'a>>,
    root: &mut Option<Element<'a>>,
) {
    el.children = done.drain(first..).collect();
    if open.is_empty() {
        *root = Some(el);
    } else {
        done.push(el);
    }
}

/// Parse one XML document into its root element, borrowing from `text`.
pub fn parse_document<'a>(text: &'a str, limits: &XmlLimits) -> Result<Element<'a>, EnvelopeError> {
    let mut reader = NsReader::from_str(text);
    let cfg = reader.config_mut();
    // `<a/>` comes as one Empty event, read below as a start and an end: expanding it in the
    // reader would copy its name for the end event (one allocation per empty element).
    cfg.expand_empty_elements = false;
    cfg.check_end_names = true;
    cfg.trim_text(false);

    // Open elements, each with where its children start in `done`: the elements read but not
    // yet given to their parent. A parent's children are moved out of `done` at its end tag
    // into one Vec of their exact size, instead of each parent's Vec growing child by child
    // (the growth and its copies were a tenth of the parse under load).
    let mut stack: Vec<(Element, usize)> = Vec::with_capacity(16);
    let mut done: Vec<Element> = Vec::with_capacity(16);
    let mut namespaces = Namespaces {
        known: Vec::with_capacity(8),
        last: 0,
    };
    // The attribute names of the element being read (see `check_duplicate`).
    let mut keys: Vec<Range<usize>> = Vec::new();
    let mut root: Option<Element> = None;
    let mut elements = 0usize;
    let mut seen_any = false;
    loop {
        let (res, ev) = reader.read_resolved_event().map_err(syntax)?;
        match ev {
            Event::Start(ref e) | Event::Empty(ref e) => {
                if root.is_some() {
                    return Err(EnvelopeError::Syntax(
                        "content after the root element".into(),
                    ));
                }
                elements += 1;
                if elements > limits.max_elements {
                    return Err(EnvelopeError::TooManyElements(limits.max_elements));
                }
                if stack.len() >= limits.max_depth {
                    return Err(EnvelopeError::TooDeep(limits.max_depth));
                }
                let mut el = Element {
                    ns: namespaces.get(res)?,
                    name: borrowed(text, e.local_name().into_inner())?,
                    ..Element::default()
                };
                let mut count = 0;
                keys.clear();
                for a in e.attributes().with_checks(false) {
                    let Ok(a) = a else {
                        return Err(attribute_error(e));
                    };
                    check_duplicate(e, a.key.into_inner(), &mut keys)?;
                    count += 1;
                    if count > limits.max_attributes {
                        return Err(EnvelopeError::TooManyAttributes(limits.max_attributes));
                    }
                    let (ans, local) = reader.resolve_attribute(a.key);
                    if !matches!(ans, ResolveResult::Bound(n) if n.into_inner() == XSI_NS.as_bytes())
                    {
                        continue;
                    }
                    let v = a.unescape_value().map_err(syntax)?;
                    match local.into_inner() {
                        b"type" => {
                            let (tns, tlocal) = reader.resolve(QName(v.trim().as_bytes()), false);
                            el.xsi_type =
                                Some((namespaces.get(tns)?, borrowed(text, tlocal.into_inner())?));
                        }
                        b"nil" => el.nil = v.trim() == "true" || v.trim() == "1",
                        _ => {}
                    }
                }
                seen_any = true;
                if matches!(ev, Event::Empty(_)) {
                    close(el, done.len(), &stack, &mut done, &mut root);
                } else {
                    stack.push((el, done.len()));
                }
            }
            Event::End(_) => {
                let (el, first) = stack
                    .pop()
                    .ok_or_else(|| EnvelopeError::Syntax("unbalanced end tag".into()))?;
                close(el, first, &stack, &mut done, &mut root);
            }
            Event::Text(t) => {
                let s = unescaped(text, &t)?;
                match stack.last_mut() {
                    Some((el, _)) => append(&mut el.text, s),
                    None if s.trim().is_empty() => {}
                    None => {
                        return Err(EnvelopeError::Syntax(
                            "text outside the root element".into(),
                        ))
                    }
                }
            }
            Event::CData(t) => {
                let s = match t.into_inner() {
                    Cow::Borrowed(b) => borrowed(text, b)?,
                    Cow::Owned(v) => {
                        Cow::Owned(String::from_utf8(v).map_err(|_| EnvelopeError::NotUtf8)?)
                    }
                };
                match stack.last_mut() {
                    Some((el, _)) => append(&mut el.text, s),
                    None => {
                        return Err(EnvelopeError::Syntax(
                            "CDATA outside the root element".into(),
                        ))
                    }
                }
            }
            Event::DocType(_) => return Err(EnvelopeError::Dtd),
            Event::PI(_) => return Err(EnvelopeError::ProcessingInstruction),
            Event::Decl(_) if !seen_any => {}
            Event::Decl(_) => {
                return Err(EnvelopeError::Syntax("misplaced XML declaration".into()))
            }
            Event::Comment(_) => {}
            Event::Eof => break,
        }
    }
    if !stack.is_empty() {
        return Err(EnvelopeError::Syntax(
            "the document ends inside an element".into(),
        ));
    }
    root.ok_or_else(|| EnvelopeError::Syntax("no root element".into()))
}

// ---------------------------------------------------------------------------------------------
// Writing

pub use crate::util::xml_escape_into as escape_into;

/// Append `<name xmlns="ns">text</name>` (escaped); `None` writes an `i:nil` element.
pub fn text_element(out: &mut String, name: &str, text: Option<&str>) {
    out.push('<');
    out.push_str(name);
    match text {
        Some(t) => {
            out.push('>');
            escape_into(out, t);
            out.push_str("</");
            out.push_str(name);
            out.push('>');
        }
        None => out.push_str(" i:nil=\"true\"/>"),
    }
}

/// Wrap body content (and optional header content) in a SOAP 1.1 envelope.
pub fn envelope(header: Option<&str>, body: &str) -> String {
    let mut out = String::with_capacity(body.len() + header.map_or(0, str::len) + 160);
    out.push_str("<s:Envelope xmlns:s=\"");
    out.push_str(SOAP_ENV_NS);
    out.push_str("\">");
    if let Some(h) = header {
        out.push_str("<s:Header>");
        out.push_str(h);
        out.push_str("</s:Header>");
    }
    out.push_str("<s:Body>");
    out.push_str(body);
    out.push_str("</s:Body></s:Envelope>");
    out
}

/// Where a fault's detail type is declared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultFamily {
    /// `Identity/1.0/`: AuthenticationFault, ExpiredTokenFault, InvalidTokenFault.
    Identity,
    /// `CWS/v2.0/ServiceInformation/Faults`.
    ServiceInformation,
    /// `CWS/v2.0/Transactions/Faults`.
    Transactions,
}

impl FaultFamily {
    fn path(self) -> &'static str {
        match self {
            FaultFamily::Identity => "Identity/1.0/",
            FaultFamily::ServiceInformation => "CWS/v2.0/ServiceInformation/Faults",
            FaultFamily::Transactions => "CWS/v2.0/Transactions/Faults",
        }
    }
}

/// One `CWSValidationErrorFault` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidationError {
    pub rule_key: String,
    pub rule_location_key: String,
    pub rule_message: String,
}

/// A SOAP fault, ready to write. Built only by `error::Error::to_fault`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    pub http_status: u16,
    /// `s:Client` or `s:Server`.
    pub code: &'static str,
    pub string: String,
    pub family: FaultFamily,
    pub detail: &'static str,
    pub error_id: u32,
    pub operation: String,
    pub problem_type: String,
    pub errors: Vec<ValidationError>,
    pub transaction_id: Option<String>,
    pub transaction_state: Option<String>,
}

impl Fault {
    /// The full SOAP envelope for this fault.
    pub fn to_envelope(&self, base: Base) -> String {
        let mut d = String::with_capacity(512);
        d.push_str("<s:Fault><faultcode>");
        d.push_str(self.code);
        d.push_str("</faultcode><faultstring xml:lang=\"en-US\">");
        escape_into(&mut d, &self.string);
        d.push_str("</faultstring><detail><");
        d.push_str(self.detail);
        d.push_str(" xmlns=\"");
        d.push_str(base.uri());
        d.push_str(self.family.path());
        d.push_str("\" xmlns:i=\"");
        d.push_str(XSI_NS);
        d.push_str("\">");
        if self.family == FaultFamily::Transactions {
            d.push_str("<BatchId i:nil=\"true\"/>");
        }
        d.push_str("<ErrorID>");
        d.push_str(&self.error_id.to_string());
        d.push_str("</ErrorID><HelpURL i:nil=\"true\"/>");
        text_element(&mut d, "Operation", Some(&self.operation));
        text_element(&mut d, "ProblemType", Some(&self.problem_type));
        if self.family == FaultFamily::Transactions {
            text_element(&mut d, "TransactionId", self.transaction_id.as_deref());
            // A non-nillable enumeration in the platform's schema: omitted when unknown,
            // never `i:nil` (strict .NET and JAXB readers refuse the whole detail then).
            if let Some(state) = self.transaction_state.as_deref() {
                text_element(&mut d, "TransactionState", Some(state));
            }
        }
        if !self.errors.is_empty() {
            d.push_str("<Errors>");
            for e in &self.errors {
                d.push_str("<CWSValidationErrorFault><ErrorType>Validation</ErrorType>");
                text_element(&mut d, "RuleKey", Some(&e.rule_key));
                text_element(&mut d, "RuleLocationKey", Some(&e.rule_location_key));
                text_element(&mut d, "RuleMessage", Some(&e.rule_message));
                d.push_str("<TransactionId i:nil=\"true\"/></CWSValidationErrorFault>");
            }
            d.push_str("</Errors>");
        }
        d.push_str("</");
        d.push_str(self.detail);
        d.push_str("></detail></s:Fault>");
        envelope(None, &d)
    }
}

/// Write an element tree back out as XML (namespaces declared where they change). Used to relay
/// requests and responses: only what the tree keeps (names, `i:type`, `i:nil`, text) survives.
pub fn write_element(out: &mut String, e: &Element, parent_ns: Option<&str>) {
    write_element_with(out, e, parent_ns, |out, c| {
        write_element(out, c, e.ns.as_deref())
    });
}

/// `write_element`, with each child written by `child` (which may leave one out or write
/// another in its place): the relay rewrites one child without copying the tree.
pub fn write_element_with(
    out: &mut String,
    e: &Element,
    parent_ns: Option<&str>,
    mut child: impl FnMut(&mut String, &Element),
) {
    out.push('<');
    out.push_str(&e.name);
    if e.ns.as_deref() != parent_ns {
        out.push_str(" xmlns=\"");
        escape_into(out, e.ns.as_deref().unwrap_or(""));
        out.push('"');
    }
    if e.xsi_type.is_some() || e.nil {
        out.push_str(" xmlns:i=\"");
        out.push_str(XSI_NS);
        out.push('"');
    }
    if let Some((tns, local)) = &e.xsi_type {
        if let Some(tns) = tns {
            out.push_str(" xmlns:t0=\"");
            escape_into(out, tns);
            out.push_str("\" i:type=\"t0:");
        } else {
            out.push_str(" i:type=\"");
        }
        escape_into(out, local);
        out.push('"');
    }
    if e.nil {
        out.push_str(" i:nil=\"true\"");
    }
    if e.children.is_empty() && e.text.is_empty() {
        out.push_str("/>");
        return;
    }
    out.push('>');
    escape_into(out, &e.text);
    for c in &e.children {
        child(out, c);
    }
    out.push_str("</");
    out.push_str(&e.name);
    out.push('>');
}

/// Zeroize every text the tree owns (card data lives in element text), then drop the
/// children. A borrowed text is a slice of the request's bytes, which their owner zeroizes
/// (`http::read_body`'s buffer).
pub fn wipe(e: &mut Element) {
    use zeroize::Zeroize;
    if let Cow::Owned(t) = &mut e.text {
        t.zeroize();
    }
    e.text = Cow::Borrowed("");
    for c in &mut e.children {
        wipe(c);
    }
    e.children.clear();
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: XmlLimits = XmlLimits {
        max_depth: 32,
        max_elements: 200,
        max_attributes: 16,
    };

    fn env(body: &str) -> String {
        format!(
            "<?xml version=\"1.0\" encoding=\"utf-8\"?><s:Envelope xmlns:s=\"{SOAP_ENV_NS}\"><s:Body>{body}</s:Body></s:Envelope>"
        )
    }

    #[test]
    fn reads_operation_children_with_namespaces_and_types() {
        let x = env(
            r#"<Op xmlns="urn:a" xmlns:i="http://www.w3.org/2001/XMLSchema-instance" xmlns:b="urn:b">
                 <x>  1 &amp; 2 </x><y i:nil="true"/><t i:type="b:Special"><z><![CDATA[<raw>]]></z></t></Op>"#,
        );
        let e = parse_envelope(x.as_bytes(), &LIMITS).unwrap();
        let op = &e.operation;
        assert!(op.is("urn:a", "Op"));
        assert_eq!(op.child_text("x").unwrap(), Some("1 & 2"));
        assert_eq!(op.child_text("y").unwrap(), None);
        let t = op.child("t").unwrap().unwrap();
        assert_eq!(t.xsi_type, Some((Some("urn:b".into()), "Special".into())));
        assert_eq!(t.child_text("z").unwrap(), Some("<raw>"));
    }

    #[test]
    fn write_element_round_trips_namespaces_types_nil_and_text() {
        // What forward mode relays: every namespace change declared (including back to none),
        // i:type with and without a namespace, i:nil, empty elements, escaped text, children
        // after text. Parsing what was written gives the same tree.
        let src = r#"<Op xmlns="urn:a" xmlns:i="http://www.w3.org/2001/XMLSchema-instance" xmlns:b="urn:b">
            <x>1 &amp; 2 &lt;3&gt;</x><b:y i:nil="true"/><t i:type="b:Special"><z>in a</z><b:w>in b</b:w></t>
            <none xmlns=""><deep>no namespace</deep></none><empty/><u i:type="Plain">7</u></Op>"#;
        let tree = parse_document(src, &LIMITS).unwrap();
        let mut out = String::new();
        write_element(&mut out, &tree, None);
        let again = parse_document(&out, &LIMITS).unwrap();
        assert_eq!(again, tree, "{out}");
        // The root declares its namespace; children in the same one do not repeat it.
        assert!(out.starts_with("<Op xmlns=\"urn:a\">"), "{out}");
        assert_eq!(out.matches("xmlns=\"urn:a\"").count(), 1, "{out}");
        assert!(out.contains("<none xmlns=\"\">"), "{out}");
        assert!(out.contains("<empty/>"), "{out}");
    }

    #[test]
    fn write_element_with_leaves_out_or_replaces_children_as_told() {
        // The relay's use: one child left out, one written in another's place, the rest as
        // `write_element` writes them, with the root's namespace in scope for the children.
        let src = r#"<Op xmlns="urn:a"><drop>secret</drop><swap>old</swap><keep b="x">1 &amp; 2</keep></Op>"#;
        let tree = parse_document(src, &LIMITS).unwrap();
        let mut out = String::new();
        write_element_with(&mut out, &tree, None, |out, c| match &*c.name {
            "drop" => {}
            "swap" => {
                let new = Element {
                    text: "new".into(),
                    ..c.clone()
                };
                write_element(out, &new, tree.ns.as_deref());
            }
            _ => write_element(out, c, tree.ns.as_deref()),
        });
        assert_eq!(
            out,
            r#"<Op xmlns="urn:a"><swap>new</swap><keep>1 &amp; 2</keep></Op>"#
        );
        // Every child written as is: the same bytes as write_element.
        let mut all = String::new();
        write_element_with(&mut all, &tree, None, |out, c| {
            write_element(out, c, tree.ns.as_deref())
        });
        let mut plain = String::new();
        write_element(&mut plain, &tree, None);
        assert_eq!(all, plain);
    }

    #[test]
    fn each_limit_admits_exactly_its_value() {
        // Elements (200 here): a root with 199 children is read, one more is refused.
        let doc = |n: usize| format!("<r>{}</r>", "<c/>".repeat(n));
        assert_eq!(
            parse_document(&doc(199), &LIMITS).unwrap().children.len(),
            199
        );
        assert!(matches!(
            parse_document(&doc(200), &LIMITS),
            Err(EnvelopeError::TooManyElements(200))
        ));
        // Depth (32): 32 nested elements are read, 33 are refused.
        let nest = |n: usize| format!("{}{}", "<d>".repeat(n), "</d>".repeat(n));
        assert!(parse_document(&nest(32), &LIMITS).is_ok());
        assert!(matches!(
            parse_document(&nest(33), &LIMITS),
            Err(EnvelopeError::TooDeep(32))
        ));
        // Attributes (16 per element): 16 are read, 17 are refused.
        let attrs = |n: usize| {
            let a: String = (0..n).map(|i| format!(" a{i}=\"v\"")).collect();
            format!("<r{a}/>")
        };
        assert!(parse_document(&attrs(16), &LIMITS).is_ok());
        assert!(matches!(
            parse_document(&attrs(17), &LIMITS),
            Err(EnvelopeError::TooManyAttributes(16))
        ));
    }

    #[test]
    fn an_xml_declaration_is_read_only_before_the_root() {
        // Found by cargo-mutants (seventh sitting): nothing held a declaration to the start.
        assert!(parse_document(r#"<?xml version="1.0"?><r/>"#, &LIMITS).is_ok());
        for x in [
            r#"<r><?xml version="1.0"?></r>"#,
            r#"<r/><?xml version="1.0"?>"#,
        ] {
            match parse_document(x, &LIMITS) {
                Err(EnvelopeError::Syntax(m)) => {
                    assert_eq!(m, "misplaced XML declaration", "{x}")
                }
                other => panic!("{x}: {other:?}"),
            }
        }
    }

    #[test]
    fn attribute_errors_are_quick_xmls_own() {
        // Duplicates are checked here (one list per document), malformed attributes re-read
        // with quick-xml's checks: the messages are the ones quick-xml's checking iterator
        // gives, which sees a duplicate name before it reads the value.
        let err = |x: &str| match parse_document(x, &LIMITS) {
            Err(EnvelopeError::Syntax(m)) => m,
            other => panic!("{x}: {other:?}"),
        };
        let dup = "position 8: duplicated attribute, previous declaration at position 2";
        assert_eq!(err(r#"<r a="1" a="2"/>"#), dup);
        assert_eq!(err(r#"<r a="1" a=2/>"#), dup);
        assert_eq!(err(r#"<r a="1" a="2"></r>"#), dup);
        assert_eq!(
            err(r#"<r xmlns:p="urn:p"><s p:a="1" b="2" p:a="3"/></r>"#),
            "position 16: duplicated attribute, previous declaration at position 2"
        );
        assert_eq!(
            err(r#"<r a="1" b c="2"/>"#),
            "position 10: attribute key must be directly followed by `=` or space"
        );
        // The same name on two elements is no duplicate; a prefixed and an unprefixed one
        // are two names.
        let ok = r#"<r a="1" xmlns:p="urn:p" p:a="2"><s a="1"/><t a="1"></t></r>"#;
        assert_eq!(parse_document(ok, &LIMITS).unwrap().children.len(), 2);
        // An empty element counts against depth and elements like an open one.
        let nest = |n: usize| format!("{}<e/>{}", "<d>".repeat(n), "</d>".repeat(n));
        assert!(parse_document(&nest(31), &LIMITS).is_ok());
        assert!(matches!(
            parse_document(&nest(32), &LIMITS),
            Err(EnvelopeError::TooDeep(32))
        ));
    }

    #[test]
    fn i_nil_is_true_or_1_and_nothing_else() {
        // xsd:boolean: "true" and "1" (whitespace trimmed) are nil; "false", "0" and anything
        // else are not.
        let x = r#"<r xmlns:i="http://www.w3.org/2001/XMLSchema-instance"><a i:nil="true"/><b i:nil=" 1 "/><c i:nil="false"/><d i:nil="0"/><e i:nil="yes"/><f/></r>"#;
        let r = parse_document(x, &LIMITS).unwrap();
        let nil: Vec<bool> = r.children.iter().map(|c| c.nil).collect();
        assert_eq!(nil, [true, true, false, false, false, false]);
    }

    #[test]
    fn duplicate_children_are_reported() {
        let x = env(r#"<Op xmlns="urn:a"><x>1</x><x>2</x></Op>"#);
        let e = parse_envelope(x.as_bytes(), &LIMITS).unwrap();
        assert_eq!(e.operation.child_text("x"), Err("x".into()));
    }

    #[test]
    fn structural_problems_are_typed_errors() {
        let cases: Vec<(String, EnvelopeError)> = vec![
            (
                format!("<!DOCTYPE x [<!ENTITY a \"b\">]>{}", env("<Op/>")),
                EnvelopeError::Dtd,
            ),
            (
                format!("<s:Envelope xmlns:s=\"{SOAP_ENV_NS}\"><s:Body><A/></s:Body><s:Body><B/></s:Body></s:Envelope>"),
                EnvelopeError::BodyCount,
            ),
            (env("<A/><B/>"), EnvelopeError::BodyElementCount),
            (env(""), EnvelopeError::BodyElementCount),
            ("<Envelope><Body><A/></Body></Envelope>".into(), EnvelopeError::NotAnEnvelope),
            (env(&"<a>".repeat(40)), EnvelopeError::TooDeep(32)),
            (env(&"<a/>".repeat(300)), EnvelopeError::TooManyElements(200)),
            (
                env(&format!("<a {}/>", (0..20).map(|i| format!("x{i}=\"1\"")).collect::<Vec<_>>().join(" "))),
                EnvelopeError::TooManyAttributes(16),
            ),
            (env("<?pi x?><A/>"), EnvelopeError::ProcessingInstruction),
        ];
        for (xml, want) in cases {
            assert_eq!(
                parse_envelope(xml.as_bytes(), &LIMITS).unwrap_err(),
                want,
                "{xml}"
            );
        }
        assert_eq!(
            parse_envelope(b"\xff\xfe<x/>", &LIMITS).unwrap_err(),
            EnvelopeError::NotUtf8
        );
        for bad in [
            &env("<A>")[..60],
            "not xml at all",
            "",
            &env("<A>&ext;</A>"),
        ] {
            assert!(
                matches!(
                    parse_envelope(bad.as_bytes(), &LIMITS),
                    Err(EnvelopeError::Syntax(_)) | Err(EnvelopeError::NotAnEnvelope)
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn fault_envelope_is_well_formed_and_typed() {
        let f = Fault {
            http_status: 500,
            code: "s:Client",
            string: "Terminal could not be authenticated".into(),
            family: FaultFamily::Identity,
            detail: "AuthenticationFault",
            error_id: 406,
            operation: "RegisterTerminal".into(),
            problem_type: "Terminal could not be authenticated".into(),
            errors: vec![],
            transaction_id: None,
            transaction_state: None,
        };
        let x = f.to_envelope(Base::Evosnap);
        let root = parse_document(&x, &LIMITS).unwrap();
        let fault = &root.children[0].children[0];
        assert!(fault.is(SOAP_ENV_NS, "Fault"));
        let detail = fault.child("detail").unwrap().unwrap().children[0].clone();
        assert!(detail.is(
            "http://schemas.evosnap.com/Identity/1.0/",
            "AuthenticationFault"
        ));
        assert_eq!(detail.child_text("ErrorID").unwrap(), Some("406"));
    }

    #[test]
    fn type_name_is_the_resolved_local_name_of_i_type() {
        let x = format!(
            "<r xmlns:i=\"{XSI_NS}\" xmlns:b=\"urn:b\"><t i:type=\"b:BankcardTransactionPro\"/><u/></r>"
        );
        let root = parse_document(&x, &LIMITS).unwrap();
        let t = &root.children[0];
        assert_eq!(t.type_name(), Some("BankcardTransactionPro"));
        assert_eq!(
            t.xsi_type,
            Some((Some("urn:b".into()), "BankcardTransactionPro".into()))
        );
        assert_eq!(root.children[1].type_name(), None);
    }

    #[test]
    fn a_long_syntax_message_is_cut_on_a_character_boundary_within_the_bound() {
        // Two-byte characters from an odd offset: the bound falls inside one.
        let long = format!("x{}", "é".repeat(MAX_MESSAGE_BYTES));
        let EnvelopeError::Syntax(m) = syntax(&long) else {
            panic!("not a syntax error")
        };
        assert_eq!(m.len(), MAX_MESSAGE_BYTES - 1, "{m}");
        assert!(long.starts_with(&m));
        // At the bound exactly: kept whole.
        let exact = "y".repeat(MAX_MESSAGE_BYTES);
        assert!(matches!(syntax(&exact), EnvelopeError::Syntax(m) if m == exact));
    }

    #[test]
    fn a_namespace_uri_of_exactly_the_bound_is_read_and_one_byte_more_is_refused() {
        let uri = |n: usize| format!("urn:{}", "x".repeat(n - 4));
        let doc = |u: &str| format!("<r xmlns=\"{u}\"><c/></r>");
        let at = uri(MAX_NAMESPACE_BYTES);
        let text = doc(&at);
        let root = parse_document(&text, &LIMITS).unwrap();
        assert_eq!(root.children[0].ns.as_deref(), Some(at.as_str()));
        assert!(matches!(
            parse_document(&doc(&uri(MAX_NAMESPACE_BYTES + 1)), &LIMITS),
            Err(EnvelopeError::NamespaceTooLong(MAX_NAMESPACE_BYTES))
        ));
    }

    #[test]
    fn only_a_transactions_fault_carries_batch_and_transaction_members() {
        let fault = |family| Fault {
            http_status: 500,
            code: "s:Client",
            string: "declined".into(),
            family,
            detail: "CWSTransactionFailedFault",
            error_id: 9999,
            operation: "Authorize".into(),
            problem_type: "declined".into(),
            errors: vec![],
            transaction_id: Some("ABC".into()),
            transaction_state: Some("Declined".into()),
        };
        let members = |f: Fault| -> Vec<String> {
            let text = f.to_envelope(Base::Evosnap);
            let root = parse_document(&text, &LIMITS).unwrap();
            let fault = &root.children[0].children[0];
            let detail = &fault.child("detail").unwrap().unwrap().children[0];
            detail.children.iter().map(|c| c.name.to_string()).collect()
        };
        assert_eq!(
            members(fault(FaultFamily::Transactions)),
            [
                "BatchId",
                "ErrorID",
                "HelpURL",
                "Operation",
                "ProblemType",
                "TransactionId",
                "TransactionState"
            ]
        );
        for family in [FaultFamily::Identity, FaultFamily::ServiceInformation] {
            assert_eq!(
                members(fault(family)),
                ["ErrorID", "HelpURL", "Operation", "ProblemType"]
            );
        }
    }

    #[test]
    fn names_and_texts_are_borrowed_from_the_request_unless_unescaped() {
        let src = "<a xmlns:i=\"http://www.w3.org/2001/XMLSchema-instance\" i:type=\"T\">\
                   <b>plain</b><c>x &amp; y</c><d><![CDATA[<raw>]]></d><e>p<!-- -->q</e></a>";
        let root = parse_document(src, &LIMITS).unwrap();
        let is_borrowed = |c: &Cow<str>| matches!(c, Cow::Borrowed(_));
        assert!(is_borrowed(&root.name));
        assert!(is_borrowed(&root.xsi_type.as_ref().unwrap().1));
        let [b, c, d, e] = &root.children[..] else {
            panic!("four children: {root:?}")
        };
        assert!(is_borrowed(&b.name) && is_borrowed(&b.text) && b.text == "plain");
        // An entity is unescaped into a copy; CDATA is taken as it is.
        assert!(!is_borrowed(&c.text) && c.text == "x & y");
        assert!(is_borrowed(&d.text) && d.text == "<raw>");
        // Text on both sides of a comment is joined into a copy.
        assert!(!is_borrowed(&e.text) && e.text == "pq");
        // Indentation between children stays the first piece, borrowed.
        let indented = parse_document("<a>\n  <b>1</b>\n  <c/>\n</a>", &LIMITS).unwrap();
        assert!(is_borrowed(&indented.text) && indented.text == "\n  ");
        let mixed = parse_document("<a> <!-- --> x <!-- --> </a>", &LIMITS).unwrap();
        assert_eq!(mixed.text, "  x  ");
        // Other Unicode whitespace is text to keep, whatever readers trim later.
        let nbsp = parse_document("<a>\t<!-- -->\u{a0}<!-- -->\r\n</a>", &LIMITS).unwrap();
        assert_eq!(nbsp.text, "\t\u{a0}\r\n");
        let owned = root.clone().into_owned();
        assert_eq!(owned, root);
    }

    #[test]
    fn a_part_outside_the_source_or_past_its_end_is_copied() {
        let src = "<a>text</a>";
        let inside = &src.as_bytes()[3..7];
        assert!(matches!(borrowed(src, inside), Ok(Cow::Borrowed("text"))));
        let elsewhere = String::from("text");
        assert!(matches!(borrowed(src, elsewhere.as_bytes()), Ok(Cow::Owned(s)) if s == "text"));
        // Starts inside, ends past the end: not a slice of `src`.
        let wider = "<a>text</a>!!";
        let tail = &wider.as_bytes()[9..13];
        assert!(matches!(borrowed(&wider[..11], tail), Ok(Cow::Owned(s)) if s == "a>!!"));
        assert_eq!(borrowed(src, b"\xff"), Err(EnvelopeError::NotUtf8));
    }

    #[test]
    fn wipe_empties_every_text_and_drops_the_children() {
        let mut root =
            parse_document("<a>x<b>4761739001010010</b><c><d>y</d></c></a>", &LIMITS).unwrap();
        let mut inner = root.children[1].clone();
        wipe(&mut root);
        assert!(root.text.is_empty() && root.children.is_empty());
        wipe(&mut inner);
        assert!(inner.text.is_empty() && inner.children.is_empty());
    }
}
