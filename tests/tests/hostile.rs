//! Hostile requests against the real binary, on each store: broken and foreign XML, entity
//! tricks, bombs and oversized bodies. Each one gets a SOAP fault naming the problem (or, for a
//! known operation with a bad field, the operation's own answer with result "invalid
//! parameter"), quickly; afterwards the process still runs, a session created before is
//! untouched, and nothing panicked.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use redsess_shim::soap;
use redsess_tests::{item, webseal_session, DataItem, DscClient, RedisServer, Shim, SUCCESS};

const CLIENT: &str = "/DSess/services/DSess";
const ADMIN: &str = "/DSess/services/DSessAdmin";
const ENV_NS: &str = "http://schemas.xmlsoap.org/soap/envelope/";
const XSI_NS: &str = "http://www.w3.org/2001/XMLSchema-instance";
const CLIENT_NS: &str = "http://sms.am.tivoli.com";
const ADMIN_NS: &str = "http://admin.sms.am.tivoli.com";
const INVALID_PARAMETER: u32 = 952467769;
const SESSION_NOT_FOUND: u32 = 952467768;
/// The shim's default `--request-timeout`: every refusal must come well within it.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
const MAX_BODY: usize = 65536;
const RS: &str = "default";
const REPLICA: &str = "hostile-webseald";

/// A request envelope as WebSEAL writes it: `inner` uses the prefix `ns1`.
fn envelope(operation: &str, namespace: &str, inner: &str) -> String {
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?><SOAP-ENV:Envelope xmlns:SOAP-ENV="{ENV_NS}" xmlns:xsi="{XSI_NS}"><SOAP-ENV:Body><ns1:{operation} xmlns:ns1="{namespace}">{inner}</ns1:{operation}></SOAP-ENV:Body></SOAP-ENV:Envelope>"#
    )
}

fn field(name: &str, value: &str) -> String {
    format!("<ns1:{name}>{value}</ns1:{name}>")
}

fn session_fields(session_id: &str) -> String {
    field("replica", REPLICA) + &field("replicaSet", RS) + &field("sessionID", session_id)
}

/// A session made before the attack: its ID, version and items as getSession answers them.
struct Victim {
    id: String,
    version: i64,
    items: Vec<DataItem>,
}

async fn create_victim(client: &DscClient, id: &str) -> Victim {
    let joined = client
        .join_replica_set(REPLICA, &format!("0a1b2c:{REPLICA}"), 15, RS)
        .await
        .unwrap();
    assert_eq!(joined.result(), SUCCESS);
    let items = webseal_session("mallory-target");
    assert_eq!(
        client
            .create_session(REPLICA, RS, id, 0, &items)
            .await
            .unwrap()
            .result(),
        SUCCESS
    );
    let extra = [item("com.tivoli.am.webseal.lifetime-extended", "webseal", Some("true"))];
    let changed = client.change_session(REPLICA, RS, id, 0, &extra).await.unwrap();
    assert_eq!(changed.result(), SUCCESS);
    let got = client.get_session(REPLICA, RS, id).await.unwrap();
    assert_eq!(got.result(), SUCCESS);
    assert_eq!(got.number("version"), Some(1));
    let mut expected = items;
    expected.extend(extra);
    assert_eq!(got.data(), expected);
    Victim {
        id: id.to_string(),
        version: 1,
        items: expected,
    }
}

async fn assert_untouched(client: &DscClient, victim: &Victim) {
    let got = client.get_session(REPLICA, RS, &victim.id).await.unwrap();
    assert_eq!(got.result(), SUCCESS, "the session is gone");
    assert_eq!(
        got.number("version"),
        Some(victim.version),
        "the session's version moved"
    );
    assert_eq!(got.data(), victim.items, "the session's items changed");
}

/// Posts and times one request; it must be answered within the request timeout.
async fn post(client: &DscClient, what: &str, path: &str, body: impl Into<reqwest::Body>) -> (u16, String) {
    let started = Instant::now();
    let (status, answer) = client
        .post_raw(path, body)
        .await
        .unwrap_or_else(|e| panic!("{what}: no answer: {e}"));
    let took = started.elapsed();
    assert!(took < REQUEST_TIMEOUT, "{what}: answered only after {took:?}");
    (status, answer)
}

/// The answer is a SOAP fault with this HTTP status whose faultstring contains `names`.
fn assert_fault(what: &str, (status, answer): &(u16, String), want_status: u16, names: &str) {
    assert_eq!(*status, want_status, "{what}: HTTP status; answer: {answer}");
    assert!(answer.contains("<faultcode>"), "{what}: not a fault: {answer}");
    let (code, message) =
        soap::read_fault(answer.as_bytes()).unwrap_or_else(|| panic!("{what}: the fault does not read back: {answer}"));
    assert_eq!(code, "SOAP-ENV:Client", "{what}: {answer}");
    assert!(
        message.contains(names),
        "{what}: the faultstring {message:?} does not name {names:?}"
    );
}

/// The answer is HTTP 200, `<operation>Response` in `namespace`, with result "invalid parameter".
fn assert_invalid_parameter(what: &str, (status, answer): &(u16, String), operation: &str, namespace: &str) {
    assert_eq!(*status, 200, "{what}: HTTP status; answer: {answer}");
    assert!(!answer.contains("<faultcode>"), "{what}: a fault: {answer}");
    let response = soap::read_operation(answer.as_bytes()).unwrap_or_else(|e| panic!("{what}: {e}: {answer}"));
    assert_eq!(response.name, format!("{operation}Response"), "{what}: {answer}");
    assert_eq!(response.namespace.as_deref(), Some(namespace), "{what}: {answer}");
    assert!(
        answer.contains(&format!(r#"<ns1:{operation}Response xmlns:ns1="{namespace}">"#)),
        "{what}: not the captured shape: {answer}"
    );
    let ret = response
        .child(&format!("{operation}Return"))
        .unwrap_or_else(|| panic!("{what}: no {operation}Return: {answer}"));
    let result = ret.child("result").map_or(&*ret.text, |r| &*r.text);
    assert_eq!(result.trim(), INVALID_PARAMETER.to_string(), "{what}: {answer}");
}

/// Every refusal of a message that is not a usable request: a fault, HTTP 400.
async fn malformed_messages(client: &DscClient) {
    let ping = envelope("ping", CLIENT_NS, &field("something", "0"));
    let cases: Vec<(&str, &str, Vec<u8>, &str)> = vec![
        (
            "mismatched end tag",
            CLIENT,
            envelope("ping", CLIENT_NS, "<ns1:something>0</ns1:nothing>").into_bytes(),
            "not well-formed XML",
        ),
        (
            "truncated envelope",
            CLIENT,
            ping.as_bytes()[..ping.find("</SOAP-ENV:Body>").unwrap()].to_vec(),
            "not well-formed XML",
        ),
        (
            "unterminated tag",
            CLIENT,
            format!(r#"<SOAP-ENV:Envelope xmlns:SOAP-ENV="{ENV_NS}"><SOAP-ENV:Body><ns1:ping"#).into_bytes(),
            "not well-formed XML",
        ),
        ("non-XML text", CLIENT, b"GET / HTTP/1.0 -- just words, no markup".to_vec(), "no XML element"),
        ("empty body", CLIENT, Vec::new(), "no XML element"),
        ("empty body (admin)", ADMIN, Vec::new(), "no XML element"),
        (
            "invalid UTF-8 inside an envelope",
            CLIENT,
            {
                let mut b = ping.clone().into_bytes();
                let at = ping.find(">0<").unwrap() + 1;
                b.splice(at..at + 1, [0xff, 0xfe, 0xc3, 0x28]);
                b
            },
            "not valid UTF-8",
        ),
        ("invalid UTF-8 only", ADMIN, vec![0x80, 0xbf, 0xff, 0x00, 0xc0], "not valid UTF-8"),
        (
            "UTF-16 body",
            CLIENT,
            ping.encode_utf16().flat_map(u16::to_le_bytes).collect(),
            "not well-formed XML",
        ),
        ("not an envelope", CLIENT, b"<ping><something>0</something></ping>".to_vec(), "not a SOAP 1.1 Envelope"),
        (
            "envelope of SOAP 1.2",
            CLIENT,
            ping.replace(ENV_NS, "http://www.w3.org/2003/05/soap-envelope").into_bytes(),
            "not a SOAP 1.1 Envelope",
        ),
        (
            "envelope without body",
            CLIENT,
            format!(r#"<SOAP-ENV:Envelope xmlns:SOAP-ENV="{ENV_NS}"><SOAP-ENV:Header/></SOAP-ENV:Envelope>"#).into_bytes(),
            "has no Body",
        ),
        (
            "empty Body element",
            CLIENT,
            format!(r#"<SOAP-ENV:Envelope xmlns:SOAP-ENV="{ENV_NS}"><SOAP-ENV:Body> </SOAP-ENV:Body></SOAP-ENV:Envelope>"#).into_bytes(),
            "holds no operation element",
        ),
        (
            "undeclared prefix",
            CLIENT,
            format!(r#"<SOAP-ENV:Envelope xmlns:SOAP-ENV="{ENV_NS}"><SOAP-ENV:Body><evil:ping/></SOAP-ENV:Body></SOAP-ENV:Envelope>"#).into_bytes(),
            "prefix evil is not declared",
        ),
        (
            "second document element",
            CLIENT,
            format!("{ping}<SOAP-ENV:Envelope xmlns:SOAP-ENV=\"{ENV_NS}\"/>").into_bytes(),
            "follows the document element",
        ),
        (
            "unknown operation",
            CLIENT,
            envelope("frobnicate", CLIENT_NS, &field("replica", REPLICA)).into_bytes(),
            "unknown operation frobnicate",
        ),
        (
            "unknown admin request",
            ADMIN,
            envelope("execute", ADMIN_NS, &field("request", "dropEverything")).into_bytes(),
            "unknown admin request dropEverything",
        ),
        (
            "unknown admin operation",
            ADMIN,
            envelope("shutdown", ADMIN_NS, "").into_bytes(),
            "unknown operation shutdown",
        ),
        (
            "operation in another namespace",
            CLIENT,
            envelope("getSession", "urn:evil", &session_fields("x")).into_bytes(),
            "namespace urn:evil",
        ),
        (
            "operation without namespace",
            CLIENT,
            format!(r#"<SOAP-ENV:Envelope xmlns:SOAP-ENV="{ENV_NS}"><SOAP-ENV:Body><ping/></SOAP-ENV:Body></SOAP-ENV:Envelope>"#).into_bytes(),
            "namespace (none)",
        ),
        (
            "client operation on the admin endpoint",
            ADMIN,
            envelope("terminateSession", CLIENT_NS, &session_fields("x")).into_bytes(),
            "not served at this endpoint",
        ),
        (
            "admin operation on the client endpoint",
            CLIENT,
            envelope("execute", ADMIN_NS, &field("request", "getClusterInfo")).into_bytes(),
            "not served at this endpoint",
        ),
        (
            "admin namespace with a client operation name",
            ADMIN,
            envelope("getSession", ADMIN_NS, &session_fields("x")).into_bytes(),
            "unknown operation getSession",
        ),
    ];
    for (what, path, body, names) in cases {
        let answer = post(client, what, path, body).await;
        assert_fault(what, &answer, 400, names);
    }
}

/// DOCTYPEs are refused whatever they declare; entity references never expand.
async fn entity_tricks(client: &DscClient) {
    let xxe = format!(
        r#"<?xml version="1.0"?><!DOCTYPE SOAP-ENV:Envelope [<!ENTITY xxe SYSTEM "file:///etc/passwd">]><SOAP-ENV:Envelope xmlns:SOAP-ENV="{ENV_NS}"><SOAP-ENV:Body><ns1:getRealmName xmlns:ns1="{CLIENT_NS}"><ns1:replica>&xxe;</ns1:replica><ns1:replicaSet>{RS}</ns1:replicaSet></ns1:getRealmName></SOAP-ENV:Body></SOAP-ENV:Envelope>"#
    );
    let mut laughs = String::from(r#"<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">"#);
    laughs.push_str(r#"<!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">"#);
    for i in 2..=9 {
        let p = i - 1;
        laughs.push_str(&format!(
            r#"<!ENTITY lol{i} "&lol{p};&lol{p};&lol{p};&lol{p};&lol{p};&lol{p};&lol{p};&lol{p};&lol{p};&lol{p};">"#
        ));
    }
    laughs.push_str("]>");
    laughs.push_str(&envelope(
        "getRealmName",
        CLIENT_NS,
        &(field("replica", "&lol9;") + &field("replicaSet", RS)),
    ));
    let parameter = format!(
        r#"<?xml version="1.0"?><!DOCTYPE x [<!ENTITY % remote SYSTEM "http://127.0.0.1:9/evil.dtd">%remote;]>{}"#,
        envelope("ping", CLIENT_NS, &field("something", "0"))
    );
    let internal_only = format!("<!DOCTYPE x>{}", envelope("ping", CLIENT_NS, &field("something", "0")));
    for (what, path, body) in [
        ("external entity (file:///etc/passwd)", CLIENT, xxe.clone()),
        (
            "external entity on the admin endpoint",
            ADMIN,
            xxe.replace(CLIENT_NS, ADMIN_NS),
        ),
        ("billion laughs", CLIENT, laughs),
        ("external parameter entity", CLIENT, parameter),
        ("bare DOCTYPE", CLIENT, internal_only),
    ] {
        let answer = post(client, what, path, body).await;
        assert_fault(what, &answer, 400, "DOCTYPE");
        assert!(!answer.1.contains("root:"), "{what}: /etc/passwd leaked: {}", answer.1);
        assert!(!answer.1.contains("lollol"), "{what}: an entity expanded: {}", answer.1);
    }
    // Without a DOCTYPE, a reference to an undeclared entity is refused, not left empty.
    let undeclared = envelope(
        "getRealmName",
        CLIENT_NS,
        &(field("replica", "&xxe;") + &field("replicaSet", RS)),
    );
    let answer = post(client, "undeclared entity", CLIENT, undeclared).await;
    assert_fault(
        "undeclared entity",
        &answer,
        400,
        "&xxe; is not one of XML's predefined entities",
    );
    let bad_char = envelope(
        "getRealmName",
        CLIENT_NS,
        &(field("replica", "&#xD800;") + &field("replicaSet", RS)),
    );
    let answer = post(client, "surrogate character reference", CLIENT, bad_char).await;
    assert_fault("surrogate character reference", &answer, 400, "not well-formed XML");
}

/// Bombs that stay under the body limit: depth, attributes, namespaces.
async fn bombs(client: &DscClient, victim: &Victim) {
    let deep = envelope(
        "getSession",
        CLIENT_NS,
        &format!(
            "{}{}{}",
            session_fields(&victim.id),
            "<a>".repeat(8_000),
            "</a>".repeat(8_000)
        ),
    );
    assert!(deep.len() < MAX_BODY);
    assert_fault(
        "8,000 nested elements",
        &post(client, "deep", CLIENT, deep).await,
        400,
        "deeper than 16 levels",
    );
    let deep_after = format!(
        r#"<SOAP-ENV:Envelope xmlns:SOAP-ENV="{ENV_NS}"><SOAP-ENV:Body><ns1:ping xmlns:ns1="{CLIENT_NS}"/>{}{}</SOAP-ENV:Body></SOAP-ENV:Envelope>"#,
        "<a>".repeat(8_000),
        "</a>".repeat(8_000)
    );
    let answer = post(client, "deep after the operation", CLIENT, deep_after).await;
    assert_fault(
        "8,000 nested elements after the operation",
        &answer,
        400,
        "deeper than 16 levels",
    );
    let unclosed = envelope("ping", CLIENT_NS, &"<a>".repeat(10_000));
    let answer = post(client, "unclosed deep", CLIENT, unclosed).await;
    assert_fault("10,000 unclosed elements", &answer, 400, "deeper than 16 levels");
    let attrs: String = (0..5000).map(|i| format!(" a{i}=\"\"")).collect();
    let many_attributes = envelope("getSession", CLIENT_NS, &session_fields(&victim.id)).replacen(
        "<ns1:getSession ",
        &format!("<ns1:getSession{attrs} "),
        1,
    );
    assert!(many_attributes.len() < MAX_BODY);
    let answer = post(client, "many attributes", CLIENT, many_attributes).await;
    assert_fault("5,000 attributes", &answer, 400, "more than 64 attributes");
    let declarations: String = (0..60).map(|i| format!(" xmlns:p{i}=\"urn:p{i}\"")).collect();
    let namespaces = envelope(
        "ping",
        CLIENT_NS,
        &format!("{}{}", format!("<x{declarations}>").repeat(12), "</x>".repeat(12)),
    );
    let answer = post(client, "namespace declarations", CLIENT, namespaces).await;
    assert_fault("720 namespace declarations", &answer, 400, "namespaces");
}

/// Known operations with missing or malformed fields: the operation's own answer, result
/// "invalid parameter", and nothing stored.
async fn invalid_parameters(client: &DscClient, victim: &Victim) {
    let id = &victim.id;
    let no_class = "<ns1:data><ns1:value>evil</ns1:value><ns1:instance>sms</ns1:instance></ns1:data>";
    let cases: Vec<(&str, &str, String, &str, &str)> = vec![
        (
            "getSession without replicaSet",
            CLIENT,
            envelope(
                "getSession",
                CLIENT_NS,
                &(field("replica", REPLICA) + &field("sessionID", id) + &field("ssoType", "local")),
            ),
            "getSession",
            CLIENT_NS,
        ),
        (
            "getSession with a nil sessionID",
            CLIENT,
            envelope(
                "getSession",
                CLIENT_NS,
                &(field("replica", REPLICA) + &field("replicaSet", RS) + r#"<ns1:sessionID xsi:nil="true"/>"#),
            ),
            "getSession",
            CLIENT_NS,
        ),
        (
            "changeSession with version x1",
            CLIENT,
            envelope(
                "changeSession",
                CLIENT_NS,
                &(session_fields(id)
                    + &field("version", "x1")
                    + &field("push", "false")
                    + &field("sessionLimit", "0")
                    + "<ns1:data><ns1:value>evil</ns1:value><ns1:dataClass>com.tivoli.am.eb.user-name</ns1:dataClass><ns1:instance>sms</ns1:instance></ns1:data>"),
            ),
            "changeSession",
            CLIENT_NS,
        ),
        (
            "changeSession with an item lacking dataClass",
            CLIENT,
            envelope(
                "changeSession",
                CLIENT_NS,
                &(session_fields(id) + &field("version", "1") + &field("push", "false") + no_class),
            ),
            "changeSession",
            CLIENT_NS,
        ),
        (
            "changeSession with push maybe",
            CLIENT,
            envelope(
                "changeSession",
                CLIENT_NS,
                &(session_fields(id) + &field("version", "1") + &field("push", "maybe")),
            ),
            "changeSession",
            CLIENT_NS,
        ),
        (
            "createSession with an item lacking dataClass",
            CLIENT,
            envelope(
                "createSession",
                CLIENT_NS,
                &(session_fields("hostile-new") + &field("sessionLimit", "0") + no_class),
            ),
            "createSession",
            CLIENT_NS,
        ),
        (
            "createSession over the victim with an item lacking a value",
            CLIENT,
            envelope(
                "createSession",
                CLIENT_NS,
                &(session_fields(id)
                    + &field("sessionLimit", "0")
                    + "<ns1:data><ns1:dataClass>c</ns1:dataClass><ns1:instance>sms</ns1:instance></ns1:data>"),
            ),
            "createSession",
            CLIENT_NS,
        ),
        (
            "createSession with sessionLimit many",
            CLIENT,
            envelope(
                "createSession",
                CLIENT_NS,
                &(session_fields("hostile-new") + &field("sessionLimit", "many")),
            ),
            "createSession",
            CLIENT_NS,
        ),
        (
            "createSession with sessionLimit --i64::MIN (overflowed before)",
            CLIENT,
            envelope(
                "createSession",
                CLIENT_NS,
                &(session_fields("hostile-new") + &field("sessionLimit", "--9223372036854775808")),
            ),
            "createSession",
            CLIENT_NS,
        ),
        (
            "createSession with a sessionID of 2 KB",
            CLIENT,
            envelope("createSession", CLIENT_NS, &session_fields(&"S".repeat(2048))),
            "createSession",
            CLIENT_NS,
        ),
        (
            "terminateSession without sessionID",
            CLIENT,
            envelope(
                "terminateSession",
                CLIENT_NS,
                &(field("replica", REPLICA) + &field("replicaSet", RS) + &field("level", "0")),
            ),
            "terminateSession",
            CLIENT_NS,
        ),
        (
            "terminateSession with level high",
            CLIENT,
            envelope("terminateSession", CLIENT_NS, &(session_fields(id) + &field("level", "high"))),
            "terminateSession",
            CLIENT_NS,
        ),
        (
            "idleTimeout with an empty replicaSet",
            CLIENT,
            envelope(
                "idleTimeout",
                CLIENT_NS,
                &(field("replica", REPLICA) + "<ns1:replicaSet/>" + &field("sessionID", id)),
            ),
            "idleTimeout",
            CLIENT_NS,
        ),
        (
            "joinReplicaSet with negative capabilities",
            CLIENT,
            envelope(
                "joinReplicaSet",
                CLIENT_NS,
                &(field("replica", REPLICA)
                    + &field("instance", "x:y")
                    + &field("capabilities", "-1")
                    + &field("replicaSet", RS)),
            ),
            "joinReplicaSet",
            CLIENT_NS,
        ),
        (
            "getUpdates with responseBy soon",
            CLIENT,
            envelope(
                "getUpdates",
                CLIENT_NS,
                &(field("replica", REPLICA) + &field("instance", "x:y") + &field("responseBy", "soon")),
            ),
            "getUpdates",
            CLIENT_NS,
        ),
        (
            "getUpdates with responseBy past u64",
            CLIENT,
            envelope(
                "getUpdates",
                CLIENT_NS,
                &(field("replica", REPLICA)
                    + &field("instance", "x:y")
                    + &field("responseBy", "99999999999999999999999")),
            ),
            "getUpdates",
            CLIENT_NS,
        ),
        (
            "replicaShutdown without replica",
            CLIENT,
            envelope("replicaShutdown", CLIENT_NS, ""),
            "replicaShutdown",
            CLIENT_NS,
        ),
        (
            "execute without request",
            ADMIN,
            envelope("execute", ADMIN_NS, ""),
            "execute",
            ADMIN_NS,
        ),
        (
            "execute listSessions with MaxResults lots",
            ADMIN,
            envelope(
                "execute",
                ADMIN_NS,
                &(field("request", "listSessions")
                    + "<ns1:inAttrs><ns1:attributes><ns1:name>SessionDataClass</ns1:name><ns1:values>com.tivoli.am.eb.user-name</ns1:values></ns1:attributes><ns1:attributes><ns1:name>ReplicaSet</ns1:name><ns1:values>default</ns1:values></ns1:attributes><ns1:attributes><ns1:name>MaxResults</ns1:name><ns1:values>lots</ns1:values></ns1:attributes></ns1:inAttrs>"),
            ),
            "execute",
            ADMIN_NS,
        ),
        (
            "execute terminateSession without SessionID",
            ADMIN,
            envelope(
                "execute",
                ADMIN_NS,
                &(field("request", "terminateSession")
                    + "<ns1:inAttrs><ns1:attributes><ns1:name>ReplicaSet</ns1:name><ns1:values>default</ns1:values></ns1:attributes></ns1:inAttrs>"),
            ),
            "execute",
            ADMIN_NS,
        ),
        (
            "execute terminateAllSessions with an empty user",
            ADMIN,
            envelope(
                "execute",
                ADMIN_NS,
                &(field("request", "terminateAllSessions")
                    + "<ns1:inAttrs><ns1:attributes><ns1:name>ReplicaSet</ns1:name><ns1:values>default</ns1:values></ns1:attributes><ns1:attributes><ns1:name>SessionDataValue</ns1:name><ns1:values></ns1:values></ns1:attributes></ns1:inAttrs>"),
            ),
            "execute",
            ADMIN_NS,
        ),
    ];
    for (what, path, body, operation, namespace) in cases {
        let answer = post(client, what, path, body).await;
        assert_invalid_parameter(what, &answer, operation, namespace);
    }
    // The refused createSession stored nothing.
    let got = client.get_session(REPLICA, RS, "hostile-new").await.unwrap();
    assert_eq!(got.result(), SESSION_NOT_FOUND);
}

/// Bodies over `--max-body-bytes`: HTTP 413, whether the length is declared or chunked.
async fn oversized(client: &DscClient, addr: SocketAddr) {
    let filler = "A".repeat(200 * 1024);
    let big = envelope("ping", CLIENT_NS, &field("something", &filler));
    let answer = post(client, "200 KB body", CLIENT, big.clone()).await;
    assert_fault("200 KB body", &answer, 413, "larger than 65536 bytes");
    let answer = post(client, "200 KB body (admin)", ADMIN, big.clone()).await;
    assert_fault("200 KB body (admin)", &answer, 413, "larger than 65536 bytes");
    let just_over = envelope("ping", CLIENT_NS, &field("something", &"A".repeat(MAX_BODY)));
    let answer = post(client, "just over the limit", CLIENT, just_over).await;
    assert_fault("just over the limit", &answer, 413, "larger than 65536 bytes");

    let started = Instant::now();
    let (status, answer, head) = post_chunked(addr, CLIENT, big.into_bytes());
    assert!(started.elapsed() < REQUEST_TIMEOUT, "chunked: {:?}", started.elapsed());
    assert_fault("200 KB chunked body", &(status, answer), 413, "larger than 65536 bytes");
    // The unread rest of the body makes the connection useless: the client must not reuse it.
    assert!(head.contains("\r\nconnection: close"), "{head}");

    // A declared length far over the limit is answered at once: the shim waits for no byte of
    // a body that never comes.
    let started = Instant::now();
    let (status, answer, head) = post_over_socket(
        addr,
        CLIENT,
        "Content-Length: 1073741824",
        b"<SOAP-ENV:Envelope".to_vec(),
    );
    assert!(
        started.elapsed() < REQUEST_TIMEOUT,
        "1 GB declared: {:?}",
        started.elapsed()
    );
    assert_fault("1 GB declared", &(status, answer), 413, "larger than 65536 bytes");
    assert!(head.contains("\r\nconnection: close"), "{head}");
}

/// POSTs `body` with `Transfer-Encoding: chunked` (no length declared) over a plain socket;
/// `(status, body, head)` of the answer. The shim may answer before the body is all sent.
fn post_chunked(addr: SocketAddr, path: &str, body: Vec<u8>) -> (u16, String, String) {
    let mut framed = Vec::new();
    for chunk in body.chunks(4096) {
        framed.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        framed.extend_from_slice(chunk);
        framed.extend_from_slice(b"\r\n");
    }
    framed.extend_from_slice(b"0\r\n\r\n");
    post_over_socket(addr, path, "Transfer-Encoding: chunked", framed)
}

/// POSTs over a plain socket with one framing header of our choice and the bytes that follow
/// the head; `(status, body, head)` of the answer, which may come before all bytes are sent.
/// The head comes in lower case.
fn post_over_socket(addr: SocketAddr, path: &str, framing: &str, bytes: Vec<u8>) -> (u16, String, String) {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(REQUEST_TIMEOUT)).unwrap();
    let mut writer = stream.try_clone().unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: text/xml; charset=utf-8\r\n{framing}\r\nConnection: close\r\n\r\n"
    );
    let sender = std::thread::spawn(move || {
        // Errors are expected once the shim has answered and closed.
        let _ = writer.write_all(head.as_bytes());
        for piece in bytes.chunks(4096) {
            if writer.write_all(piece).is_err() {
                return;
            }
        }
    });
    let mut raw = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
        }
        if complete_response(&raw) {
            break;
        }
    }
    let _ = stream.shutdown(std::net::Shutdown::Both);
    let _ = sender.join();
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP answer to the request over a socket: {text:?}"));
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    (status, body.to_string(), head.to_ascii_lowercase())
}

/// A response with `Content-Length` whose body has fully arrived.
fn complete_response(raw: &[u8]) -> bool {
    let text = String::from_utf8_lossy(raw);
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        return false;
    };
    head.lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse::<usize>().ok())?
        })
        .is_some_and(|n| body.len() >= n)
}

async fn after_the_attack(shim: &mut Shim, client: &DscClient, victim: &Victim) {
    assert!(shim.is_running(), "the shim died:\n{}", shim.logs());
    assert_untouched(client, victim).await;
    // Still serving everything else too.
    assert_eq!(client.ping().await.unwrap().result(), SUCCESS);
    let logs = shim.logs();
    assert!(!logs.contains("panicked"), "{logs}");
    assert!(!logs.contains("root:x:0"), "{logs}");
}

async fn the_whole_attack(mut shim: Shim) {
    let client = shim.client();
    let victim = create_victim(&client, "hostile-victim-6c4QCnPAKRTW=").await;
    malformed_messages(&client).await;
    entity_tricks(&client).await;
    bombs(&client, &victim).await;
    invalid_parameters(&client, &victim).await;
    oversized(&client, shim.addr).await;
    after_the_attack(&mut shim, &client, &victim).await;
}

#[tokio::test]
async fn hostile_requests_on_the_embedded_store() {
    let shim = Shim::start(&["--max-body-bytes", &MAX_BODY.to_string()], &[]);
    the_whole_attack(shim).await;
}

#[tokio::test]
async fn hostile_requests_on_redis() {
    let redis = RedisServer::start();
    let shim = Shim::start(
        &["--max-body-bytes", &MAX_BODY.to_string()],
        &[("REDSESS_REDIS_URL", &redis.url())],
    );
    the_whole_attack(shim).await;
}

/// Bodies near the default limit (1 MiB) that are cheap to send and must stay cheap to refuse:
/// 100,000 tiny elements, and 50,000 attributes on one element (which took 17 s to parse in a
/// debug build before attributes were bounded).
#[tokio::test]
async fn large_bodies_under_the_limit() {
    let mut shim = Shim::start(&[], &[]);
    let client = shim.client();
    let victim = create_victim(&client, "hostile-victim-large=").await;

    let deep = envelope(
        "getSession",
        CLIENT_NS,
        &format!(
            "{}{}{}",
            session_fields(&victim.id),
            "<a>".repeat(10_000),
            "</a>".repeat(10_000)
        ),
    );
    let answer = post(&client, "10,000 nested elements", CLIENT, deep).await;
    assert_fault("10,000 nested elements", &answer, 400, "deeper than 16 levels");

    let tiny = "<a/>".repeat(100_000);
    let over = envelope("getSession", CLIENT_NS, &(session_fields(&victim.id) + &tiny));
    assert!(over.len() < 1024 * 1024);
    let answer = post(&client, "100,000 tiny elements", CLIENT, over).await;
    assert_fault("100,000 tiny elements", &answer, 400, "more than 100000 elements");

    // Just under the element limit the request is served, and answers the same session.
    let under = envelope(
        "getSession",
        CLIENT_NS,
        &(session_fields(&victim.id) + &"<a/>".repeat(99_000)),
    );
    let (status, answer) = post(&client, "99,000 tiny elements", CLIENT, under).await;
    assert_eq!(status, 200, "{answer}");
    let response = soap::read_operation(answer.as_bytes()).unwrap();
    let ret = response.child("getSessionReturn").unwrap();
    assert_eq!(ret.child("result").unwrap().text, SUCCESS.to_string());
    assert_eq!(ret.children_named("data").count(), victim.items.len());

    let after = format!(
        r#"<SOAP-ENV:Envelope xmlns:SOAP-ENV="{ENV_NS}"><SOAP-ENV:Body><ns1:ping xmlns:ns1="{CLIENT_NS}"/>{tiny}</SOAP-ENV:Body></SOAP-ENV:Envelope>"#
    );
    let answer = post(&client, "100,000 elements after the operation", CLIENT, after).await;
    assert_fault(
        "100,000 elements after the operation",
        &answer,
        400,
        "more than 100000 elements",
    );

    let attrs: String = (0..50_000).map(|i| format!(" a{i}=\"\"")).collect();
    let many =
        envelope("ping", CLIENT_NS, &field("something", "0")).replacen("<ns1:ping ", &format!("<ns1:ping{attrs} "), 1);
    assert!(many.len() < 1024 * 1024);
    let answer = post(&client, "50,000 attributes", CLIENT, many).await;
    assert_fault("50,000 attributes", &answer, 400, "more than 64 attributes");

    let declarations: String = (0..50_000).map(|i| format!(" xmlns:p{i}=\"u\"")).collect();
    let many = envelope("ping", CLIENT_NS, &field("something", "0")).replacen(
        "<SOAP-ENV:Envelope ",
        &format!("<SOAP-ENV:Envelope{declarations} "),
        1,
    );
    assert!(many.len() < 1024 * 1024);
    let answer = post(&client, "50,000 namespace declarations", CLIENT, many).await;
    assert_fault("50,000 namespace declarations", &answer, 400, "more than 64 attributes");

    after_the_attack(&mut shim, &client, &victim).await;
}

/// Opens a connection that declares a 1 000-byte body and sends 10 bytes of it, then nothing:
/// the slow sender. The stream stays open while the value lives.
fn slow_sender(addr: SocketAddr) -> TcpStream {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(REQUEST_TIMEOUT)).unwrap();
    let head = format!(
        "POST {CLIENT} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: text/xml; charset=utf-8\r\nContent-Length: 1000\r\n\r\n<SOAP-ENV:"
    );
    stream.write_all(head.as_bytes()).unwrap();
    stream
}

/// What the shim answers a slow sender, read to the end of the answer.
fn answer_to(mut stream: TcpStream) -> String {
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    while !complete_response(&raw) {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&raw).into_owned()
}

fn fault_count(shim: &Shim, cause: &str) -> u64 {
    shim.metric(&format!("redsess_shim_faults_total{{cause=\"{cause}\"}}"))
}

/// A client that starts a body and never finishes it is answered 408 once `--body-timeout`
/// is up, and the connection is closed: it holds nothing longer.
#[tokio::test]
async fn a_slow_body_is_answered_408_within_the_body_timeout() {
    let shim = Shim::start(&["--body-timeout", "500ms"], &[]);
    let started = Instant::now();
    let answer = tokio::task::spawn_blocking({
        let addr = shim.addr;
        move || answer_to(slow_sender(addr))
    })
    .await
    .unwrap();
    let took = started.elapsed();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(
        answer.to_ascii_lowercase().contains("\r\nconnection: close"),
        "{answer}"
    );
    assert!(answer.contains("did not arrive within 500ms"), "{answer}");
    assert!(
        took >= Duration::from_millis(450) && took < Duration::from_secs(3),
        "{took:?}"
    );
    assert_eq!(fault_count(&shim, "slow_body"), 1);
}

/// Past `--max-in-flight` a request is refused at once with 503 (counted), instead of waiting
/// behind the others; the probes still answer; once the others end, requests go through again.
#[tokio::test]
async fn past_the_in_flight_limit_requests_are_refused_at_once() {
    // A body timeout far beyond the test: the slow senders hold their places until they hang up.
    let shim = Shim::start(&["--max-in-flight", "2", "--body-timeout", "60s"], &[]);
    let client = shim.client();
    assert_eq!(client.ping().await.unwrap().result(), SUCCESS);
    // More slow senders than places, given time to take them before any other request comes
    // (a request the shim takes first would leave a place to the next one): two hold places,
    // the others are refused.
    let holding: Vec<TcpStream> = (0..4).map(|_| slow_sender(shim.addr)).collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    let refused = loop {
        let (status, answer) = post(&client, "a third request", CLIENT, envelope("ping", CLIENT_NS, "")).await;
        if status == 503 || Instant::now() > deadline {
            break (status, answer);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(refused.0, 503, "{}", refused.1);
    let (code, message) = soap::read_fault(refused.1.as_bytes()).expect("a SOAP fault");
    assert_eq!(code, "SOAP-ENV:Server");
    assert!(message.contains("--max-in-flight"), "{message}");
    assert!(fault_count(&shim, "overloaded") >= 1);
    assert_eq!(
        shim.http_get("/healthz").expect("/healthz").0,
        200,
        "the probes stay outside the limit"
    );
    // The slow senders hang up: their places are free again.
    drop(holding);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, _) = post(&client, "after the slow ones", CLIENT, envelope("ping", CLIENT_NS, "")).await;
        if status == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still refused after the slow senders hung up"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Concurrent idle decisions: one WebSEAL's idleTimeout (through shim `a`) races another's
/// read of the same idle session (through shim `b`). Whatever the order, a session the read
/// found was just active, so it must outlive the idle decision.
async fn idle_decisions_race_reads(a: &Shim, b: &Shim) {
    const SESSIONS: usize = 60;
    let ca = a.client();
    for n in 0..SESSIONS {
        let items = [
            item("com.tivoli.am.eb.user-name", "sms", Some(&format!("user-{n}"))),
            item("com.tivoli.am.webseal.inactivity-timeout", "webseal", Some("0x4")),
        ];
        let created = ca
            .create_session(REPLICA, RS, &format!("idle-{n}"), 0, &items)
            .await
            .unwrap();
        assert_eq!(created.result(), SUCCESS);
    }
    // Idle for the idle decision (4 s less 2 s of skew), still stored (4 s plus 2 s).
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let mut races = tokio::task::JoinSet::new();
    for n in 0..SESSIONS {
        let (ca, cb) = (a.client(), b.client());
        races.spawn(async move {
            let id = format!("idle-{n}");
            // Each read a little later than the last, so that some land inside the idle
            // decision, between its read and its delete.
            let late_read = async {
                tokio::time::sleep(Duration::from_micros(25 * n as u64)).await;
                cb.get_session(REPLICA, RS, &id).await
            };
            let (_, read) = tokio::join!(ca.idle_timeout(REPLICA, RS, &id), late_read);
            (id, read.unwrap().result() == SUCCESS)
        });
    }
    let mut read = 0;
    for (id, found) in races.join_all().await {
        if found {
            read += 1;
            let after = ca.get_session(REPLICA, RS, &id).await.unwrap();
            assert_eq!(after.result(), SUCCESS, "{id} was read, then ended as idle");
        }
    }
    eprintln!("{read} of {SESSIONS} sessions were read before their idle decision ended them");
}

#[tokio::test]
async fn idle_decisions_racing_reads_on_the_embedded_store() {
    let shim = Shim::start(&["--clock-skew", "2s"], &[]);
    idle_decisions_race_reads(&shim, &shim).await;
}

#[tokio::test]
async fn idle_decisions_racing_reads_through_two_shims_on_redis() {
    let redis = RedisServer::start();
    let env = [("REDSESS_REDIS_URL", redis.url())];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let a = Shim::start(&["--clock-skew", "2s"], &env);
    let b = Shim::start(&["--clock-skew", "2s"], &env);
    idle_decisions_race_reads(&a, &b).await;
}

/// A flood of logins on the embedded store stays within `--max-sessions`: the least recently
/// used sessions go, counted, and the newest stay.
#[tokio::test]
async fn a_flood_of_sessions_stays_within_max_sessions() {
    let shim = Shim::start(&["--max-sessions", "100"], &[]);
    let client = shim.client();
    for n in 0..300 {
        let items = [item("com.tivoli.am.eb.user-name", "sms", Some(&format!("flood-{n}")))];
        let created = client
            .create_session(REPLICA, RS, &format!("flood-{n}"), 0, &items)
            .await
            .unwrap();
        assert_eq!(created.result(), SUCCESS, "flood-{n}");
    }
    assert_eq!(shim.metric("redsess_shim_sessions_evicted_total"), 200);
    assert_eq!(shim.metric("redsess_shim_embedded_sessions"), 100);
    for (n, found) in [(0, false), (199, false), (200, true), (299, true)] {
        let got = client.get_session(REPLICA, RS, &format!("flood-{n}")).await.unwrap();
        assert_eq!(got.result() == SUCCESS, found, "flood-{n}");
    }
}

/// Floods of made-up names grow nothing without bound: new replica sets past
/// `--max-replica-sets` and new replicas past `--max-replicas` are refused ("replica set not
/// configured"), while the ones admitted go on.
async fn name_floods_are_bounded(shim: &Shim) {
    const NOT_CONFIGURED: u32 = 952467762;
    let client = shim.client();
    let mut admitted = Vec::new();
    for n in 0..20 {
        let set = format!("flood-set-{n}");
        let r = client
            .join_replica_set(&format!("web-{n}"), &format!("u{n}:web-{n}"), 15, &set)
            .await
            .unwrap();
        match r.result() {
            SUCCESS => admitted.push(set),
            NOT_CONFIGURED => {}
            other => panic!("{set}: {other}"),
        }
    }
    assert_eq!(admitted.len(), 4, "{admitted:?}");
    let poll = client
        .get_updates("web-x", "ux:web-x", Some("flood-set-99"), 1)
        .await
        .unwrap();
    assert_eq!(poll.result(), NOT_CONFIGURED, "a poll cannot make a fifth set either");
    let again = client
        .join_replica_set("web-0b", "u0b:web-0b", 15, &admitted[0])
        .await
        .unwrap();
    assert_eq!(again.result(), SUCCESS, "an admitted set takes members");

    let mut joined = 0;
    for n in 0..20 {
        let r = client
            .join_replica_set(&format!("member-{n}"), &format!("m{n}:member-{n}"), 15, &admitted[1])
            .await
            .unwrap();
        match r.result() {
            SUCCESS => joined += 1,
            NOT_CONFIGURED => {}
            other => panic!("member-{n}: {other}"),
        }
    }
    // web-1 joined it first: three members in all.
    assert_eq!(joined, 2);
    let info = client
        .execute("getReplicaSetInfo", &[("ReplicaSet", admitted[1].as_str())])
        .await
        .unwrap();
    assert_eq!(info.groups().len(), 3, "{:?}", info.groups());
}

#[tokio::test]
async fn name_floods_are_bounded_on_the_embedded_store() {
    let shim = Shim::start(&["--max-replica-sets", "4", "--max-replicas", "3"], &[]);
    name_floods_are_bounded(&shim).await;
}

#[tokio::test]
async fn name_floods_are_bounded_on_redis() {
    let redis = RedisServer::start();
    let shim = Shim::start(
        &["--max-replica-sets", "4", "--max-replicas", "3"],
        &[("REDSESS_REDIS_URL", &redis.url())],
    );
    name_floods_are_bounded(&shim).await;
}
