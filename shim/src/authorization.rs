//! Which replica sets each authenticated identity may use (`--authorization-file`). Without
//! the file, any authenticated client may use any set the shim serves. With it, every request
//! naming a replica set is checked: an identity may use the sets its lines name, an identity
//! the file does not name may use none, and others get result 952467759 (not authorized).
//!
//! The file, one identity a line (`#` starts a comment):
//!
//! ```text
//! user webseal: default, www
//! certificate CN=webseal-a,O=Example: www
//! certificate CN=dscadmin,O=Example: *
//! ```
//!
//! `user` is the HTTP Basic user, `certificate` a client certificate's subject (RFC 4514,
//! compared without the spaces after commas), `*` every set.

use std::collections::{HashMap, HashSet};
use std::path::Path;

/// Who sent a request, as the listener authenticated it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Identity {
    /// The HTTP Basic user, when Basic authentication accepted the request.
    pub user: Option<String>,
    /// The subject of the client certificate the TLS handshake verified.
    pub certificate: Option<String>,
}

impl std::fmt::Display for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (&self.user, &self.certificate) {
            (Some(u), Some(c)) => write!(f, "user {u}, certificate {c}"),
            (Some(u), None) => write!(f, "user {u}"),
            (None, Some(c)) => write!(f, "certificate {c}"),
            (None, None) => f.write_str("anonymous"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Sets {
    All,
    Named(HashSet<String>),
}

impl Sets {
    fn contains(&self, set: &str) -> bool {
        match self {
            Sets::All => true,
            Sets::Named(names) => names.contains(set),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AuthorizationError {
    #[error("{path}: {error}")]
    Unreadable { path: String, error: std::io::Error },
    #[error("{path}, line {line}: {problem}")]
    Invalid { path: String, line: usize, problem: String },
}

/// The identities and their replica sets.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Authorization {
    users: HashMap<String, Sets>,
    certificates: HashMap<String, Sets>,
}

impl Authorization {
    pub fn load(path: &Path) -> Result<Self, AuthorizationError> {
        let text = std::fs::read_to_string(path).map_err(|error| AuthorizationError::Unreadable {
            path: path.display().to_string(),
            error,
        })?;
        Self::parse(&text).map_err(|(line, problem)| AuthorizationError::Invalid {
            path: path.display().to_string(),
            line,
            problem,
        })
    }

    /// The file's text; an error names the line (from 1) and what is wrong with it.
    pub fn parse(text: &str) -> Result<Self, (usize, String)> {
        let mut authorization = Self::default();
        for (n, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let invalid = |problem: &str| (n + 1, problem.to_string());
            let (kind, rest) = line
                .split_once(char::is_whitespace)
                .ok_or_else(|| invalid("expected `user NAME: SETS` or `certificate SUBJECT: SETS`"))?;
            let (name, sets) = rest
                .rsplit_once(':')
                .ok_or_else(|| invalid("expected a `:` before the replica sets"))?;
            let name = name.trim();
            if name.is_empty() {
                return Err(invalid("the identity is empty"));
            }
            let names: Vec<&str> = sets.split(',').map(str::trim).filter(|s| !s.is_empty()).collect();
            let sets = if names.contains(&"*") {
                Sets::All
            } else if names.is_empty() {
                return Err(invalid("no replica set is named (`*` means every set)"));
            } else {
                Sets::Named(names.into_iter().map(String::from).collect())
            };
            let table = match kind {
                "user" => &mut authorization.users,
                "certificate" => &mut authorization.certificates,
                other => return Err(invalid(&format!("{other:?} is neither `user` nor `certificate`"))),
            };
            let key = if kind == "certificate" {
                subject_key(name)
            } else {
                name.to_string()
            };
            if table.insert(key, sets).is_some() {
                return Err(invalid(&format!("{kind} {name} is named twice")));
            }
        }
        Ok(authorization)
    }

    /// Whether `identity` may make a request about `replica_set`. A request naming no set
    /// (ping, a poll of the joined sets, replicaShutdown, getClusterInfo) needs only an
    /// identity the file names.
    pub fn permits(&self, identity: &Identity, replica_set: Option<&str>) -> bool {
        let granted = [
            identity.user.as_ref().and_then(|u| self.users.get(u)),
            identity
                .certificate
                .as_ref()
                .and_then(|c| self.certificates.get(&subject_key(c))),
        ];
        granted
            .into_iter()
            .flatten()
            .any(|sets| replica_set.is_none_or(|set| sets.contains(set)))
    }
}

/// A subject as compared: the RFC 4514 attributes without the spaces around them.
fn subject_key(subject: &str) -> String {
    subject.split(',').map(str::trim).collect::<Vec<_>>().join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "
# WebSEAL fleets and the administrator
user webseal: default, www
certificate CN=webseal-a, O=Example: www   # the www fleet
certificate CN=dscadmin,O=Example: *
";

    fn user(name: &str) -> Identity {
        Identity {
            user: Some(name.into()),
            certificate: None,
        }
    }

    fn certificate(subject: &str) -> Identity {
        Identity {
            user: None,
            certificate: Some(subject.into()),
        }
    }

    #[test]
    fn identities_may_use_their_sets_only() {
        let a = Authorization::parse(FILE).unwrap();
        assert!(a.permits(&user("webseal"), Some("default")));
        assert!(!a.permits(&user("webseal"), Some("api")));
        assert!(a.permits(&certificate("CN=webseal-a,O=Example"), Some("www")));
        assert!(!a.permits(&certificate("CN=webseal-a, O=Example"), Some("default")));
        assert!(a.permits(&certificate("CN=dscadmin, O=Example"), Some("anything")));
        assert!(!a.permits(&user("mallory"), Some("default")));
        assert!(
            !a.permits(&Identity::default(), None),
            "an identity not named may do nothing"
        );
        assert!(a.permits(&user("webseal"), None));
        // Both identities of one request count.
        let both = Identity {
            user: Some("webseal".into()),
            certificate: Some("CN=webseal-a,O=Example".into()),
        };
        assert!(a.permits(&both, Some("www")) && a.permits(&both, Some("default")));
    }

    #[test]
    fn errors_name_the_line() {
        for (text, line, words) in [
            ("user webseal default", 1, "`:`"),
            ("\nhost web: default", 2, "neither"),
            ("user webseal:", 1, "no replica set"),
            ("user webseal: a\nuser webseal: b", 2, "twice"),
            ("user : a", 1, "empty"),
        ] {
            let (at, problem) = Authorization::parse(text).unwrap_err();
            assert_eq!(at, line, "{text}: {problem}");
            assert!(problem.contains(words), "{text}: {problem}");
        }
    }
}
