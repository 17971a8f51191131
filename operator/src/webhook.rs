//! The mutating admission webhook: HTTPS, AdmissionReview v1, JSON Patch answers. For pods
//! (Sidecar mode, `admission` decides) and for new SessionCaches (`defaulting`). It runs in
//! every operator replica, leader or not, with its own watch of SessionCaches, so any replica
//! behind the webhook Service can answer.
//!
//! - It serves only once that watch has listed every SessionCache: an earlier answer would
//!   admit a selected pod without its shim.
//! - The certificate: files in `--webhook-cert-dir` (cert-manager's or OpenShift's service CA
//!   Secret, mounted), or the operator's own (`certificates`), whose CA it also keeps in the
//!   MutatingWebhookConfiguration's `caBundle`. Either way it is looked at again every minute
//!   and a new one served without a restart.
//! - Native sidecar or plain container: decided once from the API server's version.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{ApiResource, DynamicObject};
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview};
use kube::runtime::reflector::{self, store::Writer, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client, ResourceExt};
use rustls::crypto::ring::sign::any_supported_type;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::admission;
use crate::build::sidecar::Placement;
use crate::certificates::{self, Material};
use crate::controller::read_session_cache;
use crate::crd::SessionCache;
use crate::defaulting;
use crate::validate::Platform;

/// Where the API server sends pods.
pub const PATH: &str = "/mutate-pods";
/// The MutatingWebhookConfiguration the chart installs, whose `caBundle` the operator keeps.
pub const CONFIGURATION: &str = "redsess-operator";
const REFRESH: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Discovery(#[from] crate::discovery::Error),
    #[error("--webhook-cert-dir: {0}")]
    Files(String),
    #[error(transparent)]
    Certificates(#[from] certificates::Error),
    #[error("the webhook's certificate does not load: {0}")]
    Tls(String),
    #[error("the webhook's SessionCache watch ended before it listed every cache: {0}")]
    Watch(String),
    #[error("the webhook cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// How the webhook is run.
#[derive(Debug, Clone)]
pub struct Settings {
    pub addr: SocketAddr,
    /// `tls.crt` and `tls.key` provided by cert-manager or OpenShift's service CA; `None`: the
    /// operator's own certificate.
    pub cert_dir: Option<PathBuf>,
    /// The names (and addresses) the own certificate is for.
    pub hosts: Vec<String>,
    /// The operator's namespace (holds the own certificate's Secret).
    pub namespace: String,
    pub platform: Platform,
}

/// The certificate currently served; swapped when it is renewed.
#[derive(Debug)]
struct Served(RwLock<Arc<CertifiedKey>>);

impl ResolvesServerCert for Served {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.read().expect("certificate lock").clone())
    }
}

fn certified(cert_pem: &str, key_pem: &str) -> Result<CertifiedKey, Error> {
    let chain = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Error::Tls(format!("tls.crt: {e}")))?;
    if chain.is_empty() {
        return Err(Error::Tls("tls.crt holds no certificate".into()));
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|e| Error::Tls(format!("tls.key: {e}")))?;
    let key = any_supported_type(&key).map_err(|e| Error::Tls(format!("tls.key: {e}")))?;
    Ok(CertifiedKey::new(chain, key))
}

/// The certificate to serve now: from the files, or the operator's own (made or renewed as
/// needed, its CA put into the webhook configuration).
async fn current(client: &Client, settings: &Settings) -> Result<(String, String), Error> {
    match &settings.cert_dir {
        Some(dir) => {
            let read = |name: &str| {
                std::fs::read_to_string(dir.join(name))
                    .map_err(|e| Error::Files(format!("cannot read {}: {e}", dir.join(name).display())))
            };
            Ok((read("tls.crt")?, read("tls.key")?))
        }
        None => {
            let Material {
                ca_pem,
                cert_pem,
                key_pem,
            } = certificates::ensure(client, &settings.namespace, &settings.hosts).await?;
            certificates::ensure_ca_bundle(client, CONFIGURATION, &ca_pem).await?;
            Ok((cert_pem, key_pem))
        }
    }
}

#[derive(Clone)]
struct Webhook {
    caches: Store<DynamicObject>,
    placement: Placement,
    platform: Platform,
}

async fn mutate(
    State(webhook): State<Webhook>,
    Json(review): Json<AdmissionReview<Pod>>,
) -> Json<AdmissionReview<DynamicObject>> {
    let request: AdmissionRequest<Pod> = match review.try_into() {
        Ok(request) => request,
        Err(e) => {
            return Json(AdmissionResponse::invalid(format!("not an AdmissionReview of a pod: {e}")).into_review())
        }
    };
    let namespace = request.namespace.clone().unwrap_or_default();
    let caches: Vec<SessionCache> = webhook
        .caches
        .state()
        .iter()
        .filter(|o| o.namespace().as_deref() == Some(namespace.as_str()))
        .filter_map(|o| read_session_cache(o).ok())
        .collect();
    let response = admission::respond(&request, &caches, webhook.placement, webhook.platform);
    let pod = request.object.as_ref().map(|p| p.name_any()).unwrap_or_default();
    tracing::info!(
        %namespace,
        pod,
        patched = response.patch.is_some(),
        warnings = ?response.warnings,
        "admission review"
    );
    Json(response.into_review())
}

async fn default_cache(Json(review): Json<AdmissionReview<DynamicObject>>) -> Json<AdmissionReview<DynamicObject>> {
    let request: AdmissionRequest<DynamicObject> = match review.try_into() {
        Ok(request) => request,
        Err(e) => return Json(AdmissionResponse::invalid(format!("not an AdmissionReview: {e}")).into_review()),
    };
    let response = defaulting::respond(&request);
    tracing::info!(
        namespace = request.namespace.as_deref().unwrap_or_default(),
        cache = request.name,
        defaulted = response.patch.is_some(),
        "admission review of a SessionCache"
    );
    Json(response.into_review())
}

/// Serves the webhook until `shutdown` resolves; `serving` is told once it listens.
pub async fn serve(
    client: Client,
    settings: Settings,
    serving: impl FnOnce() + Send + 'static,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let placement = crate::discovery::placement(&client).await?;
    let (cert_pem, key_pem) = current(&client, &settings).await?;
    let served = Arc::new(Served(RwLock::new(Arc::new(certified(&cert_pem, &key_pem)?))));

    // Its own watch of SessionCaches, leader or not.
    let resource = ApiResource::erase::<SessionCache>(&());
    let writer = Writer::new(resource.clone());
    let caches = writer.as_reader();
    let api: Api<DynamicObject> = Api::all_with(client.clone(), &resource);
    tokio::spawn(
        reflector::reflector(writer, watcher(api, watcher::Config::default()))
            .default_backoff()
            .for_each(|event| async move {
                if let Err(error) = event {
                    tracing::warn!(%error, "webhook: the SessionCache watch failed; retrying");
                }
            }),
    );
    caches
        .wait_until_ready()
        .await
        .map_err(|e| Error::Watch(e.to_string()))?;

    // Renewals and new files, every minute.
    {
        let served = served.clone();
        let client = client.clone();
        let settings = settings.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(REFRESH);
            tick.tick().await;
            loop {
                tick.tick().await;
                match current(&client, &settings).await.and_then(|(c, k)| certified(&c, &k)) {
                    Ok(key) => *served.0.write().expect("certificate lock") = Arc::new(key),
                    Err(error) => {
                        tracing::warn!(%error, "webhook: cannot refresh the certificate; serving the one loaded")
                    }
                }
            }
        });
    }

    let mut tls = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_cert_resolver(served);
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    let router = Router::new()
        .route(defaulting::PATH, post(default_cache))
        .route(PATH, post(mutate))
        .with_state(Webhook {
            caches,
            placement,
            platform: settings.platform,
        });
    let handle = axum_server::Handle::new();
    {
        let handle = handle.clone();
        tokio::spawn(async move {
            shutdown.await;
            handle.graceful_shutdown(Some(Duration::from_secs(5)));
        });
    }
    {
        let handle = handle.clone();
        tokio::spawn(async move {
            if handle.listening().await.is_some() {
                serving();
            }
        });
    }
    tracing::info!(addr = %settings.addr, ?placement, own_certificate = settings.cert_dir.is_none(), "serving the admission webhook");
    axum_server::bind_rustls(
        settings.addr,
        axum_server::tls_rustls::RustlsConfig::from_config(Arc::new(tls)),
    )
    .handle(handle)
    .serve(router.into_make_service())
    .await
    .map_err(|source| Error::Listen {
        addr: settings.addr,
        source,
    })
}
