//! The binary form of a session's items as the Redis store keeps them: compact, order kept,
//! nil kept apart from empty, every value returned byte for byte as it was sent.
//!
//! Format 2 (written): one format byte, then per item
//! - the data class: a varint tag; `0` = the name follows (length-prefixed), `1..=3` = one of
//!   the three `com.tivoli.am.{eb,sms,webseal}.` prefixes then the rest of the name,
//!   `16 + i` = entry `i` of [`KNOWN_CLASSES`] (names IBM's WebSEAL sends every time);
//! - the instance: one byte; `0` = the name follows, `1` = `sms`, `2` = `webseal`;
//! - the value: one byte; `0` = nil, `1` = text follows, `2` = base64 text stored decoded
//!   (only when encoding the bytes again gives exactly the text sent: credentials are
//!   base64 of binary and shrink by a quarter).
//!
//! Lengths are LEB128 varints. Format 1 (plain names and values) is still read, so records
//! written by an earlier shim stay readable during a rolling upgrade.
//!
//! A record is read item by item without copying (`stored_items`): into `DataItem`s for the
//! session rules, or straight into a getSession answer's markup (`ItemsMarkup`).

use crate::dsc::{known_class, DataItem, KNOWN_CLASSES, KNOWN_INSTANCES};
use std::sync::OnceLock;

use crate::soap::{write_item_names, write_item_value, ItemValue, NameParts, ITEM_MARKUP};

const FORMAT_PLAIN: u8 = 1;
const FORMAT_COMPACT: u8 = 2;

const CLASS_PREFIXES: [&str; 3] = ["com.tivoli.am.eb.", "com.tivoli.am.sms.", "com.tivoli.am.webseal."];
const WELL_KNOWN_BASE: usize = 16;
/// Shorter base64 values are not worth the round-trip check.
const MIN_BASE64: usize = 64;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RecordError {
    #[error("unknown record format {0}")]
    UnknownFormat(u8),
    #[error("the record ends in the middle of an item")]
    Truncated,
    #[error("the record holds text that is not UTF-8")]
    NotUtf8,
    #[error("the record names an unknown data class or value kind {0}")]
    UnknownTag(u64),
}

pub fn encode_items(items: &[DataItem]) -> Vec<u8> {
    let size: usize = items.iter().map(|i| i.value.as_ref().map_or(0, String::len) + 8).sum();
    let mut out = Vec::with_capacity(size + 1);
    out.push(FORMAT_COMPACT);
    for item in items {
        put_class(&mut out, &item.data_class);
        match KNOWN_INSTANCES.iter().position(|i| *i == item.instance) {
            Some(i) => out.push(i as u8 + 1),
            None => {
                out.push(0);
                put_bytes(&mut out, item.instance.as_bytes());
            }
        }
        match &item.value {
            None => out.push(0),
            Some(v) => match exact_base64(v) {
                Some(bytes) => {
                    out.push(2);
                    put_bytes(&mut out, &bytes);
                }
                None => {
                    out.push(1);
                    put_bytes(&mut out, v.as_bytes());
                }
            },
        }
    }
    out
}

fn put_class(out: &mut Vec<u8>, class: &str) {
    if let Some(i) = known_class(class) {
        put_varint(out, (WELL_KNOWN_BASE + i) as u64);
    } else if let Some((p, rest)) = CLASS_PREFIXES
        .iter()
        .enumerate()
        .find_map(|(p, prefix)| class.strip_prefix(prefix).map(|rest| (p, rest)))
    {
        put_varint(out, p as u64 + 1);
        put_bytes(out, rest.as_bytes());
    } else {
        put_varint(out, 0);
        put_bytes(out, class.as_bytes());
    }
}

/// The decoded bytes when `text` is canonical padded base64 of them.
fn exact_base64(text: &str) -> Option<Vec<u8>> {
    if text.len() < MIN_BASE64 || text.len() % 4 != 0 {
        return None;
    }
    // STANDARD decodes only canonical text (padding required, trailing bits zero), so the
    // bytes encode back to exactly `text`; the round-trip test holds it to that.
    base64_simd::STANDARD.decode_to_vec(text).ok()
}

pub fn decode_items(bytes: &[u8]) -> Result<Vec<DataItem>, RecordError> {
    // A WebSEAL login carries about 27 items.
    let mut items = Vec::with_capacity(32);
    for item in stored_items(bytes)? {
        items.push(item?.to_data_item());
    }
    Ok(items)
}

/// One item as a record holds it, borrowed from the record: what an answer writes without
/// building a `DataItem` (see `StoredItems`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoredItem<'a> {
    pub data_class: NameParts<'a>,
    pub instance: NameParts<'a>,
    pub value: ItemValue<'a>,
    /// The markup of the class and instance (`soap::write_item_names`), made once, when both
    /// are names the cache knows: so are nearly all of a WebSEAL login's.
    pub names_markup: Option<&'static str>,
}

impl StoredItem<'_> {
    pub fn to_data_item(self) -> DataItem {
        DataItem {
            data_class: self.data_class.to_item_name(),
            instance: self.instance.to_item_name(),
            value: match self.value {
                ItemValue::Nil => None,
                ItemValue::Text(t) => Some(t.to_string()),
                ItemValue::Base64(b) => Some(base64_simd::STANDARD.encode_to_string(b)),
            },
        }
    }
}

/// The items of a record in order, each read as it is asked for.
pub fn stored_items(bytes: &[u8]) -> Result<StoredItemIter<'_>, RecordError> {
    let (&format, rest) = bytes.split_first().ok_or(RecordError::Truncated)?;
    match format {
        FORMAT_PLAIN | FORMAT_COMPACT => Ok(StoredItemIter {
            rest,
            compact: format == FORMAT_COMPACT,
        }),
        other => Err(RecordError::UnknownFormat(other)),
    }
}

pub struct StoredItemIter<'a> {
    rest: &'a [u8],
    compact: bool,
}

impl<'a> Iterator for StoredItemIter<'a> {
    type Item = Result<StoredItem<'a>, RecordError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let item = if self.compact {
            take_compact_item(&mut self.rest)
        } else {
            take_plain_item(&mut self.rest)
        };
        if item.is_err() {
            // Nothing after a damaged item can be trusted to start where it seems to.
            self.rest = &[];
        }
        Some(item)
    }
}

fn take_plain_item<'a>(rest: &mut &'a [u8]) -> Result<StoredItem<'a>, RecordError> {
    let data_class = NameParts::text(take_str(rest)?);
    let instance = NameParts::text(take_str(rest)?);
    let value = match take_byte(rest)? {
        0 => ItemValue::Nil,
        1 => ItemValue::Text(take_str(rest)?),
        tag => return Err(RecordError::UnknownTag(tag.into())),
    };
    Ok(StoredItem {
        data_class,
        instance,
        value,
        names_markup: None,
    })
}

fn take_compact_item<'a>(rest: &mut &'a [u8]) -> Result<StoredItem<'a>, RecordError> {
    let (data_class, known_class) = take_class(rest)?;
    let (instance, known_instance) = match take_byte(rest)? {
        0 => (NameParts::text(take_str(rest)?), None),
        i @ 1..=2 => (NameParts::known(KNOWN_INSTANCES[i as usize - 1]), Some(i as usize - 1)),
        tag => return Err(RecordError::UnknownTag(tag.into())),
    };
    let value = match take_byte(rest)? {
        0 => ItemValue::Nil,
        1 => ItemValue::Text(take_str(rest)?),
        2 => ItemValue::Base64(take_bytes(rest)?),
        tag => return Err(RecordError::UnknownTag(tag.into())),
    };
    Ok(StoredItem {
        data_class,
        instance,
        value,
        names_markup: known_class.zip(known_instance).map(|(c, i)| known_names_markup(c, i)),
    })
}

/// `soap::write_item_names` of known class `class` and known instance `instance`, made once.
fn known_names_markup(class: usize, instance: usize) -> &'static str {
    static MARKUP: OnceLock<Vec<String>> = OnceLock::new();
    let table = MARKUP.get_or_init(|| {
        KNOWN_CLASSES
            .iter()
            .flat_map(|c| {
                KNOWN_INSTANCES.iter().map(|i| {
                    let mut out = String::new();
                    write_item_names(&mut out, NameParts::known(c), NameParts::known(i));
                    out
                })
            })
            .collect()
    });
    &table[class * KNOWN_INSTANCES.len() + instance]
}

/// A session's items written as a getSession answer carries them (`<ns1:data>` elements),
/// straight from a stored record in one pass: no `DataItem` is built for the record's items,
/// the credential is base64-encoded once, into the answer, and the markup of known names is
/// copied whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ItemsMarkup(String);

impl ItemsMarkup {
    /// The record's items with the logged `changes` (merged in order, as `items::merge` gives
    /// them) applied as `items::merge` would apply them to the decoded record: each replaces
    /// the first item of its class and instance, or follows the record's items.
    pub fn write(record: &[u8], changes: &[DataItem]) -> Result<Self, RecordError> {
        // The credential grows by a third in base64; the rest is mostly markup.
        let mut out = String::with_capacity(record.len() * 2 + 32 * ITEM_MARKUP);
        let mut applied = vec![false; changes.len()];
        for item in stored_items(record)? {
            let item = item?;
            let change = changes
                .iter()
                .enumerate()
                .position(|(n, c)| !applied[n] && item.data_class.is(&c.data_class) && item.instance.is(&c.instance));
            let value = match change {
                Some(n) => {
                    applied[n] = true;
                    ItemValue::of(changes[n].value.as_deref())
                }
                None => item.value,
            };
            write_item_value(&mut out, value);
            match item.names_markup {
                Some(names) => out.push_str(names),
                None => write_item_names(&mut out, item.data_class, item.instance),
            }
        }
        for (change, _) in changes.iter().zip(&applied).filter(|(_, applied)| !**applied) {
            write_item_value(&mut out, ItemValue::of(change.value.as_deref()));
            write_item_names(
                &mut out,
                NameParts::text(&change.data_class),
                NameParts::text(&change.instance),
            );
        }
        Ok(Self(out))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// One change as it goes into a record's change log (see `redis`): its stored bytes behind
/// their length, so that a script appends entries without reading them.
pub fn log_entry(stored: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(stored.len() + 2);
    put_bytes(&mut out, stored);
    out
}

/// The stored bytes of each change in a change log, oldest first.
pub fn log_entries(mut log: &[u8]) -> Result<Vec<&[u8]>, RecordError> {
    let mut entries = Vec::new();
    while !log.is_empty() {
        entries.push(take_bytes(&mut log)?);
    }
    Ok(entries)
}

/// The class, and its place in `KNOWN_CLASSES` when it is one.
fn take_class<'a>(rest: &mut &'a [u8]) -> Result<(NameParts<'a>, Option<usize>), RecordError> {
    let tag = take_varint(rest)?;
    match tag {
        0 => Ok((NameParts::text(take_str(rest)?), None)),
        1..=3 => Ok((
            NameParts {
                known: CLASS_PREFIXES[tag as usize - 1],
                rest: take_str(rest)?,
            },
            None,
        )),
        t => {
            let known = (t as usize)
                .checked_sub(WELL_KNOWN_BASE)
                .filter(|i| *i < KNOWN_CLASSES.len())
                .ok_or(RecordError::UnknownTag(t))?;
            Ok((NameParts::known(KNOWN_CLASSES[known]), Some(known)))
        }
    }
}

fn put_varint(out: &mut Vec<u8>, mut n: u64) {
    loop {
        let low = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(low);
            break;
        }
        out.push(low | 0x80);
    }
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

fn take_byte(rest: &mut &[u8]) -> Result<u8, RecordError> {
    let (&b, after) = rest.split_first().ok_or(RecordError::Truncated)?;
    *rest = after;
    Ok(b)
}

fn take_varint(rest: &mut &[u8]) -> Result<u64, RecordError> {
    let mut n: u64 = 0;
    for shift in (0..64).step_by(7) {
        let b = take_byte(rest)?;
        n |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Ok(n);
        }
    }
    Err(RecordError::Truncated)
}

fn take_bytes<'a>(rest: &mut &'a [u8]) -> Result<&'a [u8], RecordError> {
    let len = usize::try_from(take_varint(rest)?).map_err(|_| RecordError::Truncated)?;
    if rest.len() < len {
        return Err(RecordError::Truncated);
    }
    let (bytes, after) = rest.split_at(len);
    *rest = after;
    Ok(bytes)
}

fn take_str<'a>(rest: &mut &'a [u8]) -> Result<&'a str, RecordError> {
    std::str::from_utf8(take_bytes(rest)?).map_err(|_| RecordError::NotUtf8)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(c: &str, i: &str, v: Option<&str>) -> DataItem {
        DataItem {
            data_class: c.to_string().into(),
            instance: i.to_string().into(),
            value: v.map(Into::into),
        }
    }

    /// Base64 from another implementation than the record's.
    fn credential() -> String {
        use base64::Engine;
        let bytes: Vec<u8> = (0..1100u32).map(|i| (i * 7 + 3) as u8).collect();
        base64::engine::general_purpose::STANDARD.encode(bytes)
    }

    #[test]
    fn only_canonical_base64_is_stored_decoded() {
        let cred = credential();
        assert_eq!(exact_base64(&cred).map(|b| b.len()), Some(1100));
        let long = "A".repeat(60);
        for text in [
            format!("{long}AAB="),
            format!("{long}AB=="),
            format!("{long}AAA"),
            format!("{long}AA=A"),
            format!("{long}AA A"),
            format!("{long}AA-_"),
            cred.replace('A', "\n"),
        ] {
            assert_eq!(exact_base64(&text), None, "{text:?}");
        }
    }

    #[test]
    fn round_trips_order_nil_empty_and_every_kind_of_name() {
        let long = "é".repeat(300);
        let cred = credential();
        let items = vec![
            item("com.tivoli.am.eb.credential", "sms", Some(&cred)),
            item("com.tivoli.am.webseal.orig-auth-type", "webseal", None),
            item("com.tivoli.am.webseal.cookie-jar.stored-cookies", "webseal", Some("")),
            item("com.tivoli.am.webseal.not-in-the-table", "webseal", Some("x")),
            item("com.tivoli.am.ebx", "other-instance", Some(&long)),
            item("", "", Some("")),
            // Base64-looking text that is not canonical stays text.
            item("a", "sms", Some(&format!("{}=", &cred[..cred.len() - 1]))),
            item("b", "sms", Some(&cred.replace('A', "-"))),
            // Trailing bits set ("B" before the padding): decodes in a lax decoder, not here.
            item("c", "sms", Some(&format!("{}AAB=", "A".repeat(60)))),
            item("d", "sms", Some(&format!("{}AB==", "A".repeat(60)))),
        ];
        assert_eq!(decode_items(&encode_items(&items)).unwrap(), items);
        assert_eq!(decode_items(&encode_items(&[])).unwrap(), vec![]);
    }

    #[test]
    fn well_known_names_and_credentials_shrink() {
        let cred = credential();
        let items = vec![
            item("com.tivoli.am.eb.credential", "sms", Some(&cred)),
            item(
                "com.tivoli.am.webseal.custom-inactivity-timeout",
                "webseal",
                Some("false"),
            ),
        ];
        let sent: usize = items
            .iter()
            .map(|i| i.data_class.len() + i.instance.len() + i.value.as_ref().map_or(0, String::len))
            .sum();
        let stored = encode_items(&items).len();
        assert!(stored * 100 < sent * 76, "{stored} of {sent}");
    }

    #[test]
    fn reads_the_plain_format_of_earlier_shims() {
        // Format 1: class, instance, tag, value, all length-prefixed.
        let mut old = vec![FORMAT_PLAIN];
        for part in ["c", "sms"] {
            put_bytes(&mut old, part.as_bytes());
        }
        old.push(1);
        put_bytes(&mut old, b"v");
        put_bytes(&mut old, b"d");
        put_bytes(&mut old, b"webseal");
        old.push(0);
        assert_eq!(
            decode_items(&old).unwrap(),
            vec![item("c", "sms", Some("v")), item("d", "webseal", None)]
        );
        // An answer is written from it as from a record of this format.
        let from_items = encode_items(&decode_items(&old).unwrap());
        assert_eq!(
            ItemsMarkup::write(&old, &[]).unwrap(),
            ItemsMarkup::write(&from_items, &[]).unwrap()
        );
    }

    #[test]
    fn a_change_log_gives_back_its_entries_in_order() {
        let first = encode_items(&[item("a", "sms", Some("1"))]);
        let second = vec![7u8; 300];
        let log = [log_entry(&first), log_entry(&second), log_entry(&[])].concat();
        assert_eq!(log_entries(&log).unwrap(), vec![&first[..], &second[..], &[][..]]);
        assert_eq!(log_entries(&log[..log.len() - 2]), Err(RecordError::Truncated));
        assert_eq!(log_entries(&[]).unwrap(), Vec::<&[u8]>::new());
    }

    #[test]
    fn refuses_damaged_records() {
        let bytes = encode_items(&[item("class", "sms", Some("value"))]);
        for cut in (0..bytes.len()).filter(|&c| c != 1) {
            assert!(decode_items(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        assert_eq!(decode_items(&[9]), Err(RecordError::UnknownFormat(9)));
        assert_eq!(decode_items(&[2, 99, 1, 0]), Err(RecordError::UnknownTag(99)));
        assert_eq!(decode_items(&[2, 4, 1, 0]), Err(RecordError::UnknownTag(4)));
        for cut in (0..bytes.len()).filter(|&c| c != 1) {
            assert!(ItemsMarkup::write(&bytes[..cut], &[]).is_err(), "cut at {cut}");
        }
        assert_eq!(
            ItemsMarkup::write(&[2, 99, 1, 0], &[]),
            Err(RecordError::UnknownTag(99))
        );
    }
}
