use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use redsess_shim::admin;
use redsess_shim::client::{ClientOptions, DscClient};
use redsess_shim::config::{LogFormat, ServeArgs};
use redsess_shim::probe::{self, ProbeOptions};
use redsess_shim::server;

// glibc's malloc took a fifth of the shim's CPU under load, much of it waiting on its arena
// locks between the runtime's threads (bench/load --perf); mimalloc keeps per-thread heaps.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Speaks WebSEAL's Distributed Session Cache protocol and keeps sessions in Redis (or, with
/// no Redis configured, in memory). Without a subcommand it serves.
#[derive(Parser)]
#[command(name = "redsess-shim", version, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the DSC protocol (the default).
    Serve(Box<ServeArgs>),
    /// Drive a WebSEAL-like session lifecycle against a DSC endpoint and print what it saw.
    Probe(ProbeArgs),
    /// Run a command of IBM's `dscadmin` against a DSC admin endpoint: this shim's, or IBM's
    /// own DSC.
    Admin(AdminArgs),
    /// Exit 0 when the shim at this address answers `GET /readyz` with 200: the probe of a
    /// sidecar that listens on 127.0.0.1, which the kubelet cannot reach over HTTP.
    Ready {
        /// The shim's plain-HTTP listener.
        #[arg(default_value = "127.0.0.1:8080")]
        address: std::net::SocketAddr,
    },
    /// Print a new record encryption key as a line of the key file (`<key ID> <base64 key>`).
    Keygen {
        /// The key's ID (default: `k` and 8 random hex digits).
        #[arg(long)]
        id: Option<String>,
    },
}

#[derive(clap::Args)]
struct ProbeArgs {
    /// Base URL of the cache, e.g. https://redsess-shim:8443
    url: String,
    #[arg(long, default_value = "default")]
    replica_set: String,
    #[arg(long, default_value = "redsess-probe")]
    replica: String,
    /// Basic-auth user; the password comes from REDSESS_PROBE_PASSWORD.
    #[arg(long)]
    user: Option<String>,
    #[command(flatten)]
    tls: ClientTls,
    /// responseBy of the getUpdates step, in seconds.
    #[arg(long, default_value_t = 2)]
    response_by: u64,
}

/// How a client command trusts the cache and proves who it is over HTTPS.
#[derive(clap::Args)]
struct ClientTls {
    /// PEM CA bundle to trust for HTTPS.
    #[arg(long)]
    ca: Option<PathBuf>,
    /// PEM file with the client certificate and its private key.
    #[arg(long)]
    identity: Option<PathBuf>,
}

impl ClientTls {
    fn options(&self, basic_auth: Option<(String, String)>, timeout: Duration) -> anyhow::Result<ClientOptions> {
        let read = |p: &PathBuf| std::fs::read(p).with_context(|| format!("cannot read {}", p.display()));
        Ok(ClientOptions {
            basic_auth,
            ca_pem: self.ca.as_ref().map(read).transpose()?,
            identity_pem: self.identity.as_ref().map(read).transpose()?,
            timeout: Some(timeout),
        })
    }
}

/// The Basic user and its password from `password_env`, when a user is given.
fn basic_auth(user: Option<String>, password_env: &str) -> anyhow::Result<Option<(String, String)>> {
    user.map(|user| {
        let password =
            std::env::var(password_env).with_context(|| format!("--user needs the password in {password_env}"))?;
        Ok((user, password))
    })
    .transpose()
}

#[derive(clap::Args)]
struct AdminArgs {
    /// Base URL of the cache, e.g. https://redsess-shim:8443
    url: String,
    /// Basic-auth user; the password comes from REDSESS_ADMIN_PASSWORD.
    #[arg(long, global = true)]
    user: Option<String>,
    /// A table for people, or JSON for scripts.
    #[arg(long, value_enum, default_value = "table", global = true)]
    output: OutputFormat,
    #[command(flatten)]
    tls: ClientTls,
    #[command(subcommand)]
    command: AdminCommand,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum OutputFormat {
    Table,
    Json,
}

#[derive(Subcommand)]
enum AdminCommand {
    /// `cluster show`
    Cluster {
        #[command(subcommand)]
        command: ClusterCommand,
    },
    /// `replica list REPLICA_SET`
    Replica {
        #[command(subcommand)]
        command: ReplicaCommand,
    },
    /// `session list REPLICA_SET USER_PATTERN`, `session terminate session|all_sessions`
    Session {
        #[command(subcommand)]
        command: SessionCommand,
    },
}

#[derive(Subcommand)]
enum ClusterCommand {
    /// The realm, the replica sets and their keys.
    Show,
}

#[derive(Subcommand)]
enum ReplicaCommand {
    /// The live replicas of a replica set and when they joined.
    List { replica_set: String },
}

#[derive(Subcommand)]
enum SessionCommand {
    /// The sessions of the users matching a pattern (`*` wildcards).
    List {
        replica_set: String,
        user_pattern: String,
        /// At most this many (0 = all); every match is counted.
        #[arg(long, default_value_t = 100)]
        max: u32,
    },
    /// End one session, or every session of a user.
    Terminate {
        #[command(subcommand)]
        command: TerminateCommand,
    },
}

#[derive(Subcommand)]
enum TerminateCommand {
    /// One session, by ID.
    Session { replica_set: String, session_id: String },
    /// Every session of a user.
    #[command(name = "all_sessions", alias = "all-sessions")]
    AllSessions {
        replica_set: String,
        // Not `user`: that is the global --user option's name.
        #[arg(value_name = "USER")]
        user_name: String,
    },
}

impl AdminCommand {
    fn into_command(self) -> admin::Command {
        match self {
            AdminCommand::Cluster {
                command: ClusterCommand::Show,
            } => admin::Command::ClusterShow,
            AdminCommand::Replica {
                command: ReplicaCommand::List { replica_set },
            } => admin::Command::ReplicaList { replica_set },
            AdminCommand::Session {
                command:
                    SessionCommand::List {
                        replica_set,
                        user_pattern,
                        max,
                    },
            } => admin::Command::SessionList {
                replica_set,
                user_pattern,
                max_results: max,
            },
            AdminCommand::Session {
                command:
                    SessionCommand::Terminate {
                        command:
                            TerminateCommand::Session {
                                replica_set,
                                session_id,
                            },
                    },
            } => admin::Command::TerminateSession {
                replica_set,
                session_id,
            },
            AdminCommand::Session {
                command:
                    SessionCommand::Terminate {
                        command: TerminateCommand::AllSessions { replica_set, user_name },
                    },
            } => admin::Command::TerminateAllSessions {
                replica_set,
                user: user_name,
            },
        }
    }
}

async fn run_admin(args: AdminArgs) -> anyhow::Result<()> {
    let options = args.tls.options(
        basic_auth(args.user, "REDSESS_ADMIN_PASSWORD")?,
        Duration::from_secs(30),
    )?;
    let client = DscClient::new(&args.url, options)?;
    let output = match args.output {
        OutputFormat::Table => admin::Output::Table,
        OutputFormat::Json => admin::Output::Json,
    };
    admin::run(&client, &args.command.into_command(), output, &mut std::io::stdout()).await?;
    Ok(())
}

fn keygen(id: Option<&str>) -> std::process::ExitCode {
    use redsess_shim::store::sealing::{new_key_line, valid_key_id, KEY_ID_RULE};
    if id.is_some_and(|id| !valid_key_id(id)) {
        eprintln!("redsess-shim keygen: --id: {KEY_ID_RULE}");
        return std::process::ExitCode::FAILURE;
    }
    println!("{}", new_key_line(id));
    std::process::ExitCode::SUCCESS
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let workers = match &cli.command {
        Some(Command::Serve(args)) => args.worker_threads,
        Some(Command::Probe(_) | Command::Admin(_)) => 0,
        Some(Command::Ready { address }) => return ready(*address),
        Some(Command::Keygen { id }) => return keygen(id.as_deref()),
        None => cli.serve.worker_threads,
    };
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if workers > 0 {
        builder.worker_threads(workers.into());
    }
    let runtime = match builder.enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("redsess-shim: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let outcome = runtime.block_on(async {
        match cli.command {
            Some(Command::Probe(args)) => run_probe(args).await,
            Some(Command::Admin(args)) => run_admin(args).await,
            Some(Command::Serve(args)) => serve(*args).await,
            Some(Command::Ready { .. } | Command::Keygen { .. }) => {
                unreachable!("answered before the runtime starts")
            }
            None => serve(cli.serve).await,
        }
    });
    match outcome {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("redsess-shim: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// `GET /readyz` on one connection, without a runtime: an exec probe runs every few seconds.
fn ready(address: std::net::SocketAddr) -> std::process::ExitCode {
    use std::io::Read;
    let answer = (|| -> std::io::Result<String> {
        let timeout = Duration::from_secs(2);
        let mut stream = std::net::TcpStream::connect_timeout(&address, timeout)?;
        stream.set_read_timeout(Some(timeout))?;
        write!(
            stream,
            "GET /readyz HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n"
        )?;
        let mut answer = String::new();
        stream.read_to_string(&mut answer)?;
        Ok(answer)
    })();
    match answer {
        Ok(a) if a.starts_with("HTTP/1.1 200") => std::process::ExitCode::SUCCESS,
        Ok(a) => {
            eprintln!("not ready: {}", a.lines().next().unwrap_or("no answer"));
            std::process::ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("not ready: cannot reach {address}: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let logs = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("REDSESS_LOG").unwrap_or_else(|_| "info".into()))
        // Colours only for a person at a terminal, not in a pod's log.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match args.log_format {
        LogFormat::Plain => logs.init(),
        LogFormat::Json => logs.json().flatten_event(true).init(),
    }
    let config = args
        .validate(|k| std::env::var(k).ok())
        .context("invalid configuration")?;
    tracing::info!(store = ?config.store, listen = %config.listen, "starting redsess-shim");
    server::run(config, shutdown_signal(), |addr| {
        // One line on stdout that scripts and tests can wait for.
        println!("redsess-shim listening on {addr}");
        let _ = std::io::stdout().flush();
    })
    .await?;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => {
                let _ = ctrl_c.await;
                return;
            }
        };
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

async fn run_probe(args: ProbeArgs) -> anyhow::Result<()> {
    let options = args.tls.options(
        basic_auth(args.user, "REDSESS_PROBE_PASSWORD")?,
        Duration::from_secs(args.response_by + 30),
    )?;
    let client = DscClient::new(&args.url, options)?;
    let probe = ProbeOptions {
        replica_set: args.replica_set,
        replica: args.replica,
        response_by_secs: args.response_by,
    };
    let mut out = std::io::stdout();
    let steps = probe::run(&client, &probe, &mut out).await?;
    println!("probe: {steps} steps passed against {}", args.url);
    Ok(())
}
