//! A session's data items as the cache reads them: the classes whose meaning it knows, which
//! item identifies the user, and how a change merges into the stored items. The session rules
//! and the stores share these, so both apply a change the same way.

use crate::dsc::{parse_integer, DataItem};

pub mod class {
    pub const EXPIRY: &str = "com.tivoli.am.eb.expiry";
    pub const INACTIVITY_TIMEOUT: &str = "com.tivoli.am.webseal.inactivity-timeout";
    pub const LAST_ACCESS: &str = "com.tivoli.am.eb.last-access";
    pub const USER_NAME: &str = "com.tivoli.am.eb.user-name";
    pub const SESSION_KEY_CLASS: &str = "com.tivoli.am.sms.concurrent-session-key-class";
    pub const SESSION_KEY_INSTANCE: &str = "com.tivoli.am.sms.concurrent-session-key-instance";
}

/// The value of the first item of this class, whatever its instance.
pub fn item_value<'a>(items: &'a [DataItem], data_class: &str) -> Option<&'a str> {
    items.iter().find(|i| i.data_class == data_class)?.value.as_deref()
}

/// That value as a number (WebSEAL writes times in hex).
pub fn item_number(items: &[DataItem], data_class: &str) -> Option<i64> {
    item_value(items, data_class).and_then(parse_integer)
}

/// The value identifying the user for concurrent-session counting: the item named by the
/// concurrent-session-key items, by default `com.tivoli.am.eb.user-name`/`sms`.
pub fn user_of(items: &[DataItem]) -> Option<String> {
    let (key_class, key_instance) = user_key_item(items);
    items
        .iter()
        .find(|i| i.data_class == key_class && i.instance == key_instance)?
        .value
        .clone()
        .filter(|v| !v.is_empty())
}

/// The class and instance of the item that identifies the user (see [`user_of`]).
pub fn user_key_item(items: &[DataItem]) -> (&str, &str) {
    (
        item_value(items, class::SESSION_KEY_CLASS).unwrap_or(class::USER_NAME),
        item_value(items, class::SESSION_KEY_INSTANCE).unwrap_or("sms"),
    )
}

/// Whether a change of these items can move the session's lifetime or name another item as
/// the user's key. Only such a change, or one of the user's key item itself, needs the session
/// read and its lifetime and user worked out again; any other only updates items.
pub fn reshapes(changes: &[DataItem]) -> bool {
    changes.iter().any(|c| {
        matches!(
            c.data_class.as_ref(),
            class::EXPIRY | class::INACTIVITY_TIMEOUT | class::SESSION_KEY_CLASS | class::SESSION_KEY_INSTANCE
        )
    })
}

/// Whether any of `changes` is the item `(class, instance)`.
pub fn names_item(changes: &[DataItem], (class, instance): (&str, &str)) -> bool {
    changes.iter().any(|c| c.data_class == class && c.instance == instance)
}

/// Upserts `changes` into `items`: an item with the same class and instance is replaced in
/// place (keeping its first-stored position), a new one goes to the end.
pub fn merge(items: &mut Vec<DataItem>, changes: Vec<DataItem>) {
    for change in changes {
        match items
            .iter_mut()
            .find(|i| i.data_class == change.data_class && i.instance == change.instance)
        {
            Some(existing) => existing.value = change.value,
            None => items.push(change),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(c: &str, i: &str, v: &str) -> DataItem {
        DataItem {
            data_class: c.to_string().into(),
            instance: i.to_string().into(),
            value: Some(v.into()),
        }
    }

    #[test]
    fn merge_keeps_order_and_appends_new_items() {
        let mut items = vec![item("a", "sms", "1"), item("b", "webseal", "2")];
        merge(
            &mut items,
            vec![
                DataItem {
                    data_class: "a".into(),
                    instance: "sms".into(),
                    value: None,
                },
                item("c", "sms", "3"),
                item("b", "sms", "other instance"),
            ],
        );
        let names: Vec<_> = items
            .iter()
            .map(|i| (i.data_class.as_ref(), i.instance.as_ref()))
            .collect();
        assert_eq!(names, [("a", "sms"), ("b", "webseal"), ("c", "sms"), ("b", "sms")]);
        assert_eq!(items[0].value, None);
    }

    #[test]
    fn the_user_follows_the_concurrent_session_key_items() {
        let plain = vec![item(class::USER_NAME, "sms", "alice")];
        assert_eq!(user_of(&plain).as_deref(), Some("alice"));
        let redirected = vec![
            item(class::USER_NAME, "sms", "alice"),
            item("custom.uid", "webseal", "u-17"),
            item(class::SESSION_KEY_CLASS, "sms", "custom.uid"),
            item(class::SESSION_KEY_INSTANCE, "sms", "webseal"),
        ];
        assert_eq!(user_of(&redirected).as_deref(), Some("u-17"));
        assert_eq!(user_of(&[item(class::USER_NAME, "sms", "")]), None);
    }

    #[test]
    fn lifetime_and_key_names_reshape_a_session_other_items_do_not() {
        assert!(!reshapes(&[
            item(class::LAST_ACCESS, "sms", "0x1"),
            item("x", "webseal", "y")
        ]));
        for c in [
            class::EXPIRY,
            class::INACTIVITY_TIMEOUT,
            class::SESSION_KEY_CLASS,
            class::SESSION_KEY_INSTANCE,
        ] {
            assert!(reshapes(&[item("x", "webseal", "y"), item(c, "other", "1")]), "{c}");
        }
        let changes = [item(class::USER_NAME, "sms", "bob")];
        assert!(names_item(&changes, (class::USER_NAME, "sms")));
        assert!(!names_item(&changes, (class::USER_NAME, "webseal")));
    }
}
