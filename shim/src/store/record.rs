//! The binary form of a session's items as the Redis store keeps them: compact, order kept,
//! nil kept apart from empty.
//!
//! Layout: one format byte (1), then per item `class`, `instance` as length-prefixed bytes, a
//! tag (0 = nil, 1 = value) and, for a value, its length-prefixed bytes. Lengths are LEB128.

use crate::dsc::DataItem;

const FORMAT: u8 = 1;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RecordError {
    #[error("unknown record format {0}")]
    UnknownFormat(u8),
    #[error("the record ends in the middle of an item")]
    Truncated,
    #[error("the record holds text that is not UTF-8")]
    NotUtf8,
}

pub fn encode_items(items: &[DataItem]) -> Vec<u8> {
    let size: usize = items
        .iter()
        .map(|i| i.data_class.len() + i.instance.len() + i.value.as_ref().map_or(0, String::len) + 8)
        .sum();
    let mut out = Vec::with_capacity(size + 1);
    out.push(FORMAT);
    for item in items {
        put_bytes(&mut out, item.data_class.as_bytes());
        put_bytes(&mut out, item.instance.as_bytes());
        match &item.value {
            None => out.push(0),
            Some(v) => {
                out.push(1);
                put_bytes(&mut out, v.as_bytes());
            }
        }
    }
    out
}

pub fn decode_items(bytes: &[u8]) -> Result<Vec<DataItem>, RecordError> {
    let (&format, mut rest) = bytes.split_first().ok_or(RecordError::Truncated)?;
    if format != FORMAT {
        return Err(RecordError::UnknownFormat(format));
    }
    let mut items = Vec::new();
    while !rest.is_empty() {
        let data_class = take_string(&mut rest)?;
        let instance = take_string(&mut rest)?;
        let (&tag, after) = rest.split_first().ok_or(RecordError::Truncated)?;
        rest = after;
        let value = match tag {
            0 => None,
            1 => Some(take_string(&mut rest)?),
            _ => return Err(RecordError::Truncated),
        };
        items.push(DataItem {
            data_class,
            instance,
            value,
        });
    }
    Ok(items)
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    let mut n = bytes.len();
    loop {
        let low = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(low);
            break;
        }
        out.push(low | 0x80);
    }
    out.extend_from_slice(bytes);
}

fn take_string(rest: &mut &[u8]) -> Result<String, RecordError> {
    let mut len: usize = 0;
    let mut shift = 0;
    loop {
        let (&b, after) = rest.split_first().ok_or(RecordError::Truncated)?;
        *rest = after;
        if shift > 56 {
            return Err(RecordError::Truncated);
        }
        len |= ((b & 0x7f) as usize) << shift;
        shift += 7;
        if b & 0x80 == 0 {
            break;
        }
    }
    if rest.len() < len {
        return Err(RecordError::Truncated);
    }
    let (text, after) = rest.split_at(len);
    *rest = after;
    String::from_utf8(text.to_vec()).map_err(|_| RecordError::NotUtf8)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(c: &str, v: Option<&str>) -> DataItem {
        DataItem {
            data_class: c.into(),
            instance: "sms".into(),
            value: v.map(Into::into),
        }
    }

    #[test]
    fn round_trips_order_nil_and_empty() {
        let long = "é".repeat(300);
        let items = vec![
            item("a", None),
            item("b", Some("")),
            item("c", Some(&long)),
            item("", Some("x")),
        ];
        assert_eq!(decode_items(&encode_items(&items)).unwrap(), items);
        assert_eq!(decode_items(&encode_items(&[])).unwrap(), vec![]);
    }

    #[test]
    fn refuses_damaged_records() {
        let bytes = encode_items(&[item("class", Some("value"))]);
        for cut in (0..bytes.len()).filter(|&c| c != 1) {
            assert!(decode_items(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        assert_eq!(decode_items(&[9]), Err(RecordError::UnknownFormat(9)));
    }
}
