use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::{ArgAction, Parser, Subcommand, ValueEnum};
use kube::runtime::events::Reporter;
use redsess_operator::validate::Platform;
use redsess_operator::{controller, http, leader, metrics::Metrics, names, webhook};

/// Kubernetes operator for SessionCache resources: Redis, Sentinel, redsess-shim, and the
/// configuration WebSEAL and IBM Application Gateway need.
#[derive(Parser)]
#[command(name = "redsess-operator", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the SessionCache CRD as YAML.
    Crd,
    /// Print every object a SessionCache file would produce, offline.
    Render {
        /// A SessionCache YAML file (`-` for standard input).
        file: PathBuf,
        /// The platform the objects are for (OpenShift assigns UIDs; plain Kubernetes needs
        /// them set for the Redis image).
        #[arg(long, value_enum, default_value_t = Platform::Kubernetes)]
        platform: Platform,
    },
    /// Print a Pod as the admission webhook would store it (Sidecar mode), offline.
    Inject {
        /// A Pod YAML file.
        pod: PathBuf,
        /// The SessionCache YAML file of the pod's namespace.
        cache: PathBuf,
        /// The Kubernetes version of the server: 1.29 and later get a native sidecar.
        #[arg(long, default_value = "1.30")]
        kubernetes_version: String,
        #[arg(long, value_enum, default_value_t = Platform::Kubernetes)]
        platform: Platform,
    },
    /// Run the operator in a cluster (in-cluster config or KUBECONFIG).
    Run(RunArgs),
}

#[derive(clap::Args)]
struct RunArgs {
    /// Where /metrics, /healthz and /readyz are served.
    #[arg(long, env = "REDSESS_METRICS_ADDR", default_value = "0.0.0.0:8080")]
    metrics_addr: SocketAddr,
    /// Elect a leader through a Lease so only one replica reconciles (`false` for a single
    /// replica or local development).
    #[arg(long, env = "REDSESS_LEADER_ELECTION", default_value_t = true, action = ArgAction::Set)]
    leader_election: bool,
    /// The operator's namespace (holds the leader Lease); default: the service account's.
    #[arg(long, env = "POD_NAMESPACE")]
    namespace: Option<String>,
    /// Log format.
    #[arg(long, env = "REDSESS_LOG_FORMAT", value_enum, default_value_t = LogFormat::Plain)]
    log_format: LogFormat,
    /// `auto` asks the API server whether it serves OpenShift's security API.
    #[arg(long, env = "REDSESS_PLATFORM", value_enum, default_value_t = PlatformChoice::Auto)]
    platform: PlatformChoice,
    /// Serve the admission webhook of Sidecar mode here (HTTPS), in every replica.
    #[arg(long, env = "REDSESS_WEBHOOK_ADDR")]
    webhook_addr: Option<SocketAddr>,
    /// The webhook's tls.crt and tls.key (cert-manager, OpenShift's service CA); without it the
    /// operator makes its own CA and certificate and keeps the webhook configuration's caBundle.
    #[arg(long, env = "REDSESS_WEBHOOK_CERT_DIR")]
    webhook_cert_dir: Option<PathBuf>,
    /// Names (and addresses) of the operator's own webhook certificate, comma-separated
    /// (default: the webhook Service, redsess-operator-webhook.<namespace>.svc).
    #[arg(long, env = "REDSESS_WEBHOOK_HOSTS", value_delimiter = ',')]
    webhook_hosts: Vec<String>,
}

#[derive(Clone, Copy, ValueEnum)]
enum PlatformChoice {
    Auto,
    Kubernetes,
    #[value(name = "openshift")]
    OpenShift,
}

/// The platform the operator runs on, as configured or as the API server's groups tell.
async fn platform(client: &kube::Client, choice: PlatformChoice) -> anyhow::Result<Platform> {
    Ok(match choice {
        PlatformChoice::Kubernetes => Platform::Kubernetes,
        PlatformChoice::OpenShift => Platform::OpenShift,
        PlatformChoice::Auto => {
            let groups = client
                .list_api_groups()
                .await
                .context("cannot list the API groups to tell OpenShift from Kubernetes (set --platform)")?;
            if groups.groups.iter().any(|g| g.name == "security.openshift.io") {
                Platform::OpenShift
            } else {
                Platform::Kubernetes
            }
        }
    })
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Plain,
    Json,
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,kube=warn"));
    // Colours only for a person at a terminal, not in a pod's log.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Plain => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

/// Resolves on SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    init_logging(args.log_format);
    let client = kube::Client::try_default()
        .await
        .context("cannot build a Kubernetes client (in-cluster config or KUBECONFIG)")?;
    let namespace = args
        .namespace
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| client.default_namespace().to_string());
    let identity = leader::identity();
    let platform = platform(&client, args.platform).await?;
    tracing::info!(%namespace, %identity, leader_election = args.leader_election, ?platform, "starting");

    let metrics = Arc::new(Metrics::new());
    let health = Arc::new(http::Health::default());
    let server = tokio::spawn(http::serve(
        args.metrics_addr,
        metrics.clone(),
        health.clone(),
        shutdown_signal(),
    ));
    let reporter = Reporter {
        controller: names::MANAGER.into(),
        instance: Some(identity.clone()),
    };
    // The webhook answers in every replica, leader or standby.
    if let Some(addr) = args.webhook_addr {
        let hosts = if args.webhook_hosts.is_empty() {
            let service = format!("{}-webhook.{namespace}.svc", names::MANAGER);
            vec![service.clone(), format!("{service}.cluster.local")]
        } else {
            args.webhook_hosts.clone()
        };
        let settings = webhook::Settings {
            addr,
            cert_dir: args.webhook_cert_dir.clone(),
            hosts,
            namespace: namespace.clone(),
            platform,
        };
        let client = client.clone();
        health.webhook_pending.store(true, std::sync::atomic::Ordering::SeqCst);
        let ready = health.clone();
        let serving = move || ready.webhook_pending.store(false, std::sync::atomic::Ordering::SeqCst);
        tokio::spawn(async move {
            if let Err(error) = webhook::serve(client, settings, serving, shutdown_signal()).await {
                // Without its webhook a replica must not look healthy: pods would be refused.
                tracing::error!(%error, "the admission webhook stopped; exiting");
                std::process::exit(1);
            }
        });
    }

    if args.leader_election {
        let mut elector = leader::LeaderElector::new(client.clone(), &namespace, identity);
        tokio::select! {
            _ = elector.acquire(&health) => {},
            _ = shutdown_signal() => {
                tracing::info!("shutting down before leading");
                return Ok(());
            }
        }
        tokio::select! {
            result = controller::run(client, metrics, reporter, health, platform) => {
                elector.release().await;
                result?;
            }
            lost = elector.hold() => {
                // Another replica may lead now: stop reconciling at once; Kubernetes restarts
                // this process as a candidate.
                tracing::error!(reason = %lost, "lost the leader Lease; exiting");
                std::process::exit(1);
            }
        }
    } else {
        controller::run(client, metrics, reporter, health, platform).await?;
    }
    server.abort();
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Crd => print!("{}", redsess_operator::crd::crd_yaml()),
        Command::Render { file, platform } => {
            let yaml = if file.as_os_str() == "-" {
                std::io::read_to_string(std::io::stdin()).context("cannot read standard input")?
            } else {
                std::fs::read_to_string(&file).with_context(|| format!("cannot read {}", file.display()))?
            };
            print!("{}", redsess_operator::render::render(&yaml, platform)?);
        }
        Command::Inject {
            pod,
            cache,
            kubernetes_version,
            platform,
        } => {
            let read = |path: &PathBuf| {
                std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))
            };
            let placement = kubernetes_version
                .split_once('.')
                .and_then(|(major, minor)| redsess_operator::build::sidecar::Placement::for_version(major, minor))
                .with_context(|| {
                    format!("--kubernetes-version {kubernetes_version}: expected MAJOR.MINOR, e.g. 1.30")
                })?;
            let (pod, _) = redsess_operator::render::inject(&read(&pod)?, &read(&cache)?, placement, platform)?;
            print!("{pod}");
        }
        Command::Run(args) => tokio::runtime::Runtime::new()
            .context("cannot start the async runtime")?
            .block_on(run(args))?,
    }
    Ok(())
}
