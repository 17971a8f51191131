//! Security of the real binary: HTTP Basic, TLS with and without client certificates,
//! configuration errors that name the setting, and secrets (the Basic password, the Redis
//! password) that never reach the logs or the process's command line.

use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use rcgen::ExtendedKeyUsagePurpose;
use redsess_shim::client::ClientError;
use redsess_tests::pki::{leaf, new_ca};
use redsess_tests::{run_probe, shim_binary, webseal_session, ClientOptions, DscClient, RedisServer, Shim, SUCCESS};

const CLIENT: &str = "/DSess/services/DSess";
const ADMIN: &str = "/DSess/services/DSessAdmin";
const RS: &str = "default";
const REPLICA: &str = "security-webseald";
const PING: &str = r#"<SOAP-ENV:Envelope xmlns:SOAP-ENV="http://schemas.xmlsoap.org/soap/envelope/"><SOAP-ENV:Body><ns1:ping xmlns:ns1="http://sms.am.tivoli.com"><ns1:something>0</ns1:something></ns1:ping></SOAP-ENV:Body></SOAP-ENV:Envelope>"#;

fn cmdline(pid: u32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|raw| String::from_utf8_lossy(&raw).replace('\0', " "))
        .unwrap_or_else(|e| panic!("cannot read /proc/{pid}/cmdline: {e}"))
}

/// A join, a session created and read back: the shim serves this client.
async fn serves(client: &DscClient, session_id: &str) {
    let joined = client
        .join_replica_set(REPLICA, &format!("5ec:{REPLICA}"), 15, RS)
        .await
        .expect("joinReplicaSet");
    assert_eq!(joined.result(), SUCCESS);
    let items = webseal_session("security-user");
    let created = client.create_session(REPLICA, RS, session_id, 0, &items).await.unwrap();
    assert_eq!(created.result(), SUCCESS);
    let got = client.get_session(REPLICA, RS, session_id).await.unwrap();
    assert_eq!(got.result(), SUCCESS);
    assert_eq!(got.data(), items);
}

fn assert_status(what: &str, outcome: Result<redsess_tests::Reply, ClientError>, status: u16) {
    match outcome {
        Err(ClientError::Fault { status: s, .. }) if s == status => {}
        other => panic!("{what}: expected HTTP {status}, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// (a) HTTP Basic

#[tokio::test]
async fn basic_auth_guards_both_endpoints_and_keeps_the_password_secret() {
    const PASSWORD: &str = "Tr0ub4dor-pw-8d3e1f";
    let mut shim = Shim::start(
        &["--basic-auth-user", "webseal"],
        &[("REDSESS_BASIC_AUTH_PASSWORD", PASSWORD), ("REDSESS_LOG", "debug")],
    );
    redsess_shim::server::install_crypto_provider();
    let raw = reqwest::Client::new();

    // No credentials: 401 with a challenge and a SOAP fault, on both endpoints.
    for path in [CLIENT, ADMIN] {
        let resp = raw
            .post(format!("{}{path}", shim.url()))
            .header("Content-Type", "text/xml; charset=utf-8")
            .body(PING)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 401, "{path}");
        let challenge = resp
            .headers()
            .get("www-authenticate")
            .unwrap_or_else(|| panic!("{path}: 401 without WWW-Authenticate"))
            .to_str()
            .unwrap()
            .to_string();
        assert!(challenge.starts_with("Basic "), "{challenge}");
        let body = resp.text().await.unwrap();
        assert!(body.contains("<faultcode>"), "{body}");
    }

    // Wrong credentials of every kind: 401.
    let wrong = |user: &str, password: &str| {
        shim.client_with(ClientOptions {
            basic_auth: Some((user.to_string(), password.to_string())),
            ..Default::default()
        })
    };
    assert_status("wrong password", wrong("webseal", "guess").ping().await, 401);
    assert_status(
        "password with a suffix",
        wrong("webseal", &format!("{PASSWORD}x")).ping().await,
        401,
    );
    assert_status(
        "password prefix",
        wrong("webseal", &PASSWORD[..PASSWORD.len() - 1]).ping().await,
        401,
    );
    assert_status("wrong user", wrong("admin", PASSWORD).ping().await, 401);
    assert_status("empty password", wrong("webseal", "").ping().await, 401);
    assert_status(
        "wrong password on the admin endpoint",
        wrong("webseal", "guess").execute("getClusterInfo", &[]).await,
        401,
    );
    for header in [
        format!("Bearer {PASSWORD}"),
        "Basic".to_string(),
        "Basic !!!not-base64!!!".to_string(),
        format!("Basic {PASSWORD}"),
    ] {
        let resp = raw
            .post(format!("{}{CLIENT}", shim.url()))
            .header("Authorization", header.as_str())
            .body(PING)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 401, "Authorization: {header}");
    }

    // The right credentials work, on both endpoints.
    let right = wrong("webseal", PASSWORD);
    serves(&right, "basic-auth-session=").await;
    let info = right.execute("getClusterInfo", &[]).await.unwrap();
    assert_eq!(info.result(), SUCCESS);

    // The probe with --user and the password from the environment passes; with a wrong one it
    // does not.
    let (ok, out) = run_probe(
        &shim.url(),
        &["--user", "webseal"],
        &[("REDSESS_PROBE_PASSWORD", PASSWORD)],
    );
    assert!(ok, "{out}\n--- shim log:\n{}", shim.logs());
    assert!(out.contains("steps passed"), "{out}");
    let (ok, out) = run_probe(
        &shim.url(),
        &["--user", "webseal"],
        &[("REDSESS_PROBE_PASSWORD", "guess")],
    );
    assert!(!ok, "the probe passed with a wrong password: {out}");
    assert!(out.contains("401"), "{out}");

    // The password shows nowhere: not in the log (even at debug), not in the command line.
    assert!(shim.is_running());
    let token = base64_basic("webseal", PASSWORD);
    let logs = shim.logs();
    assert!(logs.contains("listening"), "{logs}");
    assert!(!logs.contains(PASSWORD), "the password is in the log:\n{logs}");
    assert!(!logs.contains(&token), "the Basic token is in the log:\n{logs}");
    let command_line = cmdline(shim.pid());
    assert!(command_line.contains("--basic-auth-user webseal"), "{command_line}");
    assert!(!command_line.contains(PASSWORD), "{command_line}");
}

/// `base64(user:password)` as it travels in the Authorization header.
fn base64_basic(user: &str, password: &str) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let bytes = format!("{user}:{password}").into_bytes();
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[tokio::test]
async fn basic_auth_password_from_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("dsc-password");
    std::fs::write(&file, "from-a-file-7c1a\n").unwrap();
    let shim = Shim::start(
        &[
            "--basic-auth-user",
            "webseal",
            "--basic-auth-password-file",
            file.to_str().unwrap(),
        ],
        &[],
    );
    let client = |password: &str| {
        shim.client_with(ClientOptions {
            basic_auth: Some(("webseal".into(), password.into())),
            ..Default::default()
        })
    };
    // The trailing newline of the file is not part of the password.
    assert_eq!(client("from-a-file-7c1a").ping().await.unwrap().result(), SUCCESS);
    assert_status("with the newline", client("from-a-file-7c1a\n").ping().await, 401);
    assert!(!shim.logs().contains("from-a-file-7c1a"));
}

// ---------------------------------------------------------------------------------------------
// (b) TLS

/// PEM files of a test PKI: a CA, a server certificate for 127.0.0.1 and localhost, a client
/// certificate, all signed by the CA, and a client certificate signed by another CA.
struct Pki {
    dir: tempfile::TempDir,
    ca_pem: String,
    client_identity: String,
    stranger_identity: String,
    /// Another client certificate from the same CA: `CN=webseal-b`.
    peer_identity: String,
}

impl Pki {
    fn new() -> Pki {
        let (ca, ca_key) = new_ca("redsess test CA");
        let (other_ca, other_key) = new_ca("some other CA");
        let (server, server_key) = leaf(
            vec!["127.0.0.1".into(), "localhost".into()],
            "redsess-shim",
            ExtendedKeyUsagePurpose::ServerAuth,
            &ca,
            &ca_key,
        );
        let (client, client_key) = leaf(vec![], "webseal", ExtendedKeyUsagePurpose::ClientAuth, &ca, &ca_key);
        let (peer, peer_key) = leaf(vec![], "webseal-b", ExtendedKeyUsagePurpose::ClientAuth, &ca, &ca_key);
        let (stranger, stranger_key) = leaf(
            vec![],
            "webseal",
            ExtendedKeyUsagePurpose::ClientAuth,
            &other_ca,
            &other_key,
        );
        let dir = tempfile::tempdir().unwrap();
        let pki = Pki {
            ca_pem: ca.pem(),
            client_identity: client.pem() + &client_key.serialize_pem(),
            stranger_identity: stranger.pem() + &stranger_key.serialize_pem(),
            peer_identity: peer.pem() + &peer_key.serialize_pem(),
            dir,
        };
        std::fs::write(pki.path("ca.pem"), &pki.ca_pem).unwrap();
        std::fs::write(pki.path("server.pem"), server.pem()).unwrap();
        std::fs::write(pki.path("server.key"), server_key.serialize_pem()).unwrap();
        std::fs::write(pki.path("client.pem"), &pki.client_identity).unwrap();
        std::fs::write(pki.path("stranger.pem"), &pki.stranger_identity).unwrap();
        pki
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn arg(&self, name: &str) -> String {
        self.path(name).to_str().unwrap().to_string()
    }
}

fn https_client(shim: &Shim, ca_pem: Option<&str>, identity: Option<&str>) -> DscClient {
    shim.client_with(ClientOptions {
        ca_pem: ca_pem.map(|p| p.as_bytes().to_vec()),
        identity_pem: identity.map(|p| p.as_bytes().to_vec()),
        timeout: Some(Duration::from_secs(10)),
        ..Default::default()
    })
}

/// The request fails below HTTP: no answer at all (handshake refused, or no TLS spoken).
fn assert_no_answer(what: &str, outcome: Result<redsess_tests::Reply, ClientError>) {
    match outcome {
        Err(ClientError::Http(_)) => {}
        other => panic!("{what}: expected a failed connection, got {other:?}"),
    }
}

#[tokio::test]
async fn tls_serves_https_only() {
    let pki = Pki::new();
    let mut shim = Shim::start(
        &[
            "--tls-cert",
            &pki.arg("server.pem"),
            "--tls-key",
            &pki.arg("server.key"),
        ],
        &[],
    );
    assert!(shim.url().starts_with("https://"));
    serves(&https_client(&shim, Some(&pki.ca_pem), None), "tls-session=").await;
    // Also by name.
    let by_name = DscClient::new(
        &format!("https://localhost:{}", shim.addr.port()),
        ClientOptions {
            ca_pem: Some(pki.ca_pem.clone().into_bytes()),
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(by_name.ping().await.unwrap().result(), SUCCESS);
    // A client that does not trust the CA refuses the server.
    assert_no_answer("untrusted server", https_client(&shim, None, None).ping().await);
    // Plain HTTP to the TLS port gets no SOAP answer.
    let plain = DscClient::new(
        &format!("http://{}", shim.addr),
        ClientOptions {
            timeout: Some(Duration::from_secs(10)),
            ..Default::default()
        },
    )
    .unwrap();
    match plain.ping().await {
        Ok(r) => panic!("plain HTTP was served: {r:?}"),
        Err(ClientError::Http(_)) | Err(ClientError::Fault { status: 400, .. }) => {}
        Err(e) => panic!("plain HTTP: unexpected {e:?}"),
    }
    // Without a client CA, a client certificate is not needed and not in the way.
    let with_identity = https_client(&shim, Some(&pki.ca_pem), Some(&pki.client_identity));
    assert_eq!(with_identity.ping().await.unwrap().result(), SUCCESS);
    let (ok, out) = run_probe(&shim.url(), &["--ca", &pki.arg("ca.pem")], &[]);
    assert!(ok, "{out}\n--- shim log:\n{}", shim.logs());
    assert!(shim.is_running());
    assert!(!shim.logs().contains("panicked"));
}

#[tokio::test]
async fn tls_client_certificates_are_required_when_a_client_ca_is_set() {
    let pki = Pki::new();
    let mut shim = Shim::start(
        &[
            "--tls-cert",
            &pki.arg("server.pem"),
            "--tls-key",
            &pki.arg("server.key"),
            "--tls-client-ca",
            &pki.arg("ca.pem"),
        ],
        &[],
    );
    assert_no_answer(
        "no client certificate",
        https_client(&shim, Some(&pki.ca_pem), None).ping().await,
    );
    assert_no_answer(
        "a certificate from another CA",
        https_client(&shim, Some(&pki.ca_pem), Some(&pki.stranger_identity))
            .ping()
            .await,
    );
    serves(
        &https_client(&shim, Some(&pki.ca_pem), Some(&pki.client_identity)),
        "mtls-session=",
    )
    .await;

    let (ok, out) = run_probe(
        &shim.url(),
        &["--ca", &pki.arg("ca.pem"), "--identity", &pki.arg("client.pem")],
        &[],
    );
    assert!(ok, "{out}\n--- shim log:\n{}", shim.logs());
    assert!(out.contains("steps passed"), "{out}");
    let (ok, out) = run_probe(&shim.url(), &["--ca", &pki.arg("ca.pem")], &[]);
    assert!(!ok, "the probe passed without a client certificate: {out}");
    let (ok, out) = run_probe(
        &shim.url(),
        &["--ca", &pki.arg("ca.pem"), "--identity", &pki.arg("stranger.pem")],
        &[],
    );
    assert!(!ok, "the probe passed with a stranger's certificate: {out}");
    assert!(shim.is_running());
    assert!(!shim.logs().contains("panicked"));
}

#[tokio::test]
async fn tls_and_basic_auth_together() {
    let pki = Pki::new();
    let shim = Shim::start(
        &[
            "--tls-cert",
            &pki.arg("server.pem"),
            "--tls-key",
            &pki.arg("server.key"),
            "--tls-client-ca",
            &pki.arg("ca.pem"),
            "--basic-auth-user",
            "webseal",
        ],
        &[("REDSESS_BASIC_AUTH_PASSWORD", "both-factors-21")],
    );
    let client = |password: Option<&str>| {
        shim.client_with(ClientOptions {
            ca_pem: Some(pki.ca_pem.clone().into_bytes()),
            identity_pem: Some(pki.client_identity.clone().into_bytes()),
            basic_auth: password.map(|p| ("webseal".to_string(), p.to_string())),
            ..Default::default()
        })
    };
    // A certificate alone is not enough when Basic is on too.
    assert_status("certificate without password", client(None).ping().await, 401);
    assert_status("certificate, wrong password", client(Some("x")).ping().await, 401);
    assert_eq!(client(Some("both-factors-21")).ping().await.unwrap().result(), SUCCESS);
}

// ---------------------------------------------------------------------------------------------
// (c) Authorization

const NOT_AUTHORIZED: u32 = 952467759;

async fn create_in(client: &DscClient, replica_set: &str, id: &str) -> u32 {
    client
        .create_session(
            "webseald-a",
            replica_set,
            id,
            0,
            &redsess_tests::webseal_session("alice"),
        )
        .await
        .unwrap()
        .result()
}

/// `--authorization-file`: a client certificate's subject may use its replica sets only; a
/// subject the file does not name may do nothing; both are answered "not authorized".
#[tokio::test]
async fn certificate_subjects_are_limited_to_their_replica_sets() {
    let pki = Pki::new();
    std::fs::write(pki.path("authorization"), "certificate CN=webseal: www\n").unwrap();
    let shim = Shim::start(
        &[
            "--tls-cert",
            &pki.arg("server.pem"),
            "--tls-key",
            &pki.arg("server.key"),
            "--tls-client-ca",
            &pki.arg("ca.pem"),
            "--authorization-file",
            &pki.arg("authorization"),
        ],
        &[],
    );
    let webseal = https_client(&shim, Some(&pki.ca_pem), Some(&pki.client_identity));
    assert_eq!(create_in(&webseal, "www", "w-1").await, SUCCESS);
    assert_eq!(create_in(&webseal, "default", "d-1").await, NOT_AUTHORIZED);
    let listed = webseal
        .execute(
            "listSessions",
            &[
                ("SessionDataClass", "com.tivoli.am.eb.user-name"),
                ("SessionDataInstance", "sms"),
                ("ReplicaSet", "default"),
                ("SessionDataValue", "*"),
                ("MaxResults", "0x10"),
            ],
        )
        .await
        .unwrap();
    assert_eq!(listed.result(), NOT_AUTHORIZED, "the admin endpoint too");
    let peer = https_client(&shim, Some(&pki.ca_pem), Some(&pki.peer_identity));
    assert_eq!(
        peer.ping().await.unwrap().result(),
        NOT_AUTHORIZED,
        "CN=webseal-b is not named"
    );
    assert_eq!(create_in(&peer, "www", "w-2").await, NOT_AUTHORIZED);
    assert!(shim.logs().contains("may not use the replica set"), "{}", shim.logs());
}

/// The Basic user is an identity too.
#[tokio::test]
async fn the_basic_user_is_limited_to_its_replica_sets() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("authorization");
    std::fs::write(&file, "# the WebSEAL fleet\nuser webseal: default, www\n").unwrap();
    let shim = Shim::start(
        &[
            "--basic-auth-user",
            "webseal",
            "--authorization-file",
            file.to_str().unwrap(),
        ],
        &[("REDSESS_BASIC_AUTH_PASSWORD", "s3cret-s3cret")],
    );
    let client = shim.client_with(ClientOptions {
        basic_auth: Some(("webseal".into(), "s3cret-s3cret".into())),
        ..Default::default()
    });
    assert_eq!(create_in(&client, "www", "w-1").await, SUCCESS);
    assert_eq!(create_in(&client, "api", "a-1").await, NOT_AUTHORIZED);
    assert_eq!(
        shim.metric(r#"redsess_shim_requests_total{operation="createSession",result="not_authorized"}"#),
        1
    );
}

// ---------------------------------------------------------------------------------------------
// (d) Configuration errors

/// Runs the shim expecting it to refuse its configuration at once: (exit status, stderr). A
/// shim that starts anyway is killed and fails the test instead of hanging it.
fn refuse(args: &[&str], env: &[(&str, &str)]) -> (ExitStatus, String) {
    let mut child = Command::new(shim_binary())
        .args(args)
        .env_remove("REDSESS_REDIS_URL")
        .env_remove("REDSESS_BASIC_AUTH_PASSWORD")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cannot run redsess-shim");
    let mut pipe = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = pipe.read_to_string(&mut text);
        text
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("redsess-shim {args:?} did not refuse its configuration: it kept running");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    (status, reader.join().unwrap())
}

#[test]
fn bad_settings_stop_the_start_naming_the_setting() {
    let dir = tempfile::tempdir().unwrap();
    let exists = dir.path().join("exists.pem");
    std::fs::write(&exists, "not a certificate\n").unwrap();
    let empty = dir.path().join("empty");
    std::fs::write(&empty, "\n").unwrap();
    let exists = exists.to_str().unwrap();
    let empty = empty.to_str().unwrap();
    let listen = ["--listen", "127.0.0.1:0"];
    let with_listen =
        |rest: &[&'static str]| -> Vec<String> { listen.iter().chain(rest).map(|s| s.to_string()).collect() };
    // (arguments, environment, what stderr must name)
    type Case<'a> = (Vec<String>, Vec<(&'a str, &'a str)>, &'a str);
    let cases: Vec<Case> = vec![
        (vec!["--listen".into(), "nowhere".into()], vec![], "--listen"),
        (vec!["--listen".into(), "127.0.0.1:99999".into()], vec![], "--listen"),
        (with_listen(&["--redis-url", "http://x"]), vec![], "--redis-url"),
        (
            with_listen(&[]),
            vec![("REDSESS_REDIS_URL", "memcached://x")],
            "REDSESS_REDIS_URL",
        ),
        (
            [with_listen(&["--tls-cert"]), vec![exists.into()]].concat(),
            vec![],
            "--tls-key",
        ),
        (
            [with_listen(&["--tls-key"]), vec![exists.into()]].concat(),
            vec![],
            "--tls-cert",
        ),
        (
            [with_listen(&["--tls-client-ca"]), vec![exists.into()]].concat(),
            vec![],
            "--tls-client-ca",
        ),
        (
            with_listen(&[
                "--tls-cert",
                "/nonexistent/tls.crt",
                "--tls-key",
                "/nonexistent/tls.key",
            ]),
            vec![],
            "--tls-cert",
        ),
        (
            [
                with_listen(&["--tls-cert"]),
                vec![exists.into(), "--tls-key".into(), exists.into()],
            ]
            .concat(),
            vec![],
            exists,
        ),
        (
            with_listen(&["--basic-auth-user", "webseal"]),
            vec![],
            "--basic-auth-user",
        ),
        (
            with_listen(&["--basic-auth-user", "webseal"]),
            vec![("REDSESS_BASIC_AUTH_PASSWORD", "")],
            "REDSESS_BASIC_AUTH_PASSWORD",
        ),
        (
            with_listen(&["--basic-auth-user", "web:seal"]),
            vec![("REDSESS_BASIC_AUTH_PASSWORD", "pw")],
            "--basic-auth-user",
        ),
        // Authorization with nobody authenticated, and a file that does not parse.
        (
            [with_listen(&["--authorization-file"]), vec![empty.into()]].concat(),
            vec![],
            "--authorization-file",
        ),
        (
            [
                with_listen(&["--basic-auth-user", "webseal", "--authorization-file"]),
                vec![exists.into()],
            ]
            .concat(),
            vec![("REDSESS_BASIC_AUTH_PASSWORD", "pw")],
            "line 1",
        ),
        (
            with_listen(&[
                "--basic-auth-user",
                "webseal",
                "--basic-auth-password-file",
                "/nonexistent/password",
            ]),
            vec![],
            "--basic-auth-password-file",
        ),
        (
            [
                with_listen(&["--basic-auth-user", "webseal", "--basic-auth-password-file"]),
                vec![empty.into()],
            ]
            .concat(),
            vec![],
            "--basic-auth-password-file",
        ),
        (with_listen(&["--max-body-bytes", "10"]), vec![], "--max-body-bytes"),
        (with_listen(&["--max-body-bytes", "lots"]), vec![], "--max-body-bytes"),
        (with_listen(&["--clock-skew", "5weeks"]), vec![], "--clock-skew"),
        (with_listen(&["--max-lifetime", "30s"]), vec![], "--max-lifetime"),
        (with_listen(&["--request-timeout", "0"]), vec![], "--request-timeout"),
        (with_listen(&["--replica-timeout", "1s"]), vec![], "--replica-timeout"),
        (with_listen(&["--key-prefix", "{tag}"]), vec![], "--key-prefix"),
        (
            with_listen(&[]),
            vec![("REDSESS_MAX_BODY_BYTES", "12")],
            "--max-body-bytes",
        ),
    ];
    for (args, env, names) in cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (status, stderr) = refuse(&args, &env);
        assert!(!status.success(), "{args:?} {env:?}: exit status {status}");
        assert!(
            stderr.contains(names),
            "{args:?} {env:?}: stderr does not name {names:?}:\n{stderr}"
        );
        assert!(!stderr.contains("listening on"), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
    // The same flags without the error start: the refusals above are about the setting named.
    let fine = Shim::start(&["--max-body-bytes", "4096", "--clock-skew", "5m"], &[]);
    drop(fine);
}

// ---------------------------------------------------------------------------------------------
// (d) The Redis password

#[tokio::test]
async fn redis_password_in_the_url_stays_out_of_the_logs() {
    const SECRET: &str = "s3cret";
    let redis = redis_with_password(SECRET);
    // The server really wants it.
    let refused = redis.command("PING").unwrap_or_default();
    assert!(refused.starts_with("-NOAUTH"), "{refused}");

    let url = format!("redis://default:{SECRET}@127.0.0.1:{}", redis.port);
    let mut shim = Shim::start(&[], &[("REDSESS_REDIS_URL", &url), ("REDSESS_LOG", "debug")]);
    let client = shim.client();
    serves(&client, "redis-password-session=").await;
    let (ok, out) = run_probe(&shim.url(), &[], &[]);
    assert!(ok, "{out}\n--- shim log:\n{}", shim.logs());
    // The session really is in this Redis.
    let keys = redis_command_with_auth(redis.port, SECRET, "DBSIZE");
    assert!(
        keys.trim()
            .strip_prefix(':')
            .and_then(|n| n.parse::<i64>().ok())
            .is_some_and(|n| n > 0),
        "{keys}"
    );
    assert!(shim.is_running());
    let logs = shim.logs();
    assert!(
        logs.contains("<redacted>"),
        "the store is not named in the log:\n{logs}"
    );
    assert!(!logs.contains(SECRET), "the Redis password is in the log:\n{logs}");
    assert!(!cmdline(shim.pid()).contains(SECRET));
}

#[tokio::test]
async fn redis_password_from_the_environment_and_a_wrong_one() {
    const SECRET: &str = "envpass-4b9d";
    let redis = redis_with_password(SECRET);
    let shim = Shim::start(
        &["--request-timeout", "2s"],
        &[
            ("REDSESS_REDIS_URL", &redis.url()),
            ("REDSESS_REDIS_PASSWORD", SECRET),
            ("REDSESS_LOG", "debug"),
        ],
    );
    serves(&shim.client(), "redis-env-password=").await;
    assert!(!shim.logs().contains(SECRET), "{}", shim.logs());

    // A wrong password: the store fails (HTTP 503 fault), and neither password is logged.
    let wrong = format!("redis://default:wr0ng-pass@127.0.0.1:{}", redis.port);
    let shim = match Shim::try_start(
        &["--request-timeout", "2s"],
        &[("REDSESS_REDIS_URL", &wrong), ("REDSESS_LOG", "debug")],
    ) {
        // Refusing to start is fine too, as long as it says why without the password.
        Err(stderr) => {
            assert!(!stderr.contains("wr0ng-pass"), "{stderr}");
            return;
        }
        Ok(shim) => shim,
    };
    let client = shim.client();
    let started = Instant::now();
    let outcome = client
        .join_replica_set(REPLICA, &format!("5ec:{REPLICA}"), 15, RS)
        .await;
    // A refused password is reported as such, at once, not as a timeout.
    assert!(started.elapsed() < Duration::from_secs(1), "{:?}", started.elapsed());
    match &outcome {
        Err(ClientError::Fault { fault, .. }) => {
            assert!(fault.to_lowercase().contains("authentication"), "{fault}")
        }
        other => panic!("expected a fault naming the authentication, got {other:?}"),
    }
    assert_status("wrong Redis password", outcome, 503);
    let logs = shim.logs();
    assert!(!logs.contains("wr0ng-pass"), "{logs}");
    assert!(!logs.contains(SECRET), "{logs}");
}

/// A redis-server that wants `password`.
fn redis_with_password(password: &str) -> RedisServer {
    RedisServer::start_with(&["--requirepass", password])
}

/// One inline command after AUTH; the raw RESP answer to the command.
fn redis_command_with_auth(port: u16, password: &str, command: &str) -> String {
    use std::io::Write;
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    write!(stream, "AUTH {password}\r\n{command}\r\n").unwrap();
    let mut answer = String::new();
    let mut buf = [0u8; 4096];
    while answer.matches("\r\n").count() < 2 {
        let n = stream.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        answer.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    assert!(answer.starts_with("+OK"), "AUTH: {answer}");
    answer.lines().nth(1).unwrap_or_default().to_string()
}

/// Every secret setting, set in the environment, stays out of `--help` (clap prints
/// environment values there unless told not to), for the command and each subcommand.
#[test]
fn secrets_stay_out_of_help() {
    // (setting, value, the secret in it)
    let secrets = [
        (
            "REDSESS_REDIS_URL",
            "redis://redsess:url-pass-7f3a@redis:6379",
            "url-pass-7f3a",
        ),
        ("REDSESS_REDIS_PASSWORD", "env-pass-91c2", "env-pass-91c2"),
        ("REDSESS_BASIC_AUTH_PASSWORD", "basic-pass-4e8d", "basic-pass-4e8d"),
        ("REDSESS_PROBE_PASSWORD", "probe-pass-2b6f", "probe-pass-2b6f"),
    ];
    for command in [
        &["--help"][..],
        &["serve", "--help"],
        &["probe", "--help"],
        &["ready", "--help"],
    ] {
        let out = std::process::Command::new(redsess_tests::shim_binary())
            .args(command)
            .envs(secrets.map(|(name, value, _)| (name, value)))
            .output()
            .expect("redsess-shim --help");
        assert!(out.status.success(), "{command:?}");
        let help = String::from_utf8_lossy(&out.stdout);
        assert!(help.contains("REDSESS_") || command[0] != "--help", "{help}");
        for (name, _, secret) in secrets {
            assert!(!help.contains(secret), "{command:?} prints {name}:\n{help}");
        }
    }
}
