//! SOAP parse and write of the largest DSC messages: a createSession carrying a WebSEAL
//! login's full item set, and the getSession answer that hands it back (written by the shim,
//! read back by a client); and the record the Redis store keeps for that login, plain and
//! sealed (AES-256-GCM), so the cost of sealing reads as a ratio to the plain record in the
//! same run; and the plain envelope reader beside quick-xml, on requests laid out as the
//! benchmark sends them and as WebSEAL indents them. Run with
//! `cargo bench -p redsess-shim --bench soap`; each figure is per message.

use base64::Engine;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use redsess_shim::client::Reply;
use redsess_shim::dsc::{self, AnswerItems, DataItem, Endpoint, Request, ResultCode};
use redsess_shim::soap;
use redsess_shim::store::record::{self, ItemsMarkup};
use redsess_shim::store::sealing::{new_key_line, KeyRing, Mode, Sealing};
use std::hint::black_box;

// The allocator the shim's binary runs with, so that these figures are the binary's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The items of one login, as bench/load sends them: a credential of 1 536 random bytes in
/// base64 (2 048 characters, as large as a captured one) and 26 other items with nil, empty,
/// boolean, hex time and uuid values.
fn login_items() -> Vec<DataItem> {
    // A fixed pseudo-random sequence, so every run measures the same message.
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let credential: Vec<u8> = (0..1536).map(|_| next() as u8).collect();
    let credential = base64::engine::general_purpose::STANDARD.encode(credential);
    let item = |class: &str, instance: &str, value: Option<&str>| DataItem {
        data_class: class.to_string().into(),
        instance: instance.to_string().into(),
        value: value.map(str::to_string),
    };
    let (sms, web) = ("sms", "webseal");
    vec![
        item("com.tivoli.am.eb.credential", sms, Some(&credential)),
        item("com.tivoli.am.eb.auth-type", sms, Some("formsPassword")),
        item("com.tivoli.am.webseal.orig-auth-type", web, None),
        item("com.tivoli.am.webseal.mpa-type", web, Some("0x0")),
        item("com.tivoli.am.webseal.lifetime-extended", web, Some("false")),
        item("com.tivoli.am.webseal.refresh-failover", web, Some("false")),
        item("com.tivoli.am.webseal.orig-session-key", web, None),
        item("com.tivoli.am.webseal.inactivity-timeout", web, Some("0xe10")),
        item("com.tivoli.am.webseal.custom-inactivity-timeout", web, Some("false")),
        item("com.tivoli.am.webseal.custom-lifetime-timeout", web, Some("false")),
        item("com.tivoli.am.webseal.otp", web, None),
        item("com.tivoli.am.webseal.auth-data", web, None),
        item("com.tivoli.am.webseal.cookie-jar.stored-cookies", web, Some("")),
        item(
            "com.tivoli.am.webseal.cookie-jar.managed-cookies",
            web,
            Some("reset#;;;"),
        ),
        item("com.tivoli.am.eb.user-name", sms, Some("uA0000004711@bench.example")),
        item(
            "com.tivoli.am.sms.user-uuid",
            sms,
            Some("5f0c2a4e-8d1b-4c7a-9e3f-2b6d8a1c4e70"),
        ),
        item("com.tivoli.am.eb.expiry", sms, Some("0x69263a80")),
        item(
            "com.tivoli.am.sms.concurrent-session-key-class",
            sms,
            Some("com.tivoli.am.eb.user-name"),
        ),
        item("com.tivoli.am.sms.concurrent-session-key-instance", sms, Some("sms")),
        item(
            "com.tivoli.am.sms.session-index",
            sms,
            Some("b7e1d3c2-4a5f-4e6b-8c9d-0a1b2c3d4e5f"),
        ),
        item("com.tivoli.am.eb.version", sms, Some("0x1")),
        item("com.tivoli.am.sms.class", sms, Some("com.tivoli.am.eb")),
        item("com.tivoli.am.sms.creation-time", sms, Some("0x69261e60")),
        item("com.tivoli.am.eb.is-inactive", sms, Some("false")),
        item("com.tivoli.am.eb.last-access", sms, Some("0x69261e64")),
        item("com.tivoli.am.webseal.multi-domain-session", web, Some("false")),
        item("com.tivoli.am.webseal.flush-sms-session", web, Some("false")),
    ]
}

const ENVELOPE_OPEN: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<SOAP-ENV:Envelope xmlns:SOAP-ENV="http://schemas.xmlsoap.org/soap/envelope/" xmlns:xsd="http://www.w3.org/2001/XMLSchema" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><SOAP-ENV:Body>"#;
const ENVELOPE_CLOSE: &str = "</SOAP-ENV:Body></SOAP-ENV:Envelope>\n";
const SESSION_ID: &str = "Qm9uam91ciBsZSBiZW5jaCBkZSByZWRzZXNzIQ0000004711=";

/// A createSession as WebSEAL sends it (each item with its changePolicy).
fn create_request(items: &[DataItem]) -> String {
    let mut xml = String::from(ENVELOPE_OPEN);
    xml.push_str(r#"<ns1:createSession xmlns:ns1="http://sms.am.tivoli.com"><ns1:replica>bench-webseald</ns1:replica><ns1:replicaSet>default</ns1:replicaSet>"#);
    xml.push_str(&format!(
        "<ns1:sessionID>{SESSION_ID}</ns1:sessionID><ns1:sessionLimit>0</ns1:sessionLimit>"
    ));
    for item in items {
        xml.push_str("<ns1:data>");
        match &item.value {
            Some(v) => xml.push_str(&format!("<ns1:value>{v}</ns1:value>")),
            None => xml.push_str(r#"<ns1:value xsi:nil="true"/>"#),
        }
        xml.push_str(&format!(
            "<ns1:dataClass>{}</ns1:dataClass><ns1:instance>{}</ns1:instance><ns1:changePolicy>1</ns1:changePolicy></ns1:data>",
            item.data_class, item.instance
        ));
    }
    xml.push_str("</ns1:createSession>");
    xml.push_str(ENVELOPE_CLOSE);
    xml
}

/// `body` as WebSEAL lays a request out: each element on a line of its own, indented, with
/// whitespace only between tags that had nothing between them (never inside a leaf).
fn indented(body: &str) -> String {
    let mut out = String::with_capacity(body.len() * 2);
    let (mut depth, mut after_start) = (0usize, false);
    let mut rest = body;
    while let Some(at) = rest.find('<') {
        let (text, tail) = rest.split_at(at);
        let (tag, after) = tail.split_at(tail.find('>').expect("a whole tag") + 1);
        let (closing, declaration) = (tag.starts_with("</"), tag.starts_with("<?"));
        if closing {
            depth -= 1;
        }
        out.push_str(text);
        if text.is_empty() && !out.is_empty() && !(closing && after_start) {
            out.push('\n');
            out.push_str(&"  ".repeat(depth));
        }
        out.push_str(tag);
        after_start = !closing && !declaration && !tag.ends_with("/>");
        if after_start {
            depth += 1;
        }
        rest = after;
    }
    out.push_str(rest);
    out
}

fn get_request() -> String {
    format!(
        r#"{ENVELOPE_OPEN}<ns1:getSession xmlns:ns1="http://sms.am.tivoli.com"><ns1:replica>bench-webseald</ns1:replica><ns1:replicaSet>default</ns1:replicaSet><ns1:sessionID>{SESSION_ID}</ns1:sessionID><ns1:ssoType>local</ns1:ssoType><ns1:ssoSource xsi:nil="true"/></ns1:getSession>{ENVELOPE_CLOSE}"#
    )
}

fn get_answer(items: &[DataItem]) -> dsc::Response {
    dsc::Response::GetSession {
        result: ResultCode::Success,
        version: 7,
        data: AnswerItems::Items(items.to_vec()),
    }
}

/// What the shim does with a request body before the store sees it.
fn parse(body: &[u8]) -> Request {
    let op = soap::read_operation(body).expect("a SOAP envelope");
    dsc::parse_request(Endpoint::Client, &op).expect("a DSC request")
}

/// What a client does with a getSession answer: the items back.
fn read_answer(body: &[u8]) -> Vec<DataItem> {
    let op = soap::read_operation(body).expect("a SOAP envelope");
    let ret = op
        .child("getSessionReturn")
        .expect("getSessionReturn")
        .clone()
        .into_owned();
    Reply { ret }.data()
}

fn benches(c: &mut Criterion) {
    let items = login_items();
    let create = create_request(&items);
    let get = get_request();
    let answer = get_answer(&items);
    let answer_xml = answer.to_xml();

    // The messages must mean what they say, or the figures measure an error path.
    match parse(create.as_bytes()) {
        Request::CreateSession(c) => assert_eq!(c.data, items),
        other => panic!("not a createSession: {other:?}"),
    }
    assert!(matches!(parse(get.as_bytes()), Request::GetSession(_)));
    assert_eq!(read_answer(answer_xml.as_bytes()), items);

    let mut parse_group = c.benchmark_group("parse");
    for (name, body) in [("createSession request", &create), ("getSession request", &get)] {
        parse_group.throughput(Throughput::Bytes(body.len() as u64));
        parse_group.bench_with_input(BenchmarkId::new(name, body.len()), body.as_bytes(), |b, body| {
            b.iter(|| parse(black_box(body)))
        });
    }
    parse_group.throughput(Throughput::Bytes(answer_xml.len() as u64));
    parse_group.bench_with_input(
        BenchmarkId::new("getSession answer (client)", answer_xml.len()),
        answer_xml.as_bytes(),
        |b, body| b.iter(|| read_answer(black_box(body))),
    );
    parse_group.finish();

    // The two envelope readers side by side: the plain one, and quick-xml as its baseline.
    let mut reader_group = c.benchmark_group("envelope");
    let create_indented = indented(&create);
    assert_eq!(
        parse(create_indented.as_bytes()),
        parse(create.as_bytes()),
        "{create_indented}"
    );
    for (name, body) in [
        ("createSession request", &create),
        ("createSession request, indented", &create_indented),
        ("getSession request", &get),
    ] {
        assert_eq!(
            soap::read_plain(body.as_bytes()).map(Ok),
            Some(soap::read_by_parser(body.as_bytes()))
        );
        reader_group.bench_with_input(
            BenchmarkId::new(format!("{name}, plain"), body.len()),
            body.as_bytes(),
            |b, body| b.iter(|| soap::read_plain(black_box(body))),
        );
        reader_group.bench_with_input(
            BenchmarkId::new(format!("{name}, quick-xml"), body.len()),
            body.as_bytes(),
            |b, body| b.iter(|| soap::read_by_parser(black_box(body))),
        );
    }
    reader_group.finish();

    let mut write_group = c.benchmark_group("write");
    write_group.throughput(Throughput::Bytes(answer_xml.len() as u64));
    write_group.bench_function(BenchmarkId::new("getSession answer", answer_xml.len()), |b| {
        b.iter(|| black_box(&answer).to_xml())
    });
    // What the Redis store's getSession does after its read: check the record, then write
    // the answer from it.
    let plain = record::encode_items(&items);
    let from_record = |plain: &[u8]| dsc::Response::GetSession {
        result: ResultCode::Success,
        version: 7,
        data: AnswerItems::Written(ItemsMarkup::write(plain, &[]).unwrap()),
    };
    assert_eq!(from_record(&plain).to_xml(), answer_xml);
    write_group.bench_function(
        BenchmarkId::new("getSession answer from the record", answer_xml.len()),
        |b| b.iter(|| from_record(black_box(&plain)).to_xml()),
    );
    write_group.finish();

    // The stored record: what getSession decodes and createSession encodes, plain and sealed.
    let keys = KeyRing::parse("bench", &new_key_line(Some("bench"))).unwrap();
    let sealing = Sealing::new(Mode::Sealed, Some(keys));
    let sealed = sealing.seal("default", "S1", plain.clone());
    assert_eq!(
        record::decode_items(&sealing.open("default", "S1", sealed.clone()).unwrap()).unwrap(),
        items
    );
    let mut record_group = c.benchmark_group("record");
    record_group.bench_function(BenchmarkId::new("encode", plain.len()), |b| {
        b.iter(|| record::encode_items(black_box(&items)))
    });
    record_group.bench_function(BenchmarkId::new("encode+seal", sealed.len()), |b| {
        b.iter(|| sealing.seal("default", "S1", record::encode_items(black_box(&items))))
    });
    record_group.bench_function(BenchmarkId::new("decode", plain.len()), |b| {
        b.iter(|| record::decode_items(black_box(&plain)).unwrap())
    });
    record_group.bench_function(BenchmarkId::new("open+decode", sealed.len()), |b| {
        b.iter(|| record::decode_items(&sealing.open("default", "S1", black_box(sealed.clone())).unwrap()).unwrap())
    });
    record_group.finish();
}

criterion_group!(soap_benches, benches);
criterion_main!(soap_benches);
