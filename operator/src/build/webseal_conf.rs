//! WebSEAL configuration entries, written two ways from one list: as a fragment of
//! `webseald-<instance>.conf` (stanzas, with comments saying where each value comes from), and
//! as the `stanza_configuration` of IBM's `ibmvia_autoconf` YAML, which drives the management
//! REST API that Verify Access containers take their published configuration from.
//!
//! Secrets are never written: the stanza text names them in a comment, the YAML as
//! `!secret <namespace>/<name>:<key>`, which `ibmvia_autoconf` resolves itself.

use std::fmt::Write as _;

use serde_yaml::value::{Tag, TaggedValue};
use serde_yaml::{Mapping, Value};

/// A value as written, or a Secret's key that holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryValue {
    Text(String),
    Secret { secret: String, key: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    stanza: String,
    key: String,
    value: EntryValue,
    /// Comment lines written before the entry in the stanza text.
    notes: Vec<String>,
}

/// The entries of one WebSEAL fragment, in order, and comments per stanza.
#[derive(Debug, Clone, Default)]
pub struct WebSealConf {
    /// Stanza names in first-use order, each with the comment lines written under its header
    /// after its entries.
    stanzas: Vec<(String, Vec<String>)>,
    entries: Vec<Entry>,
}

impl WebSealConf {
    fn stanza_index(&mut self, stanza: &str) -> usize {
        match self.stanzas.iter().position(|(s, _)| s == stanza) {
            Some(i) => i,
            None => {
                self.stanzas.push((stanza.to_string(), Vec::new()));
                self.stanzas.len() - 1
            }
        }
    }

    /// Adds `key = value` to `stanza` (a key given twice has both values).
    pub fn set(&mut self, stanza: &str, key: &str, value: impl Into<String>) {
        self.push(stanza, key, EntryValue::Text(value.into()), Vec::new());
    }

    /// Like [`set`](Self::set), with comment lines before the entry.
    pub fn set_noted(&mut self, stanza: &str, key: &str, value: impl Into<String>, notes: &[&str]) {
        let notes = notes.iter().map(|n| n.to_string()).collect();
        self.push(stanza, key, EntryValue::Text(value.into()), notes);
    }

    /// An entry whose value is `key` of Secret `secret`.
    pub fn set_secret(&mut self, stanza: &str, entry: &str, secret: &str, key: &str) {
        let value = EntryValue::Secret {
            secret: secret.into(),
            key: key.into(),
        };
        self.push(stanza, entry, value, Vec::new());
    }

    fn push(&mut self, stanza: &str, key: &str, value: EntryValue, notes: Vec<String>) {
        self.stanza_index(stanza);
        self.entries.push(Entry {
            stanza: stanza.into(),
            key: key.into(),
            value,
            notes,
        });
    }

    /// A comment line at the end of `stanza`.
    pub fn note(&mut self, stanza: &str, line: impl Into<String>) {
        let i = self.stanza_index(stanza);
        self.stanzas[i].1.push(line.into());
    }

    /// The stanza-file fragment, after `header` (comment lines, each with its `#`).
    pub fn stanza_text(&self, header: &str) -> String {
        let mut out = header.to_string();
        for (stanza, notes) in &self.stanzas {
            let _ = writeln!(out, "\n[{stanza}]");
            for entry in self.entries.iter().filter(|e| &e.stanza == stanza) {
                for note in &entry.notes {
                    let _ = writeln!(out, "# {note}");
                }
                match &entry.value {
                    EntryValue::Text(value) => {
                        let _ = writeln!(out, "{} = {value}", entry.key);
                    }
                    EntryValue::Secret { secret, key } => {
                        let _ = writeln!(
                            out,
                            "# {}: from Secret {secret}, key {key} (never written here)",
                            entry.key
                        );
                    }
                }
            }
            for note in notes {
                let _ = writeln!(out, "# {note}");
            }
        }
        out
    }

    /// `stanza_configuration` entries for `ibmvia_autoconf`: `update` for a key set once (it
    /// adds the entry when missing), and for a key set several times a `delete` of the key
    /// followed by one `add` per value, so that applying it twice gives the same file.
    pub fn stanza_configuration(&self, namespace: &str) -> Vec<Value> {
        let mut out = Vec::new();
        let mut done: Vec<(&str, &str)> = Vec::new();
        for entry in &self.entries {
            let id = (entry.stanza.as_str(), entry.key.as_str());
            if done.contains(&id) {
                continue;
            }
            done.push(id);
            let values: Vec<&EntryValue> = self
                .entries
                .iter()
                .filter(|e| e.stanza == entry.stanza && e.key == entry.key)
                .map(|e| &e.value)
                .collect();
            let operation = |op: &str, value: Option<&EntryValue>| {
                let mut m = Mapping::new();
                m.insert("stanza".into(), entry.stanza.clone().into());
                m.insert("entry_id".into(), entry.key.clone().into());
                if let Some(value) = value {
                    m.insert("value".into(), yaml_value(value, namespace));
                }
                m.insert("operation".into(), op.into());
                Value::Mapping(m)
            };
            if let [value] = values.as_slice() {
                out.push(operation("update", Some(value)));
            } else {
                out.push(operation("delete", None));
                out.extend(values.into_iter().map(|v| operation("add", Some(v))));
            }
        }
        out
    }

    /// The entries as an `ibmvia_autoconf` document for reverse proxy `instance`, after
    /// `header` (comment lines).
    pub fn autoconf_yaml(&self, header: &str, instance: &str, namespace: &str) -> String {
        let mut proxy = Mapping::new();
        proxy.insert("name".into(), instance.into());
        proxy.insert(
            "stanza_configuration".into(),
            Value::Sequence(self.stanza_configuration(namespace)),
        );
        let mut webseal = Mapping::new();
        webseal.insert("reverse_proxy".into(), Value::Sequence(vec![Value::Mapping(proxy)]));
        let mut document = Mapping::new();
        document.insert("webseal".into(), Value::Mapping(webseal));
        let yaml = serde_yaml::to_string(&Value::Mapping(document)).expect("YAML values serialize");
        format!("{header}{yaml}")
    }
}

fn yaml_value(value: &EntryValue, namespace: &str) -> Value {
    match value {
        EntryValue::Text(text) => Value::String(text.clone()),
        EntryValue::Secret { secret, key } => Value::Tagged(Box::new(TaggedValue {
            tag: Tag::new("secret"),
            value: Value::String(format!("{namespace}/{secret}:{key}")),
        })),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> WebSealConf {
        let mut c = WebSealConf::default();
        c.set("session", "dsess-enabled", "yes");
        c.set("replica-sets", "replica-set", "default");
        c.set("replica-sets", "replica-set", "admin");
        c.set_noted(
            "dsess-cluster",
            "server",
            "9,http://shim:8443/DSess/services/DSess",
            &["one line"],
        );
        c.set_secret("dsess-cluster", "basic-auth-passwd", "cache-shim-auth", "password");
        c.note("dsess-cluster", "Plain HTTP");
        c
    }

    #[test]
    fn the_stanza_text_names_secrets_and_keeps_comments() {
        let text = sample().stanza_text("# head\n");
        assert_eq!(
            text,
            "# head\n\n[session]\ndsess-enabled = yes\n\n[replica-sets]\nreplica-set = default\nreplica-set = admin\n\n\
             [dsess-cluster]\n# one line\nserver = 9,http://shim:8443/DSess/services/DSess\n\
             # basic-auth-passwd: from Secret cache-shim-auth, key password (never written here)\n# Plain HTTP\n"
        );
    }

    #[test]
    fn autoconf_updates_single_keys_and_replaces_repeated_ones() {
        let yaml = sample().autoconf_yaml("# head\n", "default", "isam");
        assert!(yaml.starts_with("# head\nwebseal:\n"), "{yaml}");
        assert!(yaml.contains("value: !secret isam/cache-shim-auth:password"), "{yaml}");
        let parsed: Value = serde_yaml::from_str(&yaml).unwrap();
        let proxy = &parsed["webseal"]["reverse_proxy"][0];
        assert_eq!(proxy["name"], "default");
        let ops: Vec<(String, String, String)> = proxy["stanza_configuration"]
            .as_sequence()
            .unwrap()
            .iter()
            .map(|e| {
                (
                    e["stanza"].as_str().unwrap().to_string(),
                    e["entry_id"].as_str().unwrap().to_string(),
                    e["operation"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        let op = |s: &str, k: &str, o: &str| (s.to_string(), k.to_string(), o.to_string());
        assert_eq!(
            ops,
            [
                op("session", "dsess-enabled", "update"),
                op("replica-sets", "replica-set", "delete"),
                op("replica-sets", "replica-set", "add"),
                op("replica-sets", "replica-set", "add"),
                op("dsess-cluster", "server", "update"),
                op("dsess-cluster", "basic-auth-passwd", "update"),
            ]
        );
        let adds: Vec<&str> = proxy["stanza_configuration"]
            .as_sequence()
            .unwrap()
            .iter()
            .filter(|e| e["operation"] == "add")
            .map(|e| e["value"].as_str().unwrap())
            .collect();
        assert_eq!(adds, ["default", "admin"]);
    }
}
