//! SOAP 1.1 envelopes: reading a request into a small element tree, writing answers in the
//! shape WebSEAL accepts, and faults. Pure: no I/O, so it can be fuzzed on its own.
//!
//! Reading resolves names by namespace URI, never by prefix (with a scope of declarations of
//! its own), and refuses DOCTYPE declarations outright: no entity other than XML's five
//! predefined ones and character references is ever expanded, and nothing is ever fetched.
//! The plain form WebSEAL writes is read by a scan of its own (`plain`); anything else by
//! quick-xml's plain reader (one pass over an element's attributes instead of three).

use std::borrow::Cow;

use quick_xml::events::{BytesStart, Event};
use quick_xml::Reader;

mod plain;

pub const ENVELOPE_NS: &str = "http://schemas.xmlsoap.org/soap/envelope/";
pub const XSI_NS: &str = "http://www.w3.org/2001/XMLSchema-instance";

/// Deeper nesting than any DSC message needs is refused rather than followed.
const MAX_DEPTH: usize = 16;
/// Bounds the tree built from one body; the byte limit of the listener bounds it first.
const MAX_ELEMENTS: usize = 100_000;
/// DSC messages carry at most a handful of attributes per element. Bounded because checking
/// an element's attributes for duplicates and resolving their prefixes costs the square of
/// their number.
const MAX_ATTRIBUTES: usize = 64;
/// Bounds the namespace bindings in scope, which every element name is resolved against.
const MAX_NAMESPACE_DECLARATIONS: usize = 256;

/// One element of the operation inside `Body`: its namespace and local name, whether it
/// carried `xsi:nil="true"`, its text (its own character data before its first child: a DSC
/// element holds text or children, and what follows a child is layout) and children.
/// Names, text and namespaces borrow from the request body; they are copied only where a
/// character or entity reference had to be resolved.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Element<'a> {
    pub namespace: Option<Cow<'a, str>>,
    pub name: Cow<'a, str>,
    pub nil: bool,
    pub text: Cow<'a, str>,
    pub children: Vec<Element<'a>>,
}

impl<'a> Element<'a> {
    /// The first child with this local name.
    pub fn child(&self, name: &str) -> Option<&Element<'a>> {
        self.children.iter().find(|c| c.name == name)
    }

    /// Every child with this local name, in document order.
    pub fn children_named<'s>(&'s self, name: &'s str) -> impl Iterator<Item = &'s Element<'a>> {
        self.children.iter().filter(move |c| c.name == name)
    }

    /// The same tree, owning its names and text (for a tree kept past its body).
    pub fn into_owned(self) -> Element<'static> {
        Element {
            namespace: self.namespace.map(|n| Cow::Owned(n.into_owned())),
            name: Cow::Owned(self.name.into_owned()),
            nil: self.nil,
            text: Cow::Owned(self.text.into_owned()),
            children: self.children.into_iter().map(Element::into_owned).collect(),
        }
    }

    fn push_text(&mut self, piece: Cow<'a, str>) {
        if self.text.is_empty() {
            self.text = piece;
        } else {
            self.text.to_mut().push_str(&piece);
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EnvelopeError {
    #[error("the request body is not valid UTF-8")]
    NotUtf8,
    #[error("the request body is not well-formed XML: {0}")]
    Malformed(String),
    #[error("DOCTYPE declarations are not accepted")]
    Doctype,
    #[error("the document element is not a SOAP 1.1 Envelope (namespace {ENVELOPE_NS})")]
    NotAnEnvelope,
    #[error("the SOAP Envelope has no Body")]
    NoBody,
    #[error("the SOAP Body holds no operation element")]
    NoOperation,
    #[error("the message nests elements deeper than {MAX_DEPTH} levels")]
    TooDeep,
    #[error("the message holds more than {MAX_ELEMENTS} elements")]
    TooManyElements,
    #[error("an element carries more than {MAX_ATTRIBUTES} attributes")]
    TooManyAttributes,
    #[error("the message declares more than {MAX_NAMESPACE_DECLARATIONS} namespaces")]
    TooManyNamespaces,
    #[error("the entity reference &{0}; is not one of XML's predefined entities")]
    UnknownEntity(String),
}

/// The namespace every `xml:` name is in, bound without a declaration.
const XML_NS: &str = "http://www.w3.org/XML/1998/namespace";

/// The namespace declarations in scope, innermost last, each with the depth of the element
/// that made it. A DSC message makes a handful, so a look back from the end beats a map; and
/// the declared URIs borrow from the body, so resolving a name copies nothing.
#[derive(Default)]
struct Scope<'a> {
    bindings: Vec<(usize, &'a str, Cow<'a, str>)>,
}

impl<'a> Scope<'a> {
    /// The namespace of `prefix` ("" for the default namespace): `Ok(None)` for none.
    fn resolve(&self, prefix: &str) -> Result<Option<Cow<'a, str>>, EnvelopeError> {
        match self.bindings.iter().rev().find(|(_, p, _)| *p == prefix) {
            Some((_, _, uri)) if uri.is_empty() => Ok(None),
            Some((_, _, uri)) => Ok(Some(uri.clone())),
            None => match prefix {
                "" => Ok(None),
                "xml" => Ok(Some(Cow::Borrowed(XML_NS))),
                other => Err(EnvelopeError::Malformed(format!(
                    "the prefix {} is not declared",
                    truncate(other, 40)
                ))),
            },
        }
    }

    /// Forgets the declarations made at `depth` or deeper: their element has closed.
    fn leave(&mut self, depth: usize) {
        while self.bindings.last().is_some_and(|(d, _, _)| *d >= depth) {
            self.bindings.pop();
        }
    }
}

/// The tree of one envelope as it is read, whichever reader drives it: the path of open
/// elements, the operation once it has closed, the namespace scope and the limits. Both
/// readers build through it, so the rules of names, namespaces and limits are written once.
#[derive(Default)]
struct Tree<'a> {
    /// The path of open elements from the document element down; `stack[i]` is being built.
    stack: Vec<Element<'a>>,
    operation: Option<Element<'a>>,
    seen_root: bool,
    body_depth: Option<usize>,
    count: usize,
    /// Open elements of the whole document, also past the operation (`stack` stops there).
    depth: usize,
    declarations: usize,
    scope: Scope<'a>,
}

/// An `xsi:nil`-like attribute as read: its prefix and value (resolved when its element opens).
type Nil<'a> = Option<(&'a str, Cow<'a, str>)>;

impl<'a> Tree<'a> {
    fn new() -> Self {
        Tree {
            // Envelope, Body, the operation, an item and its value: a DSC message's depth.
            stack: Vec::with_capacity(6),
            ..Tree::default()
        }
    }

    /// Before an element's attributes are read: the limits of the document.
    fn begin(&mut self) -> Result<(), EnvelopeError> {
        if self.seen_root && self.depth == 0 {
            return Err(EnvelopeError::Malformed(
                "an element follows the document element".into(),
            ));
        }
        self.count += 1;
        if self.count > MAX_ELEMENTS {
            return Err(EnvelopeError::TooManyElements);
        }
        if self.depth >= MAX_DEPTH {
            return Err(EnvelopeError::TooDeep);
        }
        Ok(())
    }

    /// One attribute of the element being opened: a namespace declaration goes into scope, a
    /// `nil` is kept in `nil` until the element's name is resolved; others do not matter here.
    fn attribute(
        &mut self,
        key: &'a str,
        value: impl Fn() -> Result<Cow<'a, str>, EnvelopeError>,
        nil: &mut Nil<'a>,
    ) -> Result<(), EnvelopeError> {
        let declared = match split_name(key) {
            None if key == "xmlns" => Some(""),
            Some(("xmlns", prefix)) => Some(prefix),
            Some((prefix, "nil")) => {
                *nil = Some((prefix, value()?));
                None
            }
            _ => None,
        };
        if let Some(prefix) = declared {
            let uri = value()?;
            if prefix == "xmlns" || (!prefix.is_empty() && uri.is_empty()) {
                return Err(EnvelopeError::Malformed(format!(
                    "the namespace declaration {} is not allowed",
                    truncate(key, 40)
                )));
            }
            self.declarations += 1;
            if self.declarations > MAX_NAMESPACE_DECLARATIONS {
                return Err(EnvelopeError::TooManyNamespaces);
            }
            self.scope.bindings.push((self.depth, prefix, uri));
        }
        Ok(())
    }

    /// Opens the element named `qualified`, its attributes read; an empty one closes at once.
    fn open(&mut self, qualified: &'a str, nil: Nil<'a>, is_empty: bool) -> Result<(), EnvelopeError> {
        let (prefix, name) = split_name(qualified).unwrap_or(("", qualified));
        if prefix == "xmlns" {
            return Err(EnvelopeError::Malformed(
                "an element is named with the prefix xmlns".into(),
            ));
        }
        let namespace = self.scope.resolve(prefix)?;
        // Resolved before an empty element's own declarations go out of scope.
        let nil = nil.is_some_and(|(nil_prefix, value)| {
            self.scope.resolve(nil_prefix).ok().flatten().as_deref() == Some(XSI_NS)
                && matches!(value.trim(), "true" | "1")
        });
        let element_depth = self.depth;
        if is_empty {
            self.scope.leave(element_depth);
        } else {
            self.depth += 1;
        }
        if self.operation.is_some() {
            return Ok(());
        }
        let element = Element {
            namespace,
            name: Cow::Borrowed(name),
            nil,
            text: Cow::Borrowed(""),
            children: Vec::new(),
        };
        let in_envelope = element.namespace.as_deref() == Some(ENVELOPE_NS);
        if !self.seen_root {
            self.seen_root = true;
            if element.name != "Envelope" || !in_envelope {
                return Err(EnvelopeError::NotAnEnvelope);
            }
        } else if self.stack.len() == 1 && self.body_depth.is_none() && element.name == "Body" && in_envelope {
            self.body_depth = Some(1);
        }
        self.stack.push(element);
        if is_empty {
            close_element(&mut self.stack, self.body_depth, &mut self.operation);
        }
        Ok(())
    }

    /// The innermost open element ends.
    fn close(&mut self) {
        self.depth = self.depth.saturating_sub(1);
        self.scope.leave(self.depth);
        if self.operation.is_none() {
            close_element(&mut self.stack, self.body_depth, &mut self.operation);
        }
    }

    /// Character data of the innermost open element, up to its first child. A DSC element
    /// holds text or children, never both: what follows a child is layout (WebSEAL indents
    /// its requests), and copying it into a string of each item's own cost a sixth of the
    /// reading of an indented createSession.
    fn text(&mut self, piece: Cow<'a, str>) {
        if let Some(top) = self.stack.last_mut().filter(|top| top.children.is_empty()) {
            top.push_text(piece);
        }
    }

    /// The operation, once the document has ended.
    fn finish(self) -> Result<Element<'a>, EnvelopeError> {
        if !self.seen_root {
            return Err(EnvelopeError::Malformed("the body holds no XML element".into()));
        }
        if self.depth > 0 {
            return Err(EnvelopeError::Malformed(
                "the document ends before all its elements are closed".into(),
            ));
        }
        if self.body_depth.is_none() {
            return Err(EnvelopeError::NoBody);
        }
        self.operation.ok_or(EnvelopeError::NoOperation)
    }
}

/// Reads a SOAP 1.1 envelope and returns the first element inside its `Body`.
///
/// Two readers share the work: the plain one (`plain`), a scan for the plain form every
/// WebSEAL request takes, and quick-xml for everything else. The plain reader steps aside at
/// anything beyond that form, so every error is quick-xml's.
pub fn read_operation(body: &[u8]) -> Result<Element<'_>, EnvelopeError> {
    let text = std::str::from_utf8(body).map_err(|_| EnvelopeError::NotUtf8)?;
    match plain::read(text) {
        Some(operation) => Ok(operation),
        None => read_parsed(text),
    }
}

/// `read_operation` by the plain reader alone: `None` where it steps aside. Public so that
/// the fuzz target can hold the two readers to one answer.
pub fn read_plain(body: &[u8]) -> Option<Element<'_>> {
    plain::read(std::str::from_utf8(body).ok()?)
}

/// `read_operation` by quick-xml alone (see `read_plain`).
pub fn read_by_parser(body: &[u8]) -> Result<Element<'_>, EnvelopeError> {
    read_parsed(std::str::from_utf8(body).map_err(|_| EnvelopeError::NotUtf8)?)
}

fn read_parsed(text: &str) -> Result<Element<'_>, EnvelopeError> {
    let mut reader = Reader::from_str(text);
    reader.config_mut().expand_empty_elements = false;
    reader.config_mut().check_end_names = true;
    let mut tree = Tree::new();
    loop {
        let event = reader
            .read_event()
            .map_err(|e| EnvelopeError::Malformed(e.to_string()))?;
        match event {
            Event::DocType(_) => return Err(EnvelopeError::Doctype),
            Event::Start(ref start) | Event::Empty(ref start) => {
                tree.begin()?;
                let nil = read_attributes(text, start, &mut tree)?;
                let qualified = borrowed_from(text, start.name().as_ref())
                    .ok_or_else(|| EnvelopeError::Malformed("an element name is not part of the body".into()))?;
                tree.open(qualified, nil, matches!(event, Event::Empty(_)))?;
            }
            Event::End(_) => tree.close(),
            Event::Text(t) => tree.text(text_piece(text, &t)?),
            Event::CData(c) => tree.text(text_piece(text, &c)?),
            Event::GeneralRef(r) => {
                let resolved = match r.resolve_char_ref() {
                    Ok(Some(ch)) => ch.to_string(),
                    Ok(None) => {
                        let name = r.decode().map_err(|e| EnvelopeError::Malformed(e.to_string()))?;
                        quick_xml::escape::resolve_predefined_entity(&name)
                            .ok_or_else(|| EnvelopeError::UnknownEntity(truncate(&name, 40)))?
                            .to_string()
                    }
                    Err(e) => return Err(EnvelopeError::Malformed(e.to_string())),
                };
                tree.text(Cow::Owned(resolved));
            }
            Event::Eof => break,
            _ => {}
        }
    }
    tree.finish()
}

/// The attributes of a start tag into the tree (see `Tree::attribute`); its nil, if any.
fn read_attributes<'a>(body: &'a str, start: &BytesStart, tree: &mut Tree<'a>) -> Result<Nil<'a>, EnvelopeError> {
    // Most elements of a DSC message carry none: this spares them any pass over nothing.
    if start.attributes_raw().iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    // Counted before the full check, which compares every attribute with every other.
    if start.attributes().with_checks(false).take(MAX_ATTRIBUTES + 1).count() > MAX_ATTRIBUTES {
        return Err(EnvelopeError::TooManyAttributes);
    }
    let mut nil = None;
    for attr in start.attributes() {
        let attr = attr.map_err(|e| EnvelopeError::Malformed(e.to_string()))?;
        let key = borrowed_from(body, attr.key.as_ref())
            .ok_or_else(|| EnvelopeError::Malformed("an attribute name is not part of the body".into()))?;
        let value = || -> Result<Cow<'a, str>, EnvelopeError> {
            match borrowed_from(body, &attr.value) {
                Some(raw) if !raw.contains('&') => Ok(Cow::Borrowed(raw)),
                _ => attr
                    .unescape_value()
                    .map(|v| Cow::Owned(v.into_owned()))
                    .map_err(|e| EnvelopeError::Malformed(e.to_string())),
            }
        };
        tree.attribute(key, value, &mut nil)?;
    }
    Ok(nil)
}

/// Character data as the piece of the body it is; copied only if it were not part of it.
fn text_piece<'a>(body: &'a str, raw: &[u8]) -> Result<Cow<'a, str>, EnvelopeError> {
    match borrowed_from(body, raw) {
        Some(piece) => Ok(Cow::Borrowed(piece)),
        None => String::from_utf8(raw.to_vec())
            .map(Cow::Owned)
            .map_err(|_| EnvelopeError::NotUtf8),
    }
}

/// `part` as the piece of `body` it is, when it lies inside it: the reader's events borrow
/// from the body, so the tree can too instead of copying every name and text.
fn borrowed_from<'a>(body: &'a str, part: &[u8]) -> Option<&'a str> {
    let start = (part.as_ptr() as usize).checked_sub(body.as_ptr() as usize)?;
    body.get(start..start.checked_add(part.len())?)
}

/// `prefix:local` apart. A look at each byte: names are short, and `str::split_once` costs
/// more to set up than that.
fn split_name(name: &str) -> Option<(&str, &str)> {
    let colon = name.bytes().position(|b| b == b':')?;
    Some((&name[..colon], &name[colon + 1..]))
}

/// Pops the innermost open element into its parent; the first element closed directly inside
/// `Body` is the operation.
fn close_element<'a>(stack: &mut Vec<Element<'a>>, body_depth: Option<usize>, operation: &mut Option<Element<'a>>) {
    let Some(done) = stack.pop() else { return };
    match (body_depth, stack.len()) {
        (Some(depth), len) if len == depth + 1 => {
            // `done` sits directly in Body.
            *operation = Some(done);
        }
        _ => {
            // Only the subtree below Body is kept; Header and Envelope children are dropped.
            let inside_operation = body_depth.is_some_and(|d| stack.len() > d + 1);
            if let (true, Some(parent)) = (inside_operation, stack.last_mut()) {
                if parent.children.is_empty() {
                    // A DSC item has four children; the operation a few more.
                    parent.children.reserve(4);
                }
                parent.children.push(done);
            }
        }
    }
}

fn truncate(s: &str, max: usize) -> String {
    s.chars().take(max).collect()
}

/// The bytes `escape_into` replaces.
const ESCAPED: [bool; 256] = {
    let mut table = [false; 256];
    table[b'&' as usize] = true;
    table[b'<' as usize] = true;
    table[b'>' as usize] = true;
    table[b'"' as usize] = true;
    table[b'\r' as usize] = true;
    table
};

/// Escapes text for element content and attribute values.
pub fn escape_into(out: &mut String, text: &str) {
    // Nearly every value (credentials in base64, names, numbers) needs no escaping. A short
    // one is looked at byte by byte; for a long one, two vectorised searches find that out far
    // faster, but their setup costs more than the look at a short value's few bytes.
    let bytes = text.as_bytes();
    let clean = if bytes.len() < 64 {
        // One table look per byte, and no early exit: the loop has no branch to mispredict.
        !bytes.iter().fold(false, |found, &b| found | ESCAPED[b as usize])
    } else {
        memchr::memchr3(b'&', b'<', b'>', bytes).is_none() && memchr::memchr2(b'"', b'\r', bytes).is_none()
    };
    if clean {
        out.push_str(text);
        return;
    }
    let mut last = 0;
    for (i, b) in text.bytes().enumerate() {
        let rep = match b {
            b'&' => "&amp;",
            b'<' => "&lt;",
            b'>' => "&gt;",
            b'"' => "&quot;",
            b'\r' => "&#13;",
            _ => continue,
        };
        out.push_str(&text[last..i]);
        out.push_str(rep);
        last = i + 1;
    }
    out.push_str(&text[last..]);
}

const ENVELOPE_OPEN: &str = concat!(
    r#"<?xml version="1.0" encoding="UTF-8"?>"#,
    "\n",
    r#"<SOAP-ENV:Envelope xmlns:SOAP-ENV="http://schemas.xmlsoap.org/soap/envelope/" xmlns:xsd="http://www.w3.org/2001/XMLSchema" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">"#,
    "<SOAP-ENV:Body>"
);
const ENVELOPE_CLOSE: &str = "</SOAP-ENV:Body></SOAP-ENV:Envelope>\n";

/// Writes a message (an answer, or a request for the client) in the captured shape: the `SOAP-ENV` envelope declaring `xsd` and `xsi`,
/// and the response element with prefix `ns1` declaring `namespace`. WebSEAL refuses other
/// prefixes, so child elements written by `body` use `ns1:` too.
pub struct MessageWriter {
    out: String,
}

impl MessageWriter {
    pub fn new(response_element: &str, namespace: &str) -> Self {
        let mut out = String::with_capacity(1024);
        out.push_str(ENVELOPE_OPEN);
        out.push_str("<ns1:");
        out.push_str(response_element);
        out.push_str(" xmlns:ns1=\"");
        out.push_str(namespace);
        out.push_str("\">");
        Self { out }
    }

    /// The answer to `operation` in the shape DSC answers have: `<ns1:{operation}Response>`
    /// around `<ns1:{operation}Return>`, whose content the caller writes.
    pub fn answer(operation: &str, namespace: &str) -> Self {
        Self::answer_sized(operation, namespace, 0)
    }

    /// `answer`, with room made at once for `content` more bytes of content than the
    /// envelope, so that a large answer is never copied into a larger buffer.
    pub fn answer_sized(operation: &str, namespace: &str, content: usize) -> Self {
        let mut out = String::with_capacity(1024 + content);
        for piece in [
            ENVELOPE_OPEN,
            "<ns1:",
            operation,
            "Response xmlns:ns1=\"",
            namespace,
            "\"><ns1:",
            operation,
            "Return>",
        ] {
            out.push_str(piece);
        }
        Self { out }
    }

    /// Closes what `answer` opened.
    pub fn finish_answer(mut self, operation: &str) -> String {
        for piece in [
            "</ns1:",
            operation,
            "Return></ns1:",
            operation,
            "Response>",
            ENVELOPE_CLOSE,
        ] {
            self.out.push_str(piece);
        }
        self.out
    }

    pub fn open(&mut self, name: &str) {
        self.out.push_str("<ns1:");
        self.out.push_str(name);
        self.out.push('>');
    }

    pub fn close(&mut self, name: &str) {
        self.out.push_str("</ns1:");
        self.out.push_str(name);
        self.out.push('>');
    }

    /// `<ns1:name>text</ns1:name>`, escaped.
    pub fn field(&mut self, name: &str, text: &str) {
        self.open(name);
        escape_into(&mut self.out, text);
        self.close(name);
    }

    /// A value that may be nil: `<ns1:name xsi:nil="true"/>` keeps nil apart from empty.
    pub fn optional_field(&mut self, name: &str, text: Option<&str>) {
        match text {
            Some(t) => self.field(name, t),
            None => {
                self.out.push_str("<ns1:");
                self.out.push_str(name);
                self.out.push_str(" xsi:nil=\"true\"/>");
            }
        }
    }

    /// One session item, `<ns1:data>` with its value (nil kept apart from empty), data class
    /// and instance, escaped.
    pub fn data_item(&mut self, value: ItemValue<'_>, class: NameParts<'_>, instance: NameParts<'_>) {
        write_item_value(&mut self.out, value);
        write_item_names(&mut self.out, class, instance);
    }

    /// Items written by `write_item_value` and `write_item_names` beforehand.
    pub fn items(&mut self, markup: &str) {
        self.out.push_str(markup);
    }

    pub fn number(&mut self, name: &str, n: impl itoa::Integer) {
        self.open(name);
        self.out.push_str(itoa::Buffer::new().format(n));
        self.close(name);
    }

    pub fn finish(mut self, response_element: &str) -> String {
        self.close(response_element);
        self.out.push_str(ENVELOPE_CLOSE);
        self.out
    }
}

/// About the bytes of markup around one item's value and names in an answer (110 with the
/// `ns1:` prefixes), for sizing an answer's buffer.
pub const ITEM_MARKUP: usize = 128;

/// The start of one session item: `<ns1:data>` and its value (nil kept apart from empty). The
/// markup goes in whole pieces: a login's 27 items are written on every getSession.
pub fn write_item_value(out: &mut String, value: ItemValue<'_>) {
    match value {
        ItemValue::Text(v) => {
            out.push_str("<ns1:data><ns1:value>");
            escape_into(out, v);
            out.push_str("</ns1:value>");
        }
        ItemValue::Base64(bytes) => {
            // The base64 alphabet needs no escaping.
            out.push_str("<ns1:data><ns1:value>");
            base64_simd::STANDARD.encode_append(bytes, out);
            out.push_str("</ns1:value>");
        }
        ItemValue::Nil => out.push_str("<ns1:data><ns1:value xsi:nil=\"true\"/>"),
    }
}

/// The rest of one session item: its data class and instance, escaped, and the item's end.
pub fn write_item_names(out: &mut String, class: NameParts<'_>, instance: NameParts<'_>) {
    out.push_str("<ns1:dataClass>");
    out.push_str(class.known);
    escape_into(out, class.rest);
    out.push_str("</ns1:dataClass><ns1:instance>");
    out.push_str(instance.known);
    escape_into(out, instance.rest);
    out.push_str("</ns1:instance></ns1:data>");
}

/// The value of a data item as an answer writes it: nil, text, or bytes that go out in base64
/// (a credential the Redis store keeps decoded).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ItemValue<'a> {
    Nil,
    Text(&'a str),
    Base64(&'a [u8]),
}

impl<'a> ItemValue<'a> {
    pub fn of(value: Option<&'a str>) -> Self {
        value.map_or(ItemValue::Nil, ItemValue::Text)
    }
}

/// A data class or instance as an answer writes it: a name of the cache's own (a class or
/// instance WebSEAL sends every time, or the start of one), which needs no escaping, then the
/// rest, text from a request or a record, which is escaped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NameParts<'a> {
    pub known: &'static str,
    pub rest: &'a str,
}

impl<'a> NameParts<'a> {
    /// One of the cache's own names (`dsc::KNOWN_CLASSES`, `KNOWN_INSTANCES`): never escaped.
    pub const fn known(name: &'static str) -> Self {
        Self { known: name, rest: "" }
    }

    /// A name from a request or a record, escaped when written.
    pub const fn text(name: &'a str) -> Self {
        Self { known: "", rest: name }
    }

    /// Whether it spells `name`.
    pub fn is(&self, name: &str) -> bool {
        name.len() == self.known.len() + self.rest.len() && name.starts_with(self.known) && name.ends_with(self.rest)
    }

    /// The name as an item keeps it: shared when it is one of the cache's own.
    pub fn to_item_name(self) -> crate::dsc::ItemName {
        match (self.known, self.rest) {
            (known, "") => crate::dsc::ItemName::Borrowed(known),
            ("", rest) => crate::dsc::item_name(rest),
            (known, rest) => crate::dsc::ItemName::Owned([known, rest].concat()),
        }
    }
}

/// Who a fault blames: the request (`Client`) or the shim and its store (`Server`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultCode {
    Client,
    Server,
}

/// A SOAP 1.1 fault whose `faultstring` names the problem.
pub fn fault(code: FaultCode, message: &str) -> String {
    let mut out = String::with_capacity(512);
    out.push_str(ENVELOPE_OPEN);
    out.push_str("<SOAP-ENV:Fault><faultcode>SOAP-ENV:");
    out.push_str(match code {
        FaultCode::Client => "Client",
        FaultCode::Server => "Server",
    });
    out.push_str("</faultcode><faultstring>");
    escape_into(&mut out, message);
    out.push_str("</faultstring></SOAP-ENV:Fault>");
    out.push_str(ENVELOPE_CLOSE);
    out
}

/// Reads a fault back (for the DSC client): `(faultcode, faultstring)` when the body is one.
pub fn read_fault(body: &[u8]) -> Option<(String, String)> {
    let op = read_operation(body).ok()?;
    if op.name != "Fault" || op.namespace.as_deref() != Some(ENVELOPE_NS) {
        return None;
    }
    let code = op
        .child("faultcode")
        .map(|e| e.text.trim().to_string())
        .unwrap_or_default();
    let string = op.child("faultstring").map(|e| e.text.to_string()).unwrap_or_default();
    Some((code, string))
}

#[cfg(test)]
mod tests {
    use super::*;

    const OP_NS: &str = "http://sms.am.tivoli.com";

    fn envelope(inner: &str) -> String {
        format!(
            r#"<?xml version="1.0" encoding="UTF-8"?><S:Envelope xmlns:S="{ENVELOPE_NS}" xmlns:xsi="{XSI_NS}"><S:Body>{inner}</S:Body></S:Envelope>"#
        )
    }

    #[test]
    fn reads_operation_by_namespace_not_prefix() {
        let body = envelope(&format!(
            r#"<x:ping xmlns:x="{OP_NS}"><x:something>0</x:something></x:ping>"#
        ));
        let op = read_operation(body.as_bytes()).unwrap();
        assert_eq!(op.name, "ping");
        assert_eq!(op.namespace.as_deref(), Some(OP_NS));
        assert_eq!(op.child("something").unwrap().text, "0");
    }

    #[test]
    fn prefixes_declared_on_the_envelope_work() {
        let body = format!(
            r#"<ns0:Envelope xmlns:ns0="{ENVELOPE_NS}" xmlns:ns1="{OP_NS}" xmlns:xsi="{XSI_NS}"><ns0:Body><ns1:getSession><ns1:ssoSource xsi:nil="true" /><ns1:replica>r</ns1:replica></ns1:getSession></ns0:Body></ns0:Envelope>"#
        );
        let op = read_operation(body.as_bytes()).unwrap();
        assert_eq!(op.namespace.as_deref(), Some(OP_NS));
        assert!(op.child("ssoSource").unwrap().nil);
        assert!(!op.child("replica").unwrap().nil);
    }

    #[test]
    fn declarations_hold_where_they_are_made() {
        // A default namespace, undeclared again inside; a nil whose prefix the element itself
        // declares; the implicit xml prefix.
        let body = envelope(&format!(
            r#"<op xmlns="{OP_NS}"><v i:nil="1" xmlns:i="{XSI_NS}"/><w xml:lang="en">x</w><u xmlns=""/></op>"#
        ));
        let op = read_operation(body.as_bytes()).unwrap();
        assert_eq!(op.namespace.as_deref(), Some(OP_NS));
        assert!(op.child("v").unwrap().nil);
        assert_eq!(op.child("w").unwrap().namespace.as_deref(), Some(OP_NS));
        assert_eq!(op.child("u").unwrap().namespace, None);
        // A prefix declared on one element is gone after it closes, empty or not.
        for sibling in [r#"<a:x xmlns:b="urn:b"/>"#, r#"<a:x xmlns:b="urn:b"></a:x>"#] {
            let body = envelope(&format!(r#"<a:op xmlns:a="{OP_NS}">{sibling}<b:y/></a:op>"#));
            assert!(
                matches!(read_operation(body.as_bytes()), Err(EnvelopeError::Malformed(m)) if m.contains("prefix b")),
                "{sibling}"
            );
        }
        // A nil in another namespace is no nil; a URI may carry references.
        let body = envelope(&format!(
            r#"<a:op xmlns:a="{OP_NS}" xmlns:n="urn:other"><a:v n:nil="true"/><a:w xmlns:c="http://sms.am.tivoli&#46;com"/></a:op>"#
        ));
        let op = read_operation(body.as_bytes()).unwrap();
        assert!(!op.child("v").unwrap().nil);
        for refused in [
            r#"<a:op xmlns:a="urn:a" xmlns:e=""/>"#,
            r#"<a:op xmlns:a="urn:a" xmlns:xmlns="urn:x"/>"#,
            r#"<a:op xmlns:a="urn:a" b="1" b="2"/>"#,
            r#"<xmlns:op/>"#,
        ] {
            assert!(
                matches!(
                    read_operation(envelope(refused).as_bytes()),
                    Err(EnvelopeError::Malformed(_))
                ),
                "{refused}"
            );
        }
    }

    #[test]
    fn nil_empty_and_entities_are_kept_apart() {
        let body = envelope(&format!(
            r#"<a:op xmlns:a="{OP_NS}"><a:v xsi:nil="true"/><a:v/><a:v></a:v><a:v>x &amp; &lt;y&gt; &#65;<![CDATA[<z>]]></a:v></a:op>"#
        ));
        let op = read_operation(body.as_bytes()).unwrap();
        let v: Vec<_> = op.children_named("v").collect();
        assert!(v[0].nil && v[0].text.is_empty());
        assert!(!v[1].nil && v[1].text.is_empty());
        assert!(!v[2].nil && v[2].text.is_empty());
        assert_eq!(v[3].text, "x & <y> A<z>");
    }

    #[test]
    fn an_element_keeps_its_text_up_to_its_first_child() {
        let body = envelope(&format!(
            "<a:op xmlns:a=\"{OP_NS}\">\n  <a:v> x </a:v>\n  <a:w/>\n  tail &amp; more</a:op>"
        ));
        let op = read_operation(body.as_bytes()).unwrap();
        assert_eq!(op.text, "\n  ");
        assert_eq!(op.child("v").unwrap().text, " x ");
        assert_eq!(op.children.len(), 2);
    }

    #[test]
    fn hostile_and_broken_inputs_are_named() {
        let doctype = format!(
            r#"<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]><S:Envelope xmlns:S="{ENVELOPE_NS}"><S:Body><a:op xmlns:a="{OP_NS}">&e;</a:op></S:Body></S:Envelope>"#
        );
        assert_eq!(read_operation(doctype.as_bytes()), Err(EnvelopeError::Doctype));
        let unknown_entity = envelope(&format!(r#"<a:op xmlns:a="{OP_NS}">&e;</a:op>"#));
        assert_eq!(
            read_operation(unknown_entity.as_bytes()),
            Err(EnvelopeError::UnknownEntity("e".into()))
        );
        assert_eq!(read_operation(b"\xff\xfe<a/>"), Err(EnvelopeError::NotUtf8));
        assert_eq!(
            read_operation(b"not xml at all"),
            Err(EnvelopeError::Malformed("the body holds no XML element".into()))
        );
        let mismatched = envelope(&format!(r#"<a:op xmlns:a="{OP_NS}"><a:x></a:op>"#));
        assert!(matches!(
            read_operation(mismatched.as_bytes()),
            Err(EnvelopeError::Malformed(_))
        ));
        assert_eq!(read_operation(b"<Envelope/>"), Err(EnvelopeError::NotAnEnvelope));
        let no_body = format!(r#"<S:Envelope xmlns:S="{ENVELOPE_NS}"/>"#);
        assert_eq!(read_operation(no_body.as_bytes()), Err(EnvelopeError::NoBody));
        assert_eq!(read_operation(envelope("").as_bytes()), Err(EnvelopeError::NoOperation));
        let deep = envelope(&format!("{}{}", "<a>".repeat(40), "</a>".repeat(40)));
        assert_eq!(read_operation(deep.as_bytes()), Err(EnvelopeError::TooDeep));
        let undeclared = envelope("<q:op/>");
        assert!(matches!(
            read_operation(undeclared.as_bytes()),
            Err(EnvelopeError::Malformed(_))
        ));
    }

    #[test]
    fn unclosed_documents_and_second_roots_are_malformed() {
        let ping = format!(r#"<a:ping xmlns:a="{OP_NS}"/>"#);
        let unclosed = format!(r#"<S:Envelope xmlns:S="{ENVELOPE_NS}"><S:Body>{ping}"#);
        assert!(
            matches!(read_operation(unclosed.as_bytes()), Err(EnvelopeError::Malformed(m)) if m.contains("closed")),
            "a truncated envelope must not be served"
        );
        let second_root = format!(
            r#"<S:Envelope xmlns:S="{ENVELOPE_NS}"/><S:Other xmlns:S="{ENVELOPE_NS}"><S:Body>{ping}</S:Body></S:Other>"#
        );
        assert!(matches!(
            read_operation(second_root.as_bytes()),
            Err(EnvelopeError::Malformed(m)) if m.contains("follows the document element")
        ));
        let trailing = format!("{}<x/>", envelope(&ping));
        assert!(matches!(
            read_operation(trailing.as_bytes()),
            Err(EnvelopeError::Malformed(_))
        ));
        assert!(read_operation(envelope(&ping).as_bytes()).is_ok());
    }

    #[test]
    fn limits_hold_past_the_operation_too() {
        let ping = format!(r#"<a:ping xmlns:a="{OP_NS}"/>"#);
        let deep_after = envelope(&format!("{ping}{}{}", "<a>".repeat(40), "</a>".repeat(40)));
        assert_eq!(read_operation(deep_after.as_bytes()), Err(EnvelopeError::TooDeep));
        let many_after = envelope(&format!("{ping}{}", "<a/>".repeat(MAX_ELEMENTS)));
        assert_eq!(
            read_operation(many_after.as_bytes()),
            Err(EnvelopeError::TooManyElements)
        );
    }

    /// Regression: 50,000 attributes on one element (500 KB, under the default body limit)
    /// took 17 s in a debug build, because every attribute was checked against every other.
    #[test]
    fn many_attributes_and_namespaces_are_refused_at_once() {
        let attrs: String = (0..50_000).map(|i| format!(" a{i}=\"\"")).collect();
        let body = envelope(&format!(r#"<a:ping xmlns:a="{OP_NS}"{attrs}/>"#));
        let started = std::time::Instant::now();
        assert_eq!(read_operation(body.as_bytes()), Err(EnvelopeError::TooManyAttributes));
        assert!(
            started.elapsed() < std::time::Duration::from_secs(1),
            "{:?}",
            started.elapsed()
        );
        let attrs: String = (0..MAX_ATTRIBUTES).map(|i| format!(" xmlns:p{i}=\"u\"")).collect();
        let nested = format!("<a{attrs}>").repeat(8) + &"</a>".repeat(8);
        let body = envelope(&format!(r#"<a:ping xmlns:a="{OP_NS}">{nested}</a:ping>"#));
        assert_eq!(read_operation(body.as_bytes()), Err(EnvelopeError::TooManyNamespaces));
        let attrs: String = (0..MAX_ATTRIBUTES - 2).map(|i| format!(" p{i}=\"\"")).collect();
        let body = envelope(&format!(r#"<a:ping xmlns:a="{OP_NS}"{attrs}/>"#));
        assert!(read_operation(body.as_bytes()).is_ok());
    }

    #[test]
    fn written_answers_read_back() {
        let mut w = MessageWriter::new("pingResponse", OP_NS);
        w.field("pingReturn", "a<&>\"b");
        w.optional_field("nothing", None);
        w.optional_field("empty", Some(""));
        let xml = w.finish("pingResponse");
        assert!(xml.contains(r#"<ns1:pingResponse xmlns:ns1="http://sms.am.tivoli.com">"#));
        let op = read_operation(xml.as_bytes()).unwrap();
        assert_eq!(op.child("pingReturn").unwrap().text, "a<&>\"b");
        assert!(op.child("nothing").unwrap().nil);
        let empty = op.child("empty").unwrap();
        assert!(!empty.nil && empty.text.is_empty());
    }

    #[test]
    fn faults_read_back() {
        let xml = fault(FaultCode::Client, "bad <thing>");
        assert_eq!(
            read_fault(xml.as_bytes()),
            Some(("SOAP-ENV:Client".into(), "bad <thing>".into()))
        );
    }

    #[test]
    fn escapes_markup_and_carriage_returns_and_passes_plain_text_whole() {
        let mut out = String::new();
        escape_into(&mut out, "a&b<c>d\"e\rf'g");
        assert_eq!(out, "a&amp;b&lt;c&gt;d&quot;e&#13;f'g");
        let plain = "QUJD".repeat(512);
        let mut out = String::from("x");
        escape_into(&mut out, &plain);
        assert_eq!(out, format!("x{plain}"));
        for (text, escaped) in [("\r", "&#13;"), ("\"", "&quot;"), ("", ""), ("é", "é")] {
            let mut out = String::new();
            escape_into(&mut out, text);
            assert_eq!(out, escaped);
        }
        // Short and long text are looked at in different ways: both escape.
        for len in [1, 63, 64, 200] {
            for (special, escaped) in [
                ("&", "&amp;"),
                ("<", "&lt;"),
                (">", "&gt;"),
                ("\"", "&quot;"),
                ("\r", "&#13;"),
            ] {
                let before = "a".repeat(len - 1);
                let mut out = String::new();
                escape_into(&mut out, &format!("{before}{special}"));
                assert_eq!(out, format!("{before}{escaped}"), "{len} bytes");
            }
        }
    }
}
