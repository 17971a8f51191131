//! The DSC operations as Rust types: one request type per operation, the answers, the result
//! codes, and their conversion from and to the SOAP element tree. Pure.

use crate::soap::{Element, ItemValue, MessageWriter, NameParts, ITEM_MARKUP};
use crate::store::record::ItemsMarkup;

pub const CLIENT_NS: &str = "http://sms.am.tivoli.com";
pub const ADMIN_NS: &str = "http://admin.sms.am.tivoli.com";

/// IBM's message IDs (CTGSI03xx) that the answers carry, in decimal on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum ResultCode {
    Success = 0x38c5812c,
    NotRegistered = 0x38c5812e,
    NotAuthorized = 0x38c5812f,
    SessionLimitReached = 0x38c58130,
    SessionIdInUse = 0x38c58131,
    ReplicaSetNotConfigured = 0x38c58132,
    ReplicaSetNotJoined = 0x38c58133,
    StaleVersion = 0x38c58135,
    CapabilityMismatch = 0x38c58136,
    SessionNotFound = 0x38c58138,
    InvalidParameter = 0x38c58139,
    InstanceOwnedByAnother = 0x38c5813a,
}

impl ResultCode {
    pub fn code(self) -> u32 {
        self as u32
    }

    pub fn from_code(code: u32) -> Option<Self> {
        use ResultCode::*;
        [
            Success,
            NotRegistered,
            NotAuthorized,
            SessionLimitReached,
            SessionIdInUse,
            ReplicaSetNotConfigured,
            ReplicaSetNotJoined,
            StaleVersion,
            CapabilityMismatch,
            SessionNotFound,
            InvalidParameter,
            InstanceOwnedByAnother,
        ]
        .into_iter()
        .find(|c| c.code() == code)
    }

    /// A short name for logs and metrics.
    pub fn name(self) -> &'static str {
        use ResultCode::*;
        match self {
            Success => "success",
            NotRegistered => "not_registered",
            NotAuthorized => "not_authorized",
            SessionLimitReached => "session_limit_reached",
            SessionIdInUse => "session_id_in_use",
            ReplicaSetNotConfigured => "replica_set_not_configured",
            ReplicaSetNotJoined => "replica_set_not_joined",
            StaleVersion => "stale_version",
            CapabilityMismatch => "capability_mismatch",
            SessionNotFound => "session_not_found",
            InvalidParameter => "invalid_parameter",
            InstanceOwnedByAnother => "instance_owned_by_another",
        }
    }
}

/// One item of a session: `value` is `None` for `xsi:nil`, which differs from `Some("")`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataItem {
    pub data_class: ItemName,
    pub instance: ItemName,
    pub value: Option<String>,
}

/// A data class or instance name. The names WebSEAL sends on every login are shared, not
/// copied into each item: a login's items are read and written on every getSession.
pub type ItemName = std::borrow::Cow<'static, str>;

/// The data classes IBM's WebSEAL sends every time. Append only: a stored record names a class
/// by its index here (`store::record`).
pub const KNOWN_CLASSES: &[&str] = &[
    "com.tivoli.am.eb.credential",
    "com.tivoli.am.eb.auth-type",
    "com.tivoli.am.eb.user-name",
    "com.tivoli.am.eb.expiry",
    "com.tivoli.am.eb.is-inactive",
    "com.tivoli.am.eb.last-access",
    "com.tivoli.am.eb.version",
    "com.tivoli.am.sms.class",
    "com.tivoli.am.sms.concurrent-session-key-class",
    "com.tivoli.am.sms.concurrent-session-key-instance",
    "com.tivoli.am.sms.creation-time",
    "com.tivoli.am.sms.session-index",
    "com.tivoli.am.sms.user-uuid",
    "com.tivoli.am.webseal.auth-data",
    "com.tivoli.am.webseal.cookie-jar.managed-cookies",
    "com.tivoli.am.webseal.cookie-jar.stored-cookies",
    "com.tivoli.am.webseal.custom-inactivity-timeout",
    "com.tivoli.am.webseal.custom-lifetime-timeout",
    "com.tivoli.am.webseal.flush-sms-session",
    "com.tivoli.am.webseal.inactivity-timeout",
    "com.tivoli.am.webseal.lifetime-extended",
    "com.tivoli.am.webseal.mpa-type",
    "com.tivoli.am.webseal.multi-domain-session",
    "com.tivoli.am.webseal.orig-auth-type",
    "com.tivoli.am.webseal.orig-session-key",
    "com.tivoli.am.webseal.otp",
    "com.tivoli.am.webseal.refresh-failover",
];

/// The instances WebSEAL's items name.
pub const KNOWN_INSTANCES: [&str; 2] = ["sms", "webseal"];

/// Where `class` is in [`KNOWN_CLASSES`]. A look at each in turn: the names differ early
/// enough past their common prefix that this beats hashing them (criterion: record/encode).
pub fn known_class(class: &str) -> Option<usize> {
    KNOWN_CLASSES.iter().position(|c| *c == class)
}

/// `name` as an item name: shared when it is a known class or instance.
pub fn item_name(name: &str) -> ItemName {
    if let Some(i) = known_class(name) {
        return ItemName::Borrowed(KNOWN_CLASSES[i]);
    }
    match KNOWN_INSTANCES.iter().find(|i| **i == name) {
        Some(known) => ItemName::Borrowed(known),
        None => ItemName::Owned(name.to_string()),
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinReplicaSet {
    pub replica: String,
    pub instance: String,
    pub capabilities: u64,
    pub replica_set: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GetUpdates {
    pub replica: String,
    pub instance: String,
    /// WebSEAL sends nil here; the replica's joined sets apply then.
    pub replica_set: Option<String>,
    pub response_by_secs: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateSession {
    pub replica: String,
    pub replica_set: String,
    pub session_id: String,
    pub session_limit: i64,
    pub data: Vec<DataItem>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangeSession {
    pub replica: String,
    pub replica_set: String,
    pub session_id: String,
    pub version: u64,
    pub push: bool,
    pub session_limit: i64,
    pub data: Vec<DataItem>,
}

/// getSession, idleTimeout: a replica naming one session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRef {
    pub replica: String,
    pub replica_set: String,
    pub session_id: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TerminateSession {
    pub session: SessionRef,
    pub level: i64,
    pub version: u64,
    pub reason: u64,
}

/// The `execute` requests of the admin endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminRequest {
    GetClusterInfo,
    GetReplicaSetInfo {
        replica_set: String,
    },
    ListSessions {
        replica_set: String,
        data_class: String,
        data_instance: String,
        /// A pattern where `*` matches any run of characters.
        value_pattern: String,
        max_results: u64,
    },
    TerminateSession {
        replica_set: String,
        session_id: String,
    },
    TerminateAllSessions {
        replica_set: String,
        user: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    JoinReplicaSet(JoinReplicaSet),
    ReplicaShutdown { replica: String },
    Ping,
    GetRealmName { replica: String, replica_set: String },
    GetUpdates(GetUpdates),
    CreateSession(CreateSession),
    GetSession(SessionRef),
    ChangeSession(ChangeSession),
    IdleTimeout(SessionRef),
    TerminateSession(TerminateSession),
    Execute(AdminRequest),
}

impl Request {
    pub fn operation(&self) -> &'static str {
        match self {
            Request::JoinReplicaSet(_) => "joinReplicaSet",
            Request::ReplicaShutdown { .. } => "replicaShutdown",
            Request::Ping => "ping",
            Request::GetRealmName { .. } => "getRealmName",
            Request::GetUpdates(_) => "getUpdates",
            Request::CreateSession(_) => "createSession",
            Request::GetSession(_) => "getSession",
            Request::ChangeSession(_) => "changeSession",
            Request::IdleTimeout(_) => "idleTimeout",
            Request::TerminateSession(_) => "terminateSession",
            Request::Execute(_) => "execute",
        }
    }
}

/// Which endpoint a request arrived on; each serves one namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    Client,
    Admin,
}

impl Endpoint {
    pub fn namespace(self) -> &'static str {
        match self {
            Endpoint::Client => CLIENT_NS,
            Endpoint::Admin => ADMIN_NS,
        }
    }
}

/// Why an operation element could not become a request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// The whole message is wrong: answered with a SOAP fault.
    #[error(
        "operation {name} in namespace {namespace} is not served at this endpoint (expected namespace {expected})"
    )]
    WrongNamespace {
        name: String,
        namespace: String,
        expected: &'static str,
    },
    #[error("unknown operation {0}")]
    UnknownOperation(String),
    #[error("unknown admin request {0}")]
    UnknownAdminRequest(String),
    /// A known operation with a bad field: answered in the operation's own shape with result
    /// InvalidParameter, because WebSEAL understands that.
    #[error("{operation}: {problem}")]
    InvalidField { operation: &'static str, problem: String },
}

impl RequestError {
    /// The operation to answer with InvalidParameter, when the operation itself was known.
    pub fn known_operation(&self) -> Option<&'static str> {
        match self {
            RequestError::InvalidField { operation, .. } => Some(operation),
            _ => None,
        }
    }
}

/// Longest accepted identifier (replica, replica set, session ID, instance, data class).
const MAX_NAME: usize = 1024;

struct Fields<'a> {
    op: &'a Element<'a>,
    operation: &'static str,
}

impl<'a> Fields<'a> {
    fn invalid(&self, problem: String) -> RequestError {
        RequestError::InvalidField {
            operation: self.operation,
            problem,
        }
    }

    fn name(&self, field: &str) -> Result<String, RequestError> {
        self.name_text(field).map(str::to_string)
    }

    /// The field's text, checked as `name` checks it, borrowed from the request.
    fn name_text(&self, field: &str) -> Result<&'a str, RequestError> {
        let el = self
            .op
            .child(field)
            .ok_or_else(|| self.invalid(format!("the required field {field} is missing")))?;
        let text = el.text.trim();
        if el.nil || text.is_empty() {
            return Err(self.invalid(format!("the field {field} is empty")));
        }
        if text.len() > MAX_NAME {
            return Err(self.invalid(format!("the field {field} is longer than {MAX_NAME} bytes")));
        }
        Ok(text)
    }

    fn optional_name(&self, field: &str) -> Result<Option<String>, RequestError> {
        match self.op.child(field) {
            None => Ok(None),
            Some(el) if el.nil || el.text.trim().is_empty() => Ok(None),
            Some(_) => self.name(field).map(Some),
        }
    }

    fn integer(&self, field: &str) -> Result<i64, RequestError> {
        let text = self.name(field)?;
        parse_integer(&text)
            .ok_or_else(|| self.invalid(format!("the field {field} is not a number: {}", shorten(&text))))
    }

    fn integer_or(&self, field: &str, default: i64) -> Result<i64, RequestError> {
        match self.op.child(field) {
            None => Ok(default),
            Some(el) if el.nil => Ok(default),
            Some(_) => self.integer(field),
        }
    }

    fn unsigned(&self, field: &str) -> Result<u64, RequestError> {
        let n = self.integer(field)?;
        u64::try_from(n).map_err(|_| self.invalid(format!("the field {field} is negative")))
    }

    fn boolean_or(&self, field: &str, default: bool) -> Result<bool, RequestError> {
        match self.op.child(field) {
            None => Ok(default),
            Some(el) if el.nil => Ok(default),
            Some(el) => match el.text.trim() {
                "true" | "1" => Ok(true),
                "false" | "0" => Ok(false),
                other => Err(self.invalid(format!("the field {field} is not a boolean: {}", shorten(other)))),
            },
        }
    }

    fn data(&self) -> Result<Vec<DataItem>, RequestError> {
        self.op
            .children_named("data")
            .enumerate()
            .map(|(i, d)| {
                let item = Fields {
                    op: d,
                    operation: self.operation,
                };
                let value = d
                    .child("value")
                    .ok_or_else(|| self.invalid(format!("data item {} has no value element", i + 1)))?;
                Ok(DataItem {
                    data_class: item_name(
                        item.name_text("dataClass")
                            .map_err(|e| self.invalid(format!("data item {}: {e}", i + 1)))?,
                    ),
                    instance: item_name(
                        item.name_text("instance")
                            .map_err(|e| self.invalid(format!("data item {}: {e}", i + 1)))?,
                    ),
                    value: if value.nil { None } else { Some(value.text.to_string()) },
                })
            })
            .collect()
    }
}

/// A SessionDataValue pattern (listSessions): `*` matches any run of characters, everything
/// else itself.
pub fn wildcard_match(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == text;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !text.starts_with(first) || text.len() < first.len() + last.len() || !text.ends_with(last) {
        return false;
    }
    let mut rest = &text[first.len()..text.len() - last.len()];
    for part in &parts[1..parts.len() - 1] {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    true
}

/// Decimal, or hexadecimal with `0x` as inside data values.
pub fn parse_integer(text: &str) -> Option<i64> {
    let t = text.trim();
    let (neg, digits) = match t.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, t),
    };
    // One sign at most: Rust's parsers would take another one after it.
    let n = match digits.strip_prefix("0x").or_else(|| digits.strip_prefix("0X")) {
        Some(hex) if hex.starts_with(|c: char| c.is_ascii_hexdigit()) => i64::from_str_radix(hex, 16).ok()?,
        None if digits.starts_with(|c: char| c.is_ascii_digit()) => digits.parse::<i64>().ok()?,
        _ => return None,
    };
    if neg {
        n.checked_neg()
    } else {
        Some(n)
    }
}

fn shorten(s: &str) -> String {
    let mut out: String = s.chars().take(40).collect();
    if out.len() < s.len() {
        out.push('…');
    }
    out
}

/// Turns the operation element of a request on `endpoint` into a typed request.
pub fn parse_request(endpoint: Endpoint, op: &Element) -> Result<Request, RequestError> {
    let expected = endpoint.namespace();
    if op.namespace.as_deref() != Some(expected) {
        return Err(RequestError::WrongNamespace {
            name: shorten(&op.name),
            namespace: op.namespace.as_deref().unwrap_or("(none)").to_string(),
            expected,
        });
    }
    let operation: &'static str = match (endpoint, &*op.name) {
        (Endpoint::Client, "joinReplicaSet") => "joinReplicaSet",
        (Endpoint::Client, "replicaShutdown") => "replicaShutdown",
        (Endpoint::Client, "ping") => "ping",
        (Endpoint::Client, "getRealmName") => "getRealmName",
        (Endpoint::Client, "getUpdates") => "getUpdates",
        (Endpoint::Client, "createSession") => "createSession",
        (Endpoint::Client, "getSession") => "getSession",
        (Endpoint::Client, "changeSession") => "changeSession",
        (Endpoint::Client, "idleTimeout") => "idleTimeout",
        (Endpoint::Client, "terminateSession") => "terminateSession",
        (Endpoint::Admin, "execute") => "execute",
        (_, other) => return Err(RequestError::UnknownOperation(shorten(other))),
    };
    let f = Fields { op, operation };
    let session_ref = |f: &Fields| -> Result<SessionRef, RequestError> {
        Ok(SessionRef {
            replica: f.name("replica")?,
            replica_set: f.name("replicaSet")?,
            session_id: f.name("sessionID")?,
        })
    };
    Ok(match operation {
        "joinReplicaSet" => Request::JoinReplicaSet(JoinReplicaSet {
            replica: f.name("replica")?,
            instance: f.name("instance")?,
            capabilities: f.unsigned("capabilities")?,
            replica_set: f.name("replicaSet")?,
        }),
        "replicaShutdown" => Request::ReplicaShutdown {
            replica: f.name("replica")?,
        },
        "ping" => Request::Ping,
        "getRealmName" => Request::GetRealmName {
            replica: f.name("replica")?,
            replica_set: f.name("replicaSet")?,
        },
        "getUpdates" => Request::GetUpdates(GetUpdates {
            replica: f.name("replica")?,
            instance: f.name("instance")?,
            replica_set: f.optional_name("replicaSet")?,
            response_by_secs: f.unsigned("responseBy")?,
        }),
        "createSession" => Request::CreateSession(CreateSession {
            replica: f.name("replica")?,
            replica_set: f.name("replicaSet")?,
            session_id: f.name("sessionID")?,
            session_limit: f.integer_or("sessionLimit", 0)?,
            data: f.data()?,
        }),
        "getSession" => Request::GetSession(session_ref(&f)?),
        "changeSession" => Request::ChangeSession(ChangeSession {
            replica: f.name("replica")?,
            replica_set: f.name("replicaSet")?,
            session_id: f.name("sessionID")?,
            version: f.unsigned("version")?,
            push: f.boolean_or("push", false)?,
            session_limit: f.integer_or("sessionLimit", 0)?,
            data: f.data()?,
        }),
        "idleTimeout" => Request::IdleTimeout(session_ref(&f)?),
        "terminateSession" => Request::TerminateSession(TerminateSession {
            session: session_ref(&f)?,
            level: f.integer_or("level", 0)?,
            version: f.integer_or("version", 0)?.max(0) as u64,
            reason: f.integer_or("reason", 0)?.max(0) as u64,
        }),
        _ => Request::Execute(parse_admin(&f)?),
    })
}

fn parse_admin(f: &Fields) -> Result<AdminRequest, RequestError> {
    let request = f.name("request")?;
    // inAttrs{attributes{name, values}}: collect name → first value.
    let mut attrs: Vec<(String, String)> = Vec::new();
    for group in f.op.children_named("inAttrs") {
        for a in group.children_named("attributes") {
            let name = a.child("name").map(|n| n.text.trim().to_string()).unwrap_or_default();
            let value = a.child("values").map(|v| v.text.trim().to_string()).unwrap_or_default();
            attrs.push((name, value));
        }
    }
    let attr = |name: &str| -> Result<String, RequestError> {
        attrs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
            .filter(|v| !v.is_empty() && v.len() <= MAX_NAME)
            .ok_or_else(|| f.invalid(format!("{request}: the attribute {name} is missing or empty")))
    };
    Ok(match request.as_str() {
        "getClusterInfo" => AdminRequest::GetClusterInfo,
        "getReplicaSetInfo" => AdminRequest::GetReplicaSetInfo {
            replica_set: attr("ReplicaSet")?,
        },
        "listSessions" => {
            let max = attr("MaxResults").unwrap_or_else(|_| "0".into());
            let max_results = parse_integer(&max)
                .and_then(|n| u64::try_from(n).ok())
                .ok_or_else(|| f.invalid(format!("listSessions: MaxResults is not a number: {}", shorten(&max))))?;
            AdminRequest::ListSessions {
                replica_set: attr("ReplicaSet")?,
                data_class: attr("SessionDataClass")?,
                data_instance: attr("SessionDataInstance").unwrap_or_else(|_| "sms".into()),
                value_pattern: attr("SessionDataValue").unwrap_or_else(|_| "*".into()),
                max_results,
            }
        }
        "terminateSession" => AdminRequest::TerminateSession {
            replica_set: attr("ReplicaSet")?,
            session_id: attr("SessionID")?,
        },
        "terminateAllSessions" => AdminRequest::TerminateAllSessions {
            replica_set: attr("ReplicaSet")?,
            user: attr("SessionDataValue")?,
        },
        other => return Err(RequestError::UnknownAdminRequest(shorten(other))),
    })
}

/// Key material as handed to a replica.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyAnswer {
    pub current_key: String,
    pub current_key_id: u64,
    pub old_key: String,
    pub old_key_id: u64,
    /// Seconds since the current key was made; -1 when keys never rotate.
    pub current_key_age: i64,
}

/// One `outAttrs` group of an admin answer.
pub type AttributeGroup = Vec<(String, String)>;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    JoinReplicaSet {
        result: ResultCode,
        keys: Option<KeyAnswer>,
    },
    /// replicaShutdown, ping, idleTimeout: the result is the text of `<op>Return`.
    Bare {
        operation: &'static str,
        result: ResultCode,
    },
    GetRealmName {
        result: ResultCode,
        realm: String,
    },
    GetUpdates {
        result: ResultCode,
        new_key: String,
        new_key_id: u64,
    },
    /// createSession, changeSession, terminateSession.
    SessionChange {
        operation: &'static str,
        result: ResultCode,
        version: u64,
        stack_depth: u32,
    },
    GetSession {
        result: ResultCode,
        version: u64,
        data: AnswerItems,
    },
    Execute {
        result: ResultCode,
        groups: Vec<AttributeGroup>,
    },
}

/// The items of a getSession answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AnswerItems {
    /// Decoded items (the embedded store, refusals).
    Items(Vec<DataItem>),
    /// Written already, from the Redis store's record.
    Written(ItemsMarkup),
}

impl AnswerItems {
    /// About the bytes the items take in an answer, markup included, so that the answer is
    /// not copied each time it outgrows its buffer.
    fn answer_bytes(&self) -> usize {
        match self {
            AnswerItems::Items(items) => items
                .iter()
                .map(|i| ITEM_MARKUP + i.data_class.len() + i.instance.len() + i.value.as_ref().map_or(0, String::len))
                .sum(),
            AnswerItems::Written(markup) => markup.as_str().len(),
        }
    }
}

impl Response {
    /// The answer of `operation` carrying only a result code, for refusals.
    pub fn refusal(operation: &'static str, result: ResultCode) -> Response {
        match operation {
            "joinReplicaSet" => Response::JoinReplicaSet { result, keys: None },
            "getRealmName" => Response::GetRealmName {
                result,
                realm: String::new(),
            },
            "getUpdates" => Response::GetUpdates {
                result,
                new_key: String::new(),
                new_key_id: 0,
            },
            "createSession" | "changeSession" | "terminateSession" => Response::SessionChange {
                operation,
                result,
                version: 0,
                stack_depth: if operation == "terminateSession" { 0 } else { 1 },
            },
            "getSession" => Response::GetSession {
                result,
                version: 0,
                data: AnswerItems::Items(Vec::new()),
            },
            "execute" => Response::Execute {
                result,
                groups: Vec::new(),
            },
            other => Response::Bare {
                operation: other,
                result,
            },
        }
    }

    pub fn result(&self) -> ResultCode {
        match self {
            Response::JoinReplicaSet { result, .. }
            | Response::Bare { result, .. }
            | Response::GetRealmName { result, .. }
            | Response::GetUpdates { result, .. }
            | Response::SessionChange { result, .. }
            | Response::GetSession { result, .. }
            | Response::Execute { result, .. } => *result,
        }
    }

    /// The XML answer, element for element in the order of the captures.
    pub fn to_xml(&self) -> String {
        match self {
            Response::JoinReplicaSet { result, keys } => {
                let mut w = open("joinReplicaSet", CLIENT_NS);
                w.number("result", result.code());
                if let Some(k) = keys {
                    w.field("currentKey", &k.current_key);
                    w.field("oldKey", &k.old_key);
                    w.number("currentKeyID", k.current_key_id);
                    w.number("oldKeyID", k.old_key_id);
                    w.number("currentKeyAge", k.current_key_age);
                }
                close(w, "joinReplicaSet")
            }
            Response::Bare { operation, result } => {
                let response = format!("{operation}Response");
                let mut w = MessageWriter::new(&response, CLIENT_NS);
                w.number(&format!("{operation}Return"), result.code());
                w.finish(&response)
            }
            Response::GetRealmName { result, realm } => {
                let mut w = open("getRealmName", CLIENT_NS);
                w.number("result", result.code());
                w.field("realm", realm);
                close(w, "getRealmName")
            }
            Response::GetUpdates {
                result,
                new_key,
                new_key_id,
            } => {
                let mut w = open("getUpdates", CLIENT_NS);
                w.number("result", result.code());
                w.field("newKey", new_key);
                w.number("newKeyID", *new_key_id);
                close(w, "getUpdates")
            }
            Response::SessionChange {
                operation,
                result,
                version,
                stack_depth,
            } => {
                let mut w = open(operation, CLIENT_NS);
                w.number("result", result.code());
                w.number("version", *version);
                w.number("stackDepth", *stack_depth);
                w.field("clearOnReadDataPresent", "false");
                close(w, operation)
            }
            Response::GetSession { result, version, data } => {
                let mut w = MessageWriter::answer_sized("getSession", CLIENT_NS, data.answer_bytes());
                w.number("result", result.code());
                w.number("version", *version);
                match data {
                    AnswerItems::Items(items) => {
                        for item in items {
                            w.data_item(
                                ItemValue::of(item.value.as_deref()),
                                NameParts::text(&item.data_class),
                                NameParts::text(&item.instance),
                            );
                        }
                    }
                    AnswerItems::Written(markup) => w.items(markup.as_str()),
                }
                w.number("stackDepth", 1);
                close(w, "getSession")
            }
            Response::Execute { result, groups } => {
                let mut w = open("execute", ADMIN_NS);
                for group in groups {
                    w.open("outAttrs");
                    for (name, value) in group {
                        w.open("attributes");
                        w.field("name", name);
                        w.field("values", value);
                        w.close("attributes");
                    }
                    w.close("outAttrs");
                }
                w.number("result", result.code());
                close(w, "execute")
            }
        }
    }
}

fn open(operation: &str, namespace: &str) -> MessageWriter {
    MessageWriter::answer(operation, namespace)
}

fn close(w: MessageWriter, operation: &str) -> String {
    w.finish_answer(operation)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards() {
        assert!(wildcard_match("*", ""));
        assert!(wildcard_match("al*", "alice"));
        assert!(wildcard_match("*ce", "alice"));
        assert!(wildcard_match("a*i*e", "alice"));
        assert!(!wildcard_match("a*x*e", "alice"));
        assert!(!wildcard_match("alice*e", "alice"));
        assert!(wildcard_match("alice", "alice"));
        assert!(!wildcard_match("alic", "alice"));
    }

    use crate::soap::read_operation;

    /// `op` is the operation's name; `inner` its children, written with prefix `ns1`.
    fn request(endpoint: Endpoint, op: &str, inner: &str) -> Result<Request, RequestError> {
        let ns = endpoint.namespace();
        let xml = format!(
            r#"<SOAP-ENV:Envelope xmlns:SOAP-ENV="http://schemas.xmlsoap.org/soap/envelope/" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><SOAP-ENV:Body><ns1:{op} xmlns:ns1="{ns}">{inner}</ns1:{op}></SOAP-ENV:Body></SOAP-ENV:Envelope>"#
        );
        parse_request(endpoint, &read_operation(xml.as_bytes()).unwrap())
    }

    #[test]
    fn result_codes_match_ibm_message_ids() {
        assert_eq!(ResultCode::Success.code(), 952467756);
        assert_eq!(ResultCode::SessionNotFound.code(), 952467768);
        assert_eq!(ResultCode::InstanceOwnedByAnother.code(), 952467770);
        assert_eq!(ResultCode::from_code(952467765), Some(ResultCode::StaleVersion));
        assert_eq!(ResultCode::from_code(1), None);
    }

    #[test]
    fn parses_create_session_with_nil_and_empty_items() {
        let r = request(Endpoint::Client, "createSession", r#"<ns1:replica>web-a</ns1:replica><ns1:replicaSet>default</ns1:replicaSet><ns1:sessionID>S1</ns1:sessionID><ns1:sessionLimit>-1</ns1:sessionLimit><ns1:data><ns1:value xsi:nil="true"/><ns1:dataClass>c.nil</ns1:dataClass><ns1:instance>webseal</ns1:instance><ns1:changePolicy>1</ns1:changePolicy></ns1:data><ns1:data><ns1:value/><ns1:dataClass>c.empty</ns1:dataClass><ns1:instance>sms</ns1:instance></ns1:data>"#)
        .unwrap();
        let Request::CreateSession(c) = r else { panic!("{r:?}") };
        assert_eq!(c.session_limit, -1);
        assert_eq!(c.data[0].value, None);
        assert_eq!(c.data[1].value.as_deref(), Some(""));
        assert_eq!(c.data[1].data_class, "c.empty");
    }

    #[test]
    fn missing_and_malformed_fields_name_the_field() {
        let e = request(Endpoint::Client, "getSession", "<ns1:replica>w</ns1:replica>").unwrap_err();
        assert_eq!(e.known_operation(), Some("getSession"));
        assert!(e.to_string().contains("replicaSet"), "{e}");
        let e = request(Endpoint::Client, "changeSession", "<ns1:replica>w</ns1:replica><ns1:replicaSet>d</ns1:replicaSet><ns1:sessionID>s</ns1:sessionID><ns1:version>x1</ns1:version>")
        .unwrap_err();
        assert!(e.to_string().contains("version is not a number"), "{e}");
    }

    /// Regression: "--9223372036854775808" was read as minus i64::MIN, which overflowed
    /// (a panic in debug builds); a second sign is no number at all.
    #[test]
    fn integers_take_one_sign_and_never_overflow() {
        assert_eq!(parse_integer("600"), Some(600));
        assert_eq!(parse_integer(" -1 "), Some(-1));
        assert_eq!(parse_integer("0x258"), Some(600));
        assert_eq!(parse_integer("-0x10"), Some(-16));
        assert_eq!(parse_integer("9223372036854775807"), Some(i64::MAX));
        for bad in [
            "--9223372036854775808",
            "-0x-8000000000000000",
            "--5",
            "-+5",
            "+5",
            "0x-5",
            "0x+5",
            "-",
            "0x",
            "",
            "9223372036854775808",
            "x1",
        ] {
            assert_eq!(parse_integer(bad), None, "{bad:?}");
        }
        let e = request(Endpoint::Client, "createSession", "<ns1:replica>w</ns1:replica><ns1:replicaSet>d</ns1:replicaSet><ns1:sessionID>s</ns1:sessionID><ns1:sessionLimit>--9223372036854775808</ns1:sessionLimit>")
        .unwrap_err();
        assert!(e.to_string().contains("sessionLimit is not a number"), "{e}");
    }

    #[test]
    fn refuses_unknown_operations_and_foreign_namespaces() {
        let e = request(Endpoint::Client, "frobnicate", "").unwrap_err();
        assert_eq!(e, RequestError::UnknownOperation("frobnicate".into()));
        let e = request(Endpoint::Admin, "ping", "").unwrap_err();
        assert_eq!(e, RequestError::UnknownOperation("ping".into()));
        let xml = r#"<S:Envelope xmlns:S="http://schemas.xmlsoap.org/soap/envelope/"><S:Body><x:ping xmlns:x="urn:other"/></S:Body></S:Envelope>"#;
        let e = parse_request(Endpoint::Client, &read_operation(xml.as_bytes()).unwrap()).unwrap_err();
        assert!(matches!(e, RequestError::WrongNamespace { .. }), "{e}");
    }

    #[test]
    fn parses_admin_list_sessions() {
        let r = request(Endpoint::Admin, "execute", "<ns1:request>listSessions</ns1:request><ns1:inAttrs><ns1:attributes><ns1:name>SessionDataClass</ns1:name><ns1:values>com.tivoli.am.eb.user-name</ns1:values></ns1:attributes><ns1:attributes><ns1:name>ReplicaSet</ns1:name><ns1:values>default</ns1:values></ns1:attributes><ns1:attributes><ns1:name>SessionDataValue</ns1:name><ns1:values>al*</ns1:values></ns1:attributes><ns1:attributes><ns1:name>MaxResults</ns1:name><ns1:values>0x10</ns1:values></ns1:attributes></ns1:inAttrs>")
        .unwrap();
        assert_eq!(
            r,
            Request::Execute(AdminRequest::ListSessions {
                replica_set: "default".into(),
                data_class: "com.tivoli.am.eb.user-name".into(),
                data_instance: "sms".into(),
                value_pattern: "al*".into(),
                max_results: 16,
            })
        );
    }

    #[test]
    fn answers_keep_the_captured_shape() {
        let xml = Response::GetSession {
            result: ResultCode::Success,
            version: 3,
            data: AnswerItems::Items(vec![
                DataItem {
                    data_class: "a".into(),
                    instance: "sms".into(),
                    value: None,
                },
                DataItem {
                    data_class: "b".into(),
                    instance: "webseal".into(),
                    value: Some(String::new()),
                },
            ]),
        }
        .to_xml();
        assert!(xml.contains(r#"<ns1:getSessionResponse xmlns:ns1="http://sms.am.tivoli.com"><ns1:getSessionReturn><ns1:result>952467756</ns1:result><ns1:version>3</ns1:version><ns1:data><ns1:value xsi:nil="true"/><ns1:dataClass>a</ns1:dataClass><ns1:instance>sms</ns1:instance></ns1:data><ns1:data><ns1:value></ns1:value>"#), "{xml}");
        assert!(xml.contains("<ns1:stackDepth>1</ns1:stackDepth></ns1:getSessionReturn></ns1:getSessionResponse>"));
        let ping = Response::Bare {
            operation: "ping",
            result: ResultCode::Success,
        }
        .to_xml();
        assert!(ping.contains("<ns1:pingReturn>952467756</ns1:pingReturn>"), "{ping}");
    }

    /// The Redis store's answers are written from the record; they must say exactly what the
    /// decoded items, with the logged changes merged, would.
    #[test]
    fn answers_from_a_record_match_answers_from_its_items() {
        use crate::store::record::{encode_items, ItemsMarkup};
        let item = |c: &str, i: &str, v: Option<&str>| DataItem {
            data_class: c.to_string().into(),
            instance: i.to_string().into(),
            value: v.map(String::from),
        };
        let credential = "QUJD".repeat(512);
        let record = vec![
            item("com.tivoli.am.eb.credential", "sms", Some(&credential)),
            item("com.tivoli.am.eb.last-access", "sms", Some("0x1")),
            item("com.tivoli.am.webseal.not-known", "webseal", Some("a<b>&\"c\"\r")),
            item("com.tivoli.am.sms.x&y", "odd<instance>", None),
            item("plain&class", "sms", Some("")),
            item("dup", "sms", Some("first")),
            item("dup", "sms", Some("second")),
        ];
        let changes = vec![
            item("com.tivoli.am.eb.last-access", "sms", Some("0x2")),
            item("dup", "sms", Some("changed")),
            item("new", "webseal", Some("<added>")),
            item("com.tivoli.am.eb.credential", "other", None),
        ];
        let mut merged = record.clone();
        crate::items::merge(&mut merged, changes.clone());
        let answer = |data| {
            Response::GetSession {
                result: ResultCode::Success,
                version: 9,
                data,
            }
            .to_xml()
        };
        let written = ItemsMarkup::write(&encode_items(&record), &changes).unwrap();
        assert_eq!(
            answer(AnswerItems::Written(written)),
            answer(AnswerItems::Items(merged))
        );
        let unchanged = ItemsMarkup::write(&encode_items(&record), &[]).unwrap();
        assert_eq!(
            answer(AnswerItems::Written(unchanged)),
            answer(AnswerItems::Items(record))
        );
    }
}
