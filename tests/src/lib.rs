//! The end-to-end harness: real `redis-server` processes on free ports, the real
//! `redsess-shim` binary as a process, and a DSC client to drive it.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub mod k8s;
pub mod pods;

pub use redsess_shim::client::{ClientOptions, DscClient, Reply};
pub use redsess_shim::dsc::{DataItem, ResultCode};

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("cannot find a free port")
}

/// A `redis-server` of its own, on a free port, persisting to its own directory (AOF,
/// fsync always) so that a restart finds what was written.
pub struct RedisServer {
    child: Option<Child>,
    pub port: u16,
    dir: tempfile::TempDir,
    extra: Vec<String>,
    /// A redis.conf read first; the harness's own settings override it.
    conf: Option<PathBuf>,
}

impl RedisServer {
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// `extra` are further `--name value` arguments.
    pub fn start_with(extra: &[&str]) -> Self {
        Self::start_with_conf(None, extra)
    }

    /// Like [`start_with`](Self::start_with), reading `conf` first (its port, bind address and
    /// directory are the harness's).
    pub fn start_with_conf(conf: Option<&Path>, extra: &[&str]) -> Self {
        assert!(
            Command::new("redis-server").arg("--version").output().is_ok(),
            "redis-server is not installed: run scripts/test, which installs Debian's redis-server"
        );
        let mut server = RedisServer {
            child: None,
            port: free_port(),
            dir: tempfile::tempdir().expect("temporary directory"),
            extra: extra.iter().map(|s| s.to_string()).collect(),
            conf: conf.map(Path::to_path_buf),
        };
        server.launch();
        server
    }

    fn launch(&mut self) {
        let child = Command::new("redis-server")
            .args(&self.conf)
            .arg("--port")
            .arg(self.port.to_string())
            .args([
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
            ])
            .arg("--dir")
            .arg(self.dir.path())
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("cannot start redis-server");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            // A server that requires a password answers, but refuses the unauthenticated PING.
            if redis_command(self.port, "PING").is_some_and(|r| r.starts_with("+PONG") || r.starts_with("-NOAUTH")) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("redis-server on port {} did not answer PING within 10s", self.port);
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Stops the server abruptly (as a crash or a node loss would).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Freezes the process (SIGSTOP), as a stalled node would be; [`resume`](Self::resume)
    /// lets it go on.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        let child = self.child.as_ref().expect("a running redis-server");
        let sent = Command::new("kill").arg(signal).arg(child.id().to_string()).status();
        assert!(sent.is_ok_and(|s| s.success()), "kill {signal} redis-server");
    }

    /// Starts it again on the same port and directory.
    pub fn restart(&mut self) {
        self.stop();
        self.launch();
    }

    /// Sends one inline command; the raw RESP answer.
    pub fn command(&self, command: &str) -> Option<String> {
        redis_command(self.port, command)
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn redis_command(port: u16, command: &str) -> Option<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    stream.write_all(format!("{command}\r\n").as_bytes()).ok()?;
    let mut buf = [0u8; 65536];
    let n = stream.read(&mut buf).ok()?;
    Some(String::from_utf8_lossy(&buf[..n]).into_owned())
}

/// The `redsess-shim` binary, built once per test process by the same cargo.
pub fn shim_binary() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| build_binary("redsess-shim")).clone()
}

/// The `redsess-operator` binary, built once per test process by the same cargo.
pub fn operator_binary() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| build_binary("redsess-operator")).clone()
}

/// Builds the binary of the package of the same name; its path in the target directory.
fn build_binary(name: &str) -> PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .args(["build", "--quiet", "-p", name, "--bin", name])
        .status()
        .expect("cannot run cargo build");
    assert!(status.success(), "building {name} failed");
    // target/debug/deps/<test> → target/debug/<name>
    let exe = std::env::current_exe().expect("current test executable");
    let dir = exe.parent().and_then(Path::parent).expect("target directory");
    let bin = dir.join(name);
    assert!(bin.exists(), "{} was not built", bin.display());
    bin
}

/// Collects what a child process writes to its standard error, as it comes.
pub fn capture_stderr(child: &mut Child) -> std::sync::Arc<std::sync::Mutex<String>> {
    let stderr = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let sink = stderr.clone();
    let mut pipe = child.stderr.take().expect("stderr is piped");
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = pipe.read(&mut buf) {
            if n == 0 {
                break;
            }
            sink.lock().unwrap().push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    });
    stderr
}

/// A running `redsess-shim` process.
pub struct Shim {
    child: Child,
    pub addr: SocketAddr,
    stderr: std::sync::Arc<std::sync::Mutex<String>>,
    scheme: &'static str,
}

impl Shim {
    /// Starts the shim on a free port with these arguments and environment and waits until it
    /// listens. `--listen` is added unless given.
    pub fn start(args: &[&str], env: &[(&str, &str)]) -> Shim {
        Self::try_start(args, env).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Like `start`, but a shim that exits instead of listening is an `Err` with its stderr.
    pub fn try_start(args: &[&str], env: &[(&str, &str)]) -> Result<Shim, String> {
        let mut cmd = Command::new(shim_binary());
        if !args.contains(&"--listen") {
            cmd.args(["--listen", "127.0.0.1:0"]);
        }
        cmd.args(args)
            .env_remove("REDSESS_REDIS_URL")
            .env("REDSESS_LOG", "info")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().map_err(|e| format!("cannot start redsess-shim: {e}"))?;
        let stderr = capture_stderr(&mut child);
        let (tx, rx) = mpsc::channel();
        let stdout = child.stdout.take().expect("stdout");
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(addr) = line.strip_prefix("redsess-shim listening on ") {
                    let _ = tx.send(addr.trim().to_string());
                }
            }
        });
        let scheme = if args.contains(&"--tls-cert") { "https" } else { "http" };
        match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(addr) => Ok(Shim {
                child,
                addr: addr.parse().expect("listening address"),
                stderr,
                scheme,
            }),
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                std::thread::sleep(Duration::from_millis(100));
                let err = stderr.lock().unwrap().clone();
                Err(format!("redsess-shim did not start listening:\n{err}"))
            }
        }
    }

    /// Runs the shim expecting it to refuse its configuration; returns (exit status, stderr).
    pub fn refuse(args: &[&str], env: &[(&str, &str)]) -> (ExitStatus, String) {
        let out = Command::new(shim_binary())
            .args(args)
            .env_remove("REDSESS_REDIS_URL")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .output()
            .expect("cannot run redsess-shim");
        (out.status, String::from_utf8_lossy(&out.stderr).into_owned())
    }

    pub fn url(&self) -> String {
        format!("{}://{}", self.scheme, self.addr)
    }

    pub fn client(&self) -> DscClient {
        self.client_with(ClientOptions::default())
    }

    pub fn client_with(&self, mut options: ClientOptions) -> DscClient {
        options.timeout.get_or_insert(Duration::from_secs(90));
        DscClient::new(&self.url(), options).expect("DSC client")
    }

    /// What the shim logged so far.
    pub fn logs(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGTERM (as Kubernetes does) without waiting.
    pub fn signal_term(&self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
    }

    /// SIGTERM, then waits for the exit (at most `within`).
    pub fn terminate(&mut self, within: Duration) -> Option<ExitStatus> {
        self.signal_term();
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Shim {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `redsess-shim probe` against a URL; (success, stdout + stderr).
pub fn run_probe(url: &str, extra: &[&str], env: &[(&str, &str)]) -> (bool, String) {
    let out = Command::new(shim_binary())
        .arg("probe")
        .arg(url)
        .args(extra)
        .envs(env.iter().copied())
        .output()
        .expect("cannot run redsess-shim probe");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// A data item.
pub fn item(data_class: &str, instance: &str, value: Option<&str>) -> DataItem {
    DataItem {
        data_class: data_class.to_string().into(),
        instance: instance.to_string().into(),
        value: value.map(Into::into),
    }
}

/// Unix seconds now.
pub fn now() -> i64 {
    redsess_shim::clock::now()
}

/// A WebSEAL-like session for `user` (see the probe): a 1.5 KB credential, nil and empty
/// items, expiry in an hour, inactivity 600 s.
pub fn webseal_session(user: &str) -> Vec<DataItem> {
    redsess_shim::probe::webseal_like_items(user, now())
}

/// IBM's result codes in decimal, written out from PROTOCOL.md rather than taken from the
/// shim, so that a wrong code cannot agree with itself.
pub mod code {
    pub const SUCCESS: u32 = 952467756;
    pub const NOT_REGISTERED: u32 = 952467758;
    pub const LIMIT_REACHED: u32 = 952467760;
    pub const ID_IN_USE: u32 = 952467761;
    pub const SET_NOT_CONFIGURED: u32 = 952467762;
    pub const SET_NOT_JOINED: u32 = 952467763;
    pub const STALE_VERSION: u32 = 952467765;
    pub const CAPABILITY_MISMATCH: u32 = 952467766;
    pub const NOT_FOUND: u32 = 952467768;
    pub const INVALID_PARAMETER: u32 = 952467769;
    pub const INSTANCE_TAKEN: u32 = 952467770;
}
pub use code::SUCCESS;

/// Waits until `ok()` holds, checking every 100 ms; panics naming `what` after `within`.
pub fn wait_until(within: Duration, what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// What `redis-cli -h host -p port ARGS` prints (stdout, then stderr), as `auth`'s user
/// (password in the environment, never the arguments), or unauthenticated.
pub fn redis_cli(host: &str, port: u16, auth: Option<(&str, &str)>, args: &[&str]) -> String {
    redis_cli_tls(host, port, None, auth, args)
}

/// [`redis_cli`] over TLS trusting the CA file `ca` (plain text when `None`).
pub fn redis_cli_tls(
    host: &str,
    port: u16,
    ca: Option<&std::path::Path>,
    auth: Option<(&str, &str)>,
    args: &[&str],
) -> String {
    let mut cli = Command::new("redis-cli");
    if let Some(ca) = ca {
        cli.arg("--tls").arg("--cacert").arg(ca);
    }
    if let Some((user, password)) = auth {
        cli.args(["--user", user]).env("REDISCLI_AUTH", password);
    }
    let out = cli
        .args(["-h", host, "-p", &port.to_string()])
        .args(args)
        .output()
        .expect("redis-cli");
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

/// Calls `call` until it answers SUCCESS (a shim that is starting, or following a
/// failover), at most `within`; the panic says `what` failed, with `logs()`.
pub async fn until_success<F, Fut>(within: Duration, what: &str, logs: impl Fn() -> String, mut call: F) -> Reply
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Reply, redsess_shim::client::ClientError>>,
{
    let deadline = Instant::now() + within;
    loop {
        match call().await {
            Ok(r) if r.result() == SUCCESS => return r,
            other => {
                assert!(
                    Instant::now() < deadline,
                    "{what}: {:?}\n{}",
                    other.map(|r| r.result()),
                    logs()
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

pub fn expect(reply: Result<Reply, redsess_shim::client::ClientError>, code: u32, what: &str) -> Reply {
    let reply = reply.unwrap_or_else(|e| panic!("{what}: the call failed: {e}"));
    assert_eq!(reply.result(), code, "{what}: unexpected result in {:?}", reply.ret);
    reply
}

pub use redsess_shim::client::ClientError;

impl Shim {
    /// Waits (at most `within`) for the process to exit on its own; its status, or `None`.
    pub fn wait_exit(&mut self, within: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + within;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `GET path` on the shim's (plain HTTP) listener: `(status, body)`.
    pub fn http_get(&self, path: &str) -> Option<(u16, String)> {
        http_get(self.addr, path)
    }

    /// The value of one series of `/metrics`, e.g.
    /// `redsess_shim_faults_total{cause="overloaded"}`; 0 when it is not there yet.
    pub fn metric(&self, series: &str) -> u64 {
        let (_, text) = self.http_get("/metrics").expect("/metrics");
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or(0)
    }
}

/// A plain HTTP/1.1 `GET`, one connection, no keep-alive: `(status, body)`.
pub fn http_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(30))).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).ok()?;
    let status = answer.split_whitespace().nth(1)?.parse().ok()?;
    let body = answer
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Some((status, body))
}

/// The bulk strings of a raw RESP answer (an array of them, or a single one), in order.
pub fn resp_strings(answer: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut lines = answer.split("\r\n");
    while let Some(line) = lines.next() {
        if let Some(len) = line.strip_prefix('$') {
            if len.parse::<i64>().is_ok_and(|n| n >= 0) {
                out.push(lines.next().unwrap_or_default().to_string());
            }
        }
    }
    out
}

/// The integer of a raw RESP integer answer (`:42`).
pub fn resp_integer(answer: &str) -> Option<i64> {
    answer.trim().strip_prefix(':')?.parse().ok()
}

/// A shim whose log is printed when the test fails (dropped while panicking).
pub struct Traced(pub Shim);

impl std::ops::Deref for Traced {
    type Target = Shim;
    fn deref(&self) -> &Shim {
        &self.0
    }
}

impl std::ops::DerefMut for Traced {
    fn deref_mut(&mut self) -> &mut Shim {
        &mut self.0
    }
}

impl Drop for Traced {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- log of the shim on {}:\n{}", self.0.addr, self.0.logs());
        }
    }
}

/// Sleeps until shortly after the wall clock starts a new second, so that what follows runs
/// within one second as the shim counts time (unix seconds).
pub fn start_of_second() {
    let into = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_millis())
        .unwrap_or(0);
    if into > 100 {
        std::thread::sleep(Duration::from_millis(u64::from(1000 - into) + 20));
    }
}

/// Certificates for tests: a CA, and leaves it signs.
pub mod pki {
    use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose};

    pub fn new_ca(name: &str) -> (rcgen::Certificate, KeyPair) {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        (params.self_signed(&key).unwrap(), key)
    }

    pub fn leaf(
        names: Vec<String>,
        common_name: &str,
        usage: ExtendedKeyUsagePurpose,
        issuer: &rcgen::Certificate,
        issuer_key: &KeyPair,
    ) -> (rcgen::Certificate, KeyPair) {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(names).unwrap();
        params.distinguished_name.push(DnType::CommonName, common_name);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![usage];
        (params.signed_by(&key, issuer, issuer_key).unwrap(), key)
    }
}
