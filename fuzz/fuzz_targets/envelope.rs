//! Feeds arbitrary bytes to the envelope parser as a request body would arrive, then to the
//! operation parser of both endpoints, and writes the answer the server would send. Besides
//! "never panics", it checks that what the shim writes reads back unchanged: faults keep their
//! message, refusals keep their shape, and session items keep nil, empty and every character;
//! and the plain reader reads every body it takes as the parser does.

#![no_main]

use libfuzzer_sys::fuzz_target;
use redsess_shim::dsc::{self, AnswerItems, DataItem, Endpoint, Request, Response, ResultCode};
use redsess_shim::store::record::{self, ItemsMarkup};
use redsess_shim::soap::{self, FaultCode};

fuzz_target!(|data: &[u8]| {
    // Where the plain reader reads a body at all, it reads what the parser does.
    if let Some(plain) = soap::read_plain(data) {
        assert_eq!(Ok(plain), soap::read_by_parser(data), "the plain reader and the parser disagree");
    }
    let op = match soap::read_operation(data) {
        Ok(op) => op,
        Err(e) => {
            fault_reads_back(&e.to_string());
            return;
        }
    };
    for endpoint in [Endpoint::Client, Endpoint::Admin] {
        match dsc::parse_request(endpoint, &op) {
            Ok(request) => {
                answer_reads_back(request.operation(), endpoint);
                match &request {
                    Request::CreateSession(c) => items_read_back(&c.data),
                    Request::ChangeSession(c) => items_read_back(&c.data),
                    _ => {}
                }
            }
            Err(e) => match e.known_operation() {
                Some(operation) => answer_reads_back(operation, endpoint),
                None => fault_reads_back(&e.to_string()),
            },
        }
    }
});

fn fault_reads_back(message: &str) {
    let xml = soap::fault(FaultCode::Client, message);
    let (code, string) = soap::read_fault(xml.as_bytes()).expect("a written fault reads back");
    assert_eq!(code, "SOAP-ENV:Client");
    assert_eq!(string, message);
}

/// The refusal (result InvalidParameter) that the server answers for `operation`.
fn answer_reads_back(operation: &'static str, endpoint: Endpoint) {
    let xml = Response::refusal(operation, ResultCode::InvalidParameter).to_xml();
    let answer = soap::read_operation(xml.as_bytes()).expect("a written answer reads back");
    assert_eq!(answer.name, format!("{operation}Response"));
    assert_eq!(answer.namespace.as_deref(), Some(endpoint.namespace()));
}

/// Session items, as getSession would answer them, read back unchanged.
fn items_read_back(items: &[DataItem]) {
    let written = Response::GetSession {
        result: ResultCode::Success,
        version: 1,
        data: AnswerItems::Items(items.to_vec()),
    }
    .to_xml();
    // The Redis store's answer, written from the record, says the same.
    let stored = ItemsMarkup::write(&record::encode_items(items), &[]).expect("an encoded record reads back");
    let from_record = Response::GetSession {
        result: ResultCode::Success,
        version: 1,
        data: AnswerItems::Written(stored),
    }
    .to_xml();
    assert_eq!(from_record, written);
    let xml = written;
    let answer = soap::read_operation(xml.as_bytes()).expect("a written getSession answer reads back");
    let ret = answer.child("getSessionReturn").expect("getSessionReturn");
    let read: Vec<DataItem> = ret
        .children_named("data")
        .map(|d| DataItem {
            data_class: d.child("dataClass").map(|e| e.text.to_string()).unwrap_or_default().into(),
            instance: d.child("instance").map(|e| e.text.to_string()).unwrap_or_default().into(),
            value: d.child("value").filter(|v| !v.nil).map(|v| v.text.to_string()),
        })
        .collect();
    assert_eq!(read, items);
}
