//! A DSC client speaking the protocol as WebSEAL does: used by `redsess-shim probe` and the
//! end-to-end tests, against this shim or IBM's own DSC.

use std::time::Duration;

use crate::dsc::{item_name, DataItem, ADMIN_NS, CLIENT_NS};
use crate::server::{ADMIN_PATH, CLIENT_PATH};
use crate::soap::{self, Element, MessageWriter};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot set up the HTTP client: {0}")]
    Setup(String),
    #[error("the request failed: {0}")]
    Http(#[from] reqwest::Error),
    #[error("HTTP {status}: {fault}")]
    Fault { status: u16, fault: String },
    #[error("the answer is not a DSC response: {0}")]
    Malformed(String),
}

/// How to reach and authenticate to the cache.
#[derive(Default, Clone)]
pub struct ClientOptions {
    pub basic_auth: Option<(String, String)>,
    /// PEM CA certificates to trust for HTTPS (none = the system's are not consulted).
    pub ca_pem: Option<Vec<u8>>,
    /// PEM certificate chain and private key to present.
    pub identity_pem: Option<Vec<u8>>,
    pub timeout: Option<Duration>,
}

pub struct DscClient {
    http: reqwest::Client,
    base: String,
    basic_auth: Option<(String, String)>,
}

/// The `<op>Return` element of an answer (or, for answers whose result is the text of
/// `<op>Return`, that element too).
#[derive(Debug, Clone)]
pub struct Reply {
    pub ret: Element<'static>,
}

impl Reply {
    /// The result code: `result` child, or the element's own text.
    pub fn result(&self) -> u32 {
        let text = self.ret.child("result").map_or(&*self.ret.text, |r| &*r.text);
        text.trim().parse().unwrap_or(0)
    }

    pub fn text(&self, name: &str) -> Option<String> {
        self.ret.child(name).map(|e| e.text.trim().to_string())
    }

    pub fn number(&self, name: &str) -> Option<i64> {
        self.text(name).and_then(|t| t.parse().ok())
    }

    pub fn data(&self) -> Vec<DataItem> {
        self.ret
            .children_named("data")
            .map(|d| DataItem {
                data_class: item_name(d.child("dataClass").map_or("", |e| &e.text)),
                instance: item_name(d.child("instance").map_or("", |e| &e.text)),
                value: d.child("value").filter(|v| !v.nil).map(|v| v.text.to_string()),
            })
            .collect()
    }

    /// The `outAttrs` groups of an admin answer.
    pub fn groups(&self) -> Vec<Vec<(String, String)>> {
        self.ret
            .children_named("outAttrs")
            .map(|g| {
                g.children_named("attributes")
                    .map(|a| {
                        (
                            a.child("name").map(|e| e.text.to_string()).unwrap_or_default(),
                            a.child("values").map(|e| e.text.to_string()).unwrap_or_default(),
                        )
                    })
                    .collect()
            })
            .collect()
    }
}

impl DscClient {
    /// `base` is `http(s)://host:port`; the DSC paths are appended.
    pub fn new(base: &str, options: ClientOptions) -> Result<Self, ClientError> {
        crate::server::install_crypto_provider();
        let tls = rustls::ClientConfig::builder();
        let mut roots = rustls::RootCertStore::empty();
        if let Some(pem) = &options.ca_pem {
            for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
                let cert = cert.map_err(|e| ClientError::Setup(format!("CA certificates: {e}")))?;
                roots
                    .add(cert)
                    .map_err(|e| ClientError::Setup(format!("CA certificates: {e}")))?;
            }
        }
        let tls = tls.with_root_certificates(roots);
        let mut config = match &options.identity_pem {
            None => tls.with_no_client_auth(),
            Some(pem) => {
                let certs = rustls_pemfile::certs(&mut pem.as_slice())
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| ClientError::Setup(format!("client certificate: {e}")))?;
                let key = rustls_pemfile::private_key(&mut pem.as_slice())
                    .map_err(|e| ClientError::Setup(format!("client key: {e}")))?
                    .ok_or_else(|| ClientError::Setup("the client identity holds no private key".into()))?;
                tls.with_client_auth_cert(certs, key)
                    .map_err(|e| ClientError::Setup(format!("client identity: {e}")))?
            }
        };
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let mut builder = reqwest::Client::builder()
            .use_preconfigured_tls(config)
            .pool_max_idle_per_host(16);
        if let Some(t) = options.timeout {
            builder = builder.timeout(t);
        }
        Ok(Self {
            http: builder.build().map_err(|e| ClientError::Setup(e.to_string()))?,
            base: base.trim_end_matches('/').to_string(),
            basic_auth: options.basic_auth,
        })
    }

    /// Posts a raw body to a path: `(status, body)`. For tests of hostile input.
    pub async fn post_raw(&self, path: &str, body: impl Into<reqwest::Body>) -> Result<(u16, String), ClientError> {
        let mut req = self
            .http
            .post(format!("{}{}", self.base, path))
            .header("Content-Type", "text/xml; charset=utf-8");
        if let Some((user, password)) = &self.basic_auth {
            req = req.basic_auth(user, Some(password));
        }
        let resp = req.body(body).send().await?;
        let status = resp.status().as_u16();
        Ok((status, resp.text().await?))
    }

    async fn call(&self, admin: bool, operation: &str, body: String) -> Result<Reply, ClientError> {
        let path = if admin { ADMIN_PATH } else { CLIENT_PATH };
        let mut req = self
            .http
            .post(format!("{}{}", self.base, path))
            .header("Content-Type", "text/xml; charset=utf-8")
            .header("SOAPAction", format!("\"{operation}\""));
        if let Some((user, password)) = &self.basic_auth {
            req = req.basic_auth(user, Some(password));
        }
        let resp = req.body(body).send().await?;
        let status = resp.status().as_u16();
        let text = resp.bytes().await?;
        if let Some((code, message)) = soap::read_fault(&text) {
            return Err(ClientError::Fault {
                status,
                fault: format!("{code}: {message}"),
            });
        }
        if status != 200 {
            return Err(ClientError::Fault {
                status,
                fault: String::from_utf8_lossy(&text).chars().take(200).collect(),
            });
        }
        let response = soap::read_operation(&text).map_err(|e| ClientError::Malformed(e.to_string()))?;
        if response.name != format!("{operation}Response") {
            return Err(ClientError::Malformed(format!(
                "expected {operation}Response, got {}",
                response.name
            )));
        }
        let ret = response
            .child(&format!("{operation}Return"))
            .cloned()
            .map(soap::Element::into_owned)
            .ok_or_else(|| ClientError::Malformed(format!("{operation}Response has no {operation}Return")))?;
        Ok(Reply { ret })
    }

    fn message(operation: &str, namespace: &str, fill: impl FnOnce(&mut MessageWriter)) -> String {
        let mut w = MessageWriter::new(operation, namespace);
        fill(&mut w);
        w.finish(operation)
    }

    async fn client_call(&self, operation: &str, fill: impl FnOnce(&mut MessageWriter)) -> Result<Reply, ClientError> {
        self.call(false, operation, Self::message(operation, CLIENT_NS, fill))
            .await
    }

    pub async fn ping(&self) -> Result<Reply, ClientError> {
        self.client_call("ping", |w| w.field("something", "0")).await
    }

    pub async fn join_replica_set(
        &self,
        replica: &str,
        instance: &str,
        capabilities: u64,
        replica_set: &str,
    ) -> Result<Reply, ClientError> {
        self.client_call("joinReplicaSet", |w| {
            w.field("replica", replica);
            w.field("instance", instance);
            w.number("capabilities", capabilities);
            w.field("replicaSet", replica_set);
        })
        .await
    }

    pub async fn replica_shutdown(&self, replica: &str) -> Result<Reply, ClientError> {
        self.client_call("replicaShutdown", |w| w.field("replica", replica))
            .await
    }

    pub async fn get_realm_name(&self, replica: &str, replica_set: &str) -> Result<Reply, ClientError> {
        self.client_call("getRealmName", |w| {
            w.field("replica", replica);
            w.field("replicaSet", replica_set);
        })
        .await
    }

    pub async fn get_updates(
        &self,
        replica: &str,
        instance: &str,
        replica_set: Option<&str>,
        response_by_secs: u64,
    ) -> Result<Reply, ClientError> {
        self.client_call("getUpdates", |w| {
            w.field("replica", replica);
            w.field("instance", instance);
            w.optional_field("replicaSet", replica_set);
            w.number("responseBy", response_by_secs);
        })
        .await
    }

    fn write_data(w: &mut MessageWriter, items: &[DataItem]) {
        for item in items {
            w.open("data");
            w.optional_field("value", item.value.as_deref());
            w.field("dataClass", &item.data_class);
            w.field("instance", &item.instance);
            w.field("changePolicy", "1");
            w.close("data");
        }
    }

    pub async fn create_session(
        &self,
        replica: &str,
        replica_set: &str,
        session_id: &str,
        session_limit: i64,
        items: &[DataItem],
    ) -> Result<Reply, ClientError> {
        self.client_call("createSession", |w| {
            w.field("replica", replica);
            w.field("replicaSet", replica_set);
            w.field("sessionID", session_id);
            w.number("sessionLimit", session_limit);
            Self::write_data(w, items);
        })
        .await
    }

    pub async fn get_session(&self, replica: &str, replica_set: &str, session_id: &str) -> Result<Reply, ClientError> {
        self.client_call("getSession", |w| {
            w.field("replica", replica);
            w.field("replicaSet", replica_set);
            w.field("sessionID", session_id);
            w.field("ssoType", "local");
            w.optional_field("ssoSource", None);
        })
        .await
    }

    pub async fn change_session(
        &self,
        replica: &str,
        replica_set: &str,
        session_id: &str,
        version: u64,
        items: &[DataItem],
    ) -> Result<Reply, ClientError> {
        self.client_call("changeSession", |w| {
            w.field("replica", replica);
            w.field("replicaSet", replica_set);
            w.field("sessionID", session_id);
            w.number("version", version);
            w.field("push", "false");
            w.number("sessionLimit", 0);
            Self::write_data(w, items);
        })
        .await
    }

    pub async fn idle_timeout(&self, replica: &str, replica_set: &str, session_id: &str) -> Result<Reply, ClientError> {
        self.client_call("idleTimeout", |w| {
            w.field("replica", replica);
            w.field("replicaSet", replica_set);
            w.field("sessionID", session_id);
        })
        .await
    }

    pub async fn terminate_session(
        &self,
        replica: &str,
        replica_set: &str,
        session_id: &str,
    ) -> Result<Reply, ClientError> {
        self.client_call("terminateSession", |w| {
            w.field("replica", replica);
            w.field("replicaSet", replica_set);
            w.field("sessionID", session_id);
            w.number("level", 0);
            w.number("version", 0);
            w.number("reason", 952467606u32);
        })
        .await
    }

    /// An admin `execute` request with its attributes (`Version` is added as IBM's tools do).
    pub async fn execute(&self, request: &str, attributes: &[(&str, &str)]) -> Result<Reply, ClientError> {
        let body = Self::message("execute", ADMIN_NS, |w| {
            w.field("request", request);
            w.open("inAttrs");
            for (name, value) in attributes.iter().chain([&("Version", "6.0.0.0")]) {
                w.open("attributes");
                w.field("name", name);
                w.field("values", value);
                w.close("attributes");
            }
            w.close("inAttrs");
        });
        self.call(true, "execute", body).await
    }
}
