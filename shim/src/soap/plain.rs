//! The plain form of a request envelope, read by one scan of its bytes.
//!
//! WebSEAL writes every request the same way: an XML declaration, then elements whose only
//! attributes are namespace declarations and `xsi:nil`, and text with no comment, CDATA
//! section, or reference other than XML's five predefined entities. quick-xml reads that at
//! some 350 instructions an event: a third of what the shim runs for a changeSession, two
//! thirds for a createSession (bench/README.md). This reader takes that form and nothing
//! else. At anything beyond it, it steps aside (`None`) and quick-xml reads the body from the
//! start, so every error, and every envelope unusual in any way, is quick-xml's to read. Its
//! tree is built through the same `Tree`, so the rules of names, namespaces and limits are
//! the same code; a unit test and the fuzz target hold the two readers to one answer.

use std::borrow::Cow;

use super::{Element, Nil, Tree};

/// The declarations this reader takes at the start of a body; another steps aside.
const DECLARATIONS: [&str; 4] = [
    r#"<?xml version="1.0" encoding="UTF-8"?>"#,
    r#"<?xml version="1.0" encoding="utf-8"?>"#,
    r#"<?xml version="1.0"?>"#,
    // WebSEAL's long poll (getUpdates) begins with this one.
    "<?xml version='1.0' encoding='utf-8' ?>",
];

/// The attributes per element this reader takes (duplicates are looked for among them).
const ATTRIBUTES_TAKEN: usize = 8;

/// The operation of a body in the plain form; `None` when the body is not in it.
pub(super) fn read(text: &str) -> Option<Element<'_>> {
    let bytes = text.as_bytes();
    let mut pos = DECLARATIONS
        .iter()
        .find(|d| text.starts_with(*d))
        .map_or(0, |d| d.len());
    let mut tree = Tree::new();
    // The names of the open elements, which their end tags must repeat.
    let mut open: Vec<&str> = Vec::with_capacity(8);
    loop {
        let tag = next_tag(bytes, pos);
        if tag > pos {
            let piece = &text[pos..tag];
            if open.is_empty() {
                // Outside the document element: whitespace only.
                if !piece.bytes().all(is_space) {
                    return None;
                }
            } else {
                tree.text(character_data(piece)?);
            }
        }
        if tag == bytes.len() {
            break;
        }
        pos = tag + 1;
        match *bytes.get(pos)? {
            b'/' => {
                // The end tag must repeat the name of the innermost open element.
                let name = open.pop()?;
                let end = pos + 1 + name.len();
                if bytes.get(pos + 1..end) != Some(name.as_bytes()) || bytes.get(end) != Some(&b'>') {
                    return None;
                }
                pos = end + 1;
                tree.close();
            }
            b'!' | b'?' => return None,
            _ => {
                tree.begin().ok()?;
                let name = &text[pos..pos + name_len(bytes, pos)?];
                pos += name.len();
                let (nil, is_empty) = attributes(text, &mut pos, &mut tree)?;
                tree.open(name, nil, is_empty).ok()?;
                if !is_empty {
                    open.push(name);
                }
            }
        }
    }
    if !open.is_empty() {
        return None;
    }
    tree.finish().ok()
}

/// Reads the attributes of a start tag, from `pos` through the tag's end, into the tree: the
/// element's nil, and whether it is empty (`/>`).
fn attributes<'a>(text: &'a str, pos: &mut usize, tree: &mut Tree<'a>) -> Option<(Nil<'a>, bool)> {
    let bytes = text.as_bytes();
    let mut nil = None;
    let mut keys: [&str; ATTRIBUTES_TAKEN] = [""; ATTRIBUTES_TAKEN];
    let mut taken = 0;
    loop {
        let spaced = skip_space(bytes, pos);
        match *bytes.get(*pos)? {
            b'>' => {
                *pos += 1;
                return Some((nil, false));
            }
            b'/' if bytes.get(*pos + 1) == Some(&b'>') => {
                *pos += 2;
                return Some((nil, true));
            }
            _ if !spaced => return None,
            _ => {
                let key = &text[*pos..*pos + name_len(bytes, *pos)?];
                *pos += key.len();
                if taken == ATTRIBUTES_TAKEN || keys[..taken].contains(&key) {
                    return None;
                }
                keys[taken] = key;
                taken += 1;
                let quote = *bytes.get(*pos + 1)?;
                if bytes[*pos] != b'=' || !matches!(quote, b'"' | b'\'') {
                    return None;
                }
                let start = *pos + 2;
                let value = &text[start..start + memchr::memchr(quote, &bytes[start..])?];
                if memchr::memchr3(b'<', b'>', b'&', value.as_bytes()).is_some() {
                    return None;
                }
                *pos = start + value.len() + 1;
                tree.attribute(key, || Ok(Cow::Borrowed(value)), &mut nil).ok()?;
            }
        }
    }
}

/// The length of the name at `pos`: `part` or `prefix:part`, each a letter or `_` followed
/// by letters, digits, `_`, `-` or `.`. A name of any other shape steps aside.
fn name_len(bytes: &[u8], pos: usize) -> Option<usize> {
    let part = |from: usize| -> Option<usize> {
        if NAME_BYTES[*bytes.get(from)? as usize] != NAME_START {
            return None;
        }
        let mut end = from + 1;
        while bytes.get(end).is_some_and(|&b| NAME_BYTES[b as usize] != 0) {
            end += 1;
        }
        Some(end - from)
    };
    let first = part(pos)?;
    match bytes.get(pos + first) {
        Some(b':') => Some(first + 1 + part(pos + first + 1)?),
        _ => Some(first),
    }
}

/// What each byte may be in a name: `NAME_START` anywhere, `NAME_PART` after the first byte,
/// 0 not at all. A table, because names are most of the bytes this reader looks at one by one.
const NAME_BYTES: [u8; 256] = {
    let mut table = [0u8; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        table[b] = if c.is_ascii_alphabetic() || c == b'_' {
            NAME_START
        } else if c.is_ascii_digit() || c == b'-' || c == b'.' {
            NAME_PART
        } else {
            0
        };
        b += 1;
    }
    table
};
const NAME_START: u8 = 1;
const NAME_PART: u8 = 2;

/// Character data as the tree holds it: the piece itself, or a copy with XML's five
/// predefined entities resolved. Any other reference steps aside.
fn character_data(piece: &str) -> Option<Cow<'_, str>> {
    let Some(mut at) = memchr::memchr(b'&', piece.as_bytes()) else {
        return Some(Cow::Borrowed(piece));
    };
    let mut out = String::with_capacity(piece.len());
    let mut rest = piece;
    loop {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        // The longest of the five names has four letters.
        let end = after.bytes().take(5).position(|b| b == b';')?;
        out.push(match &after[..end] {
            "lt" => '<',
            "gt" => '>',
            "amp" => '&',
            "apos" => '\'',
            "quot" => '"',
            _ => return None,
        });
        rest = &after[end + 1..];
        match memchr::memchr(b'&', rest.as_bytes()) {
            Some(next) => at = next,
            None => {
                out.push_str(rest);
                return Some(Cow::Owned(out));
            }
        }
    }
}

/// Where the next `<` from `pos` is, or the end. Most text between tags is a few bytes (or
/// none), which a look at each finds sooner than a vectorised search is set up; a credential's
/// thousands go to the vectorised search.
fn next_tag(bytes: &[u8], pos: usize) -> usize {
    let near = bytes.len().min(pos + 32);
    match bytes[pos..near].iter().position(|&b| b == b'<') {
        Some(i) => pos + i,
        None => memchr::memchr(b'<', &bytes[near..]).map_or(bytes.len(), |i| near + i),
    }
}

/// Moves `pos` past whitespace; whether there was any.
fn skip_space(bytes: &[u8], pos: &mut usize) -> bool {
    let from = *pos;
    while bytes.get(*pos).copied().is_some_and(is_space) {
        *pos += 1;
    }
    *pos > from
}

/// XML's whitespace (not Rust's, which adds the form feed).
fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

#[cfg(test)]
mod tests {
    use super::super::{read_by_parser, read_operation, read_plain, ENVELOPE_NS, XSI_NS};

    const OP_NS: &str = "http://sms.am.tivoli.com";

    /// Our own request fixtures (the fuzz target's seeds).
    fn seeds() -> Vec<(String, Vec<u8>)> {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/seeds/envelope");
        let mut seeds: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|entry| {
                let path = entry.unwrap().path();
                (path.display().to_string(), std::fs::read(&path).unwrap())
            })
            .collect();
        seeds.sort();
        seeds.push(("indented".into(), indented().into_bytes()));
        seeds.push(("long poll".into(), long_poll().into_bytes()));
        seeds
    }

    /// A getUpdates as WebSEAL's long poll writes it: another declaration, a nil holding
    /// whitespace.
    fn long_poll() -> String {
        format!(
            "<?xml version='1.0' encoding='utf-8' ?>\n<S:Envelope xmlns:S=\"{ENVELOPE_NS}\" \
             xmlns:xsi=\"{XSI_NS}\">\n  <S:Body>\n    <ns1:getUpdates xmlns:ns1=\"{OP_NS}\">\n      \
             <ns1:replica>web-1</ns1:replica>\n      <ns1:replicaSet xsi:nil=\"true\">\n      \
             </ns1:replicaSet>\n      <ns1:responseBy>60</ns1:responseBy>\n    </ns1:getUpdates>\n  \
             </S:Body>\n</S:Envelope>\n"
        )
    }

    /// A getSession as WebSEAL indents it, with prefixes of its own choosing.
    fn indented() -> String {
        format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<ns0:Envelope xmlns:ns0=\"{ENVELOPE_NS}\" \
             xmlns:ns1=\"{OP_NS}\" xmlns:xsi=\"{XSI_NS}\">\n  <ns0:Body>\n    <ns1:getSession>\n      \
             <ns1:replica>web&amp;1</ns1:replica>\n      <ns1:sessionID>a+b/c=</ns1:sessionID>\n      \
             <ns1:ssoSource xsi:nil=\"true\" />\n    </ns1:getSession>\n  </ns0:Body>\n</ns0:Envelope>\n"
        )
    }

    #[test]
    fn webseal_requests_are_read_plain_as_the_parser_reads_them() {
        let mut plain = 0;
        for (name, body) in seeds() {
            let parsed = read_by_parser(&body);
            match read_plain(&body) {
                Some(op) => {
                    assert_eq!(Ok(op), parsed, "{name}");
                    plain += 1;
                }
                // Only the seeds that are refused, or carry what WebSEAL does not write (character
                // references, CDATA), go to the parser.
                None => {
                    let text = String::from_utf8_lossy(&body);
                    assert!(
                        parsed.is_err() || text.contains("&#") || text.contains("<![CDATA["),
                        "{name} was not read plain"
                    );
                }
            }
        }
        assert!(plain >= 16, "{plain} seeds read plain");
        let indented = indented();
        let op = read_plain(indented.as_bytes()).unwrap();
        assert_eq!(op.child("replica").unwrap().text, "web&1");
        assert!(op.child("ssoSource").unwrap().nil);
        let long_poll = long_poll();
        let op = read_plain(long_poll.as_bytes()).unwrap();
        assert!(op.child("replicaSet").unwrap().nil);
        assert_eq!(op.child("responseBy").unwrap().text, "60");
    }

    #[test]
    fn anything_beyond_the_plain_form_goes_to_the_parser() {
        let envelope = |inner: &str| {
            format!(
                r#"<?xml version="1.0"?><S:Envelope xmlns:S="{ENVELOPE_NS}" xmlns:xsi="{XSI_NS}"><S:Body><a:op xmlns:a="{OP_NS}">{inner}</a:op></S:Body></S:Envelope>"#
            )
        };
        let beyond = [
            envelope("<!-- a comment --><a:v>1</a:v>"),
            envelope("<a:v><![CDATA[1]]></a:v>"),
            envelope("<a:v>&#49;</a:v>"),
            envelope("<a:v>&e;</a:v>"),
            envelope("<a:v>a & b</a:v>"),
            envelope("<?pi x?>"),
            envelope("<a:v b=1/>"),
            envelope(r#"<a:v b = "1"/>"#),
            envelope(r#"<a:v b="1" b="2"/>"#),
            envelope(r#"<a:v b="1"c="2"/>"#),
            envelope(r#"<a:v b="&amp;"/>"#),
            envelope(r#"<a:v b=">"/>"#),
            envelope(&format!(
                "<a:v{}/>",
                (0..9).map(|i| format!(r#" b{i}="1""#)).collect::<String>()
            )),
            envelope("<a:v></a:w>"),
            envelope("<a:v>1</a:v >"),
            envelope("<a:été/>"),
            envelope("<a:b:c/>"),
            envelope("<a:v>"),
            envelope("<q:v/>"),
            format!("\u{feff}{}", envelope("")),
            format!(" {}", envelope("")),
            format!("{}x", envelope("")),
            envelope("").replace(r#"<?xml version="1.0"?>"#, r#"<?xml version="1.1"?>"#),
            format!(r#"<!DOCTYPE x><S:Envelope xmlns:S="{ENVELOPE_NS}"/>"#),
        ];
        for body in beyond {
            assert_eq!(read_plain(body.as_bytes()), None, "{body}");
            assert_eq!(
                read_operation(body.as_bytes()),
                read_by_parser(body.as_bytes()),
                "{body}"
            );
        }
    }

    /// The two readers on 5 000 mutations of each fixture: wherever the plain reader reads
    /// a body, the parser reads the same tree from it. The fuzz target does the same at large.
    #[test]
    fn agrees_with_the_parser_on_mutated_requests() {
        const PIECES: [&str; 24] = [
            "<",
            ">",
            "/",
            "\"",
            "'",
            "=",
            " ",
            "\n",
            ":",
            ";",
            "&",
            "&amp;",
            "&lt;",
            "é",
            "<a>",
            "</a>",
            "<a/>",
            "ns1:",
            "xmlns:a=\"urn:a\"",
            " xsi:nil=\"true\"",
            " xmlns=\"\"",
            "<!--",
            "]]>",
            "<?",
        ];
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = move |below: usize| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % below.max(1) as u64) as usize
        };
        let (mut tried, mut plain) = (0, 0);
        for (_, seed) in seeds() {
            for _ in 0..5_000 {
                let mut body = seed.clone();
                for _ in 0..1 + next(3) {
                    let at = next(body.len() + 1);
                    match next(3) {
                        0 => {
                            let end = (at + 1 + next(12)).min(body.len());
                            body.drain(at.min(end)..end);
                        }
                        1 => {
                            let piece = PIECES[next(PIECES.len())].as_bytes();
                            body.splice(at..at, piece.iter().copied());
                        }
                        _ => {
                            let from = next(body.len());
                            let copy = body[from..(from + next(40)).min(body.len())].to_vec();
                            body.splice(at..at, copy);
                        }
                    }
                }
                tried += 1;
                if let Some(op) = read_plain(&body) {
                    plain += 1;
                    assert_eq!(Ok(op), read_by_parser(&body), "{}", String::from_utf8_lossy(&body));
                }
            }
        }
        // Most mutations break the plain form; enough must keep it for this to test anything.
        assert!(plain * 40 > tried, "{plain} of {tried} read plain");
    }
}
