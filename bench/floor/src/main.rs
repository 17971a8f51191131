//! The floor `bench/load` measures the shim against: what any DSC shim on Redis must pay per
//! request, and nothing more. Same HTTP stack (axum on axum-server, tokio), Redis client
//! (a `ConnectionManager`) and allocator (mimalloc) as the shim. Per request it reads the
//! body, finds the few values the operation's Redis work needs by searching the bench's own
//! messages (no XML parsing), does the least Redis work the operation needs in one round trip,
//! and answers with a fixed answer the shim gave to the same request (captured by bench/load
//! before the runs), so the answer is correct and of the real size:
//!
//! - getSession: one `HGET` of the stored record, in the shim's own keys (the sessions the
//!   shim seeded); the found or the not-found answer. `--get-fields` makes it one `HMGET` of
//!   the fields named instead.
//! - changeSession: one script that compares the version and writes the next one with the
//!   changed item; the success or the version-mismatch answer.
//! - createSession: one script that refuses an ID in use, stores the items with an expiry and
//!   indexes the session under its user (what a concurrent-session limit needs), in keys of
//!   its own (`redsess-floor:`); the success or the ID-in-use answer.
//!
//! Not part of the product: it checks nothing, authenticates no one and keeps no rule.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use bytes::Bytes;
use clap::Parser;
use memchr::memmem;
use redis::aio::ConnectionManager;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
struct Args {
    /// Where to listen.
    #[arg(long, default_value = "127.0.0.1:9444")]
    listen: SocketAddr,
    /// The Redis the shim under measure uses.
    #[arg(long, default_value = "redis://127.0.0.1:6379")]
    redis_url: String,
    /// The shim's key prefix (its sessions are read under it).
    #[arg(long, default_value = "redsess:")]
    key_prefix: String,
    /// A directory holding the answers: get.xml, get-missing.xml, change.xml,
    /// change-mismatch.xml, create.xml, create-in-use.xml.
    #[arg(long)]
    answers: PathBuf,
    /// Runtime worker threads (0: one per CPU, as the shim's default).
    #[arg(long, default_value_t = 0)]
    worker_threads: usize,
    /// The session fields getSession reads: `d` alone is the least any layout needs; the
    /// shim's own list (`v,d,e,i,t,xv,x`) measures what its layout costs before any of its
    /// rules (one HMGET instead of one HGET).
    #[arg(long, value_delimiter = ',', default_value = "d")]
    get_fields: Vec<String>,
}

struct Answers {
    get: Bytes,
    get_missing: Bytes,
    change: Bytes,
    change_mismatch: Bytes,
    create: Bytes,
    create_in_use: Bytes,
}

#[derive(Clone)]
struct Floor {
    redis: ConnectionManager,
    key_prefix: std::sync::Arc<str>,
    answers: std::sync::Arc<Answers>,
    change: std::sync::Arc<redis::Script>,
    create: std::sync::Arc<redis::Script>,
    get_fields: std::sync::Arc<[String]>,
}

const CHANGE: &str = r#"
if redis.call('HGET', KEYS[1], 'v') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'v', tostring(tonumber(ARGV[1]) + 1), 'floor', ARGV[2])
return 1
"#;

const CREATE: &str = r#"
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'd', ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[4])
return 1
"#;

/// The floor's sessions live an hour: long enough for any run.
const CREATED_TTL_MS: u64 = 3_600_000;

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if args.worker_threads > 0 {
        runtime.worker_threads(args.worker_threads);
    }
    runtime.enable_all().build()?.block_on(serve(args))
}

async fn serve(args: Args) -> anyhow::Result<()> {
    let read = |name: &str| -> anyhow::Result<Bytes> {
        let path = args.answers.join(name);
        Ok(std::fs::read(&path)
            .with_context(|| format!("cannot read {}", path.display()))?
            .into())
    };
    let answers = Answers {
        get: read("get.xml")?,
        get_missing: read("get-missing.xml")?,
        change: read("change.xml")?,
        change_mismatch: read("change-mismatch.xml")?,
        create: read("create.xml")?,
        create_in_use: read("create-in-use.xml")?,
    };
    let client = redis::Client::open(args.redis_url.as_str()).context("--redis-url")?;
    let redis = ConnectionManager::new(client).await.context("cannot reach Redis")?;
    let floor = Floor {
        redis,
        key_prefix: args.key_prefix.as_str().into(),
        answers: answers.into(),
        change: redis::Script::new(CHANGE).into(),
        create: redis::Script::new(CREATE).into(),
        get_fields: args.get_fields.into(),
    };
    let app = Router::new()
        .route("/DSess/services/DSess", post(answer))
        .route("/readyz", axum::routing::get(|| async { "ready\n" }))
        .with_state(floor);
    axum_server::bind(args.listen).serve(app.into_make_service()).await?;
    Ok(())
}

async fn answer(State(floor): State<Floor>, headers: HeaderMap, body: Bytes) -> Response {
    let action = headers.get("soapaction").map(|v| v.as_bytes()).unwrap_or_default();
    let outcome = match action.trim_ascii().trim_ascii_start() {
        b"\"getSession\"" => get(&floor, &body).await,
        b"\"changeSession\"" => change(&floor, &body).await,
        b"\"createSession\"" => create(&floor, &body).await,
        _ => {
            return (
                StatusCode::BAD_REQUEST,
                "the floor answers getSession, changeSession and createSession\n",
            )
                .into_response()
        }
    };
    match outcome {
        Ok(answer) => (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/xml; charset=utf-8"),
            )],
            answer,
        )
            .into_response(),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, format!("{e}\n")).into_response(),
    }
}

#[derive(Debug)]
enum FloorError {
    Request(&'static str),
    Redis(redis::RedisError),
}

impl std::fmt::Display for FloorError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FloorError::Request(what) => write!(f, "the request has no {what}"),
            FloorError::Redis(e) => write!(f, "Redis: {e}"),
        }
    }
}

impl From<redis::RedisError> for FloorError {
    fn from(e: redis::RedisError) -> Self {
        FloorError::Redis(e)
    }
}

/// The text of the first element named `name` (in any namespace prefix).
fn element<'a>(body: &'a [u8], name: &'static str) -> Result<&'a [u8], FloorError> {
    let open = format!(":{name}>");
    let start = memmem::find(body, open.as_bytes()).ok_or(FloorError::Request(name))? + open.len();
    let len = memchr::memchr(b'<', &body[start..]).ok_or(FloorError::Request(name))?;
    Ok(&body[start..start + len])
}

/// Every `data` element of the request, as one slice.
fn items(body: &[u8]) -> Result<&[u8], FloorError> {
    let start = memmem::find(body, b"<ns1:data>").ok_or(FloorError::Request("data"))?;
    let end = memmem::rfind(body, b"</ns1:data>").ok_or(FloorError::Request("data"))? + b"</ns1:data>".len();
    Ok(&body[start..end])
}

/// The value of the user-name item (the bench sends each item's value before its class).
fn user(body: &[u8]) -> Result<&[u8], FloorError> {
    let class = memmem::find(body, b">com.tivoli.am.eb.user-name<").ok_or(FloorError::Request("user name"))?;
    let open = memmem::rfind(&body[..class], b":value>").ok_or(FloorError::Request("user name"))? + b":value>".len();
    let len = memchr::memchr(b'<', &body[open..]).ok_or(FloorError::Request("user name"))?;
    Ok(&body[open..open + len])
}

/// A key in the shim's layout: `<prefix><kind>:{<len>:<replica set>:<name>}`.
fn key(prefix: &str, kind: &str, replica_set: &[u8], name: &[u8]) -> Vec<u8> {
    let mut key = Vec::with_capacity(prefix.len() + kind.len() + replica_set.len() + name.len() + 12);
    key.extend_from_slice(prefix.as_bytes());
    key.extend_from_slice(kind.as_bytes());
    key.extend_from_slice(format!(":{{{}:", replica_set.len()).as_bytes());
    key.extend_from_slice(replica_set);
    key.push(b':');
    key.extend_from_slice(name);
    key.push(b'}');
    key
}

/// The shim's key of the session the request names.
fn session_key(floor: &Floor, body: &[u8]) -> Result<Vec<u8>, FloorError> {
    Ok(key(
        &floor.key_prefix,
        "s",
        element(body, "replicaSet")?,
        element(body, "sessionID")?,
    ))
}

async fn get(floor: &Floor, body: &[u8]) -> Result<Bytes, FloorError> {
    let key = session_key(floor, body)?;
    let fields = &floor.get_fields[..];
    let mut read = redis::cmd(if fields.len() == 1 { "HGET" } else { "HMGET" });
    read.arg(key).arg(fields);
    let record: redis::Value = read.query_async(&mut floor.redis.clone()).await?;
    let found = match &record {
        redis::Value::Array(values) => values.iter().any(|v| *v != redis::Value::Nil),
        other => *other != redis::Value::Nil,
    };
    Ok(if found {
        floor.answers.get.clone()
    } else {
        floor.answers.get_missing.clone()
    })
}

async fn change(floor: &Floor, body: &[u8]) -> Result<Bytes, FloorError> {
    let key = session_key(floor, body)?;
    let changed: i64 = floor
        .change
        .key(key)
        .arg(element(body, "version")?)
        .arg(items(body)?)
        .invoke_async(&mut floor.redis.clone())
        .await?;
    Ok(if changed == 1 {
        floor.answers.change.clone()
    } else {
        floor.answers.change_mismatch.clone()
    })
}

async fn create(floor: &Floor, body: &[u8]) -> Result<Bytes, FloorError> {
    let replica_set = element(body, "replicaSet")?;
    let id = element(body, "sessionID")?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let created: i64 = floor
        .create
        .key(key("redsess-floor:", "s", replica_set, id))
        .key(key("redsess-floor:", "u", replica_set, user(body)?))
        .arg(items(body)?)
        .arg(CREATED_TTL_MS)
        .arg(now)
        .arg(id)
        .invoke_async(&mut floor.redis.clone())
        .await?;
    Ok(if created == 1 {
        floor.answers.create.clone()
    } else {
        floor.answers.create_in_use.clone()
    })
}
