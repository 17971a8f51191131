//! Discovery, asked once at start: which of the kinds a SessionCache emits the API server
//! serves, and whether its version runs native sidecars. A kind it does not serve is neither applied nor watched (a watch on it would fail its
//! first list over and over), and every SessionCache reports it once in `Degraded`.

use std::collections::{BTreeMap, BTreeSet};

use kube::Client;

use crate::api_error::one_line;
use crate::apply::{Failure, Kind};
use crate::build::sidecar::Placement;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot ask the API server for its version (to choose native sidecars): {}", one_line(.0))]
    Version(#[source] kube::Error),
    #[error("cannot ask the API server which resources {api_version} has: {}", one_line(.source))]
    Discovery {
        api_version: String,
        #[source]
        source: kube::Error,
    },
}

/// The emitted kinds the API server serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServedKinds(BTreeSet<Kind>);

impl Default for ServedKinds {
    /// Every kind, as on any supported cluster.
    fn default() -> Self {
        Self(Kind::ALL.into_iter().collect())
    }
}

impl ServedKinds {
    pub fn from_kinds(kinds: impl IntoIterator<Item = Kind>) -> Self {
        Self(kinds.into_iter().collect())
    }

    pub fn serves(&self, kind: Kind) -> bool {
        self.0.contains(&kind)
    }

    /// The emitted kinds this server does not serve, as failures to report.
    pub fn missing(&self) -> Vec<Failure> {
        Kind::ALL
            .into_iter()
            .filter(|k| !self.serves(*k))
            .map(Failure::NotServed)
            .collect()
    }
}

/// Where the injected shim goes, as the API server's version allows: a native sidecar from
/// Kubernetes 1.29 on.
pub async fn placement(client: &Client) -> Result<Placement, Error> {
    let info = client.apiserver_version().await.map_err(Error::Version)?;
    // A version that does not read as numbers gets the container that works everywhere.
    Ok(Placement::for_version(&info.major, &info.minor).unwrap_or(Placement::Plain))
}

/// Asks the API server for the resources of each API version the emitted kinds use (a version
/// it does not serve answers 404).
pub async fn served_kinds(client: &Client) -> Result<ServedKinds, Error> {
    let mut by_version: BTreeMap<String, Vec<Kind>> = BTreeMap::new();
    for kind in Kind::ALL {
        by_version.entry(kind.api_version()).or_default().push(kind);
    }
    let mut served = BTreeSet::new();
    for (api_version, kinds) in by_version {
        let listed = if api_version.contains('/') {
            client.list_api_group_resources(&api_version).await
        } else {
            client.list_core_api_resources(&api_version).await
        };
        let resources = match listed {
            Ok(list) => list.resources,
            // A group the server does not know at all (cert-manager's, where it is not installed)
            // answers a plain-text 404, not a Status: the code is what counts.
            Err(kube::Error::Api(status)) if status.code == 404 => Vec::new(),
            Err(source) => return Err(Error::Discovery { api_version, source }),
        };
        served.extend(
            kinds
                .into_iter()
                .filter(|k| resources.iter().any(|r| r.name == k.plural())),
        );
    }
    Ok(ServedKinds(served))
}

#[cfg(test)]
mod tests {
    use http::Method;
    use serde_json::json;

    use super::*;
    use crate::apply;
    use crate::fixtures::{mock_client, Reply, Step};

    fn resources(group_version: &str, names: &[&str]) -> Reply {
        Reply::Json(json!({
            "kind": "APIResourceList",
            "apiVersion": "v1",
            "groupVersion": group_version,
            "resources": names.iter().map(|n| json!({
                "name": n, "singularName": "", "namespaced": true, "kind": "X", "verbs": ["get"]
            })).collect::<Vec<_>>()
        }))
    }

    #[tokio::test]
    async fn a_version_the_server_lacks_is_not_served() {
        let (client, server) = mock_client();
        // In the order of the API versions' names.
        let server = server.run(vec![
            Step::new(Method::GET, "/apis/apps/v1").reply(resources("apps/v1", &["deployments", "statefulsets"])),
            // A group it has never heard of: plain text, not a Status.
            Step::new(Method::GET, "/apis/cert-manager.io/v1").reply(Reply::PageNotFound),
            Step::new(Method::GET, "/apis/networking.k8s.io/v1")
                .reply(resources("networking.k8s.io/v1", &["networkpolicies"])),
            Step::new(Method::GET, "/apis/policy/v1").reply(Reply::not_found()),
            Step::new(Method::GET, "/api/v1").reply(resources("v1", &["configmaps", "secrets", "services"])),
        ]);
        let served = served_kinds(&client).await.unwrap();
        drop(client);
        server.finish().await;
        assert!(!served.serves(Kind::PodDisruptionBudget) && !served.serves(Kind::Certificate));
        assert!(Kind::ALL
            .into_iter()
            .filter(|k| ![Kind::PodDisruptionBudget, Kind::Certificate].contains(k))
            .all(|k| served.serves(k)));
        assert_eq!(
            apply::join(&served.missing()),
            "this cluster does not serve policy/v1 PodDisruptionBudget; Kubernetes 1.21 or newer is needed; \
             this cluster does not serve cert-manager.io/v1 Certificate; cert-manager 1.0 or newer is needed"
        );
    }
}
