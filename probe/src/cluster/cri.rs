//! Attribution through the container runtime's CRI API, for a container that attacked
//! before the pod cache saw it: `runtime.v1.RuntimeService/ContainerStatus` returns the
//! `io.kubernetes.*` labels kubelet set when it created the container. Those labels only
//! identify the pod ([`PodIdentity`]); the pod object supplies what policies judge by.
use std::path::Path;

use futures::future::BoxFuture;

use hyper_util::rt::TokioIo;
use k8s_cri::v1::{
    runtime_service_client::RuntimeServiceClient, ContainerStatusRequest, VersionRequest,
};
use tokio::net::UnixStream;
use tonic::transport::{Channel, Endpoint, Uri};

use super::pods::PodIdentity;

/// CRI sockets tried when none is configured (containerd, k3s/rke2 containerd, CRI-O).
pub const DEFAULT_CRI_SOCKETS: &[&str] = &[
    "/run/containerd/containerd.sock",
    "/run/k3s/containerd/containerd.sock",
    "/var/run/crio/crio.sock",
];

/// Where the enricher learns which pod a container belongs to before the pod's status lists
/// it: the runtime's CRI API in production, a table in tests.
pub trait IdentitySource: Send {
    /// The pod and container `container_id` is, or `None` when this source does not know it.
    fn identity<'a>(&'a mut self, container_id: &'a str) -> BoxFuture<'a, Option<PodIdentity>>;
}

#[derive(Clone)]
pub struct CriClient {
    client: RuntimeServiceClient<Channel>,
}

impl CriClient {
    /// Connects lazily: the socket is dialled on first use and re-dialled after failures.
    pub fn new(socket: &Path) -> anyhow::Result<Self> {
        let path = socket.to_path_buf();
        let channel =
            Endpoint::try_from("http://[::]:0")?.connect_with_connector_lazy(tower::service_fn(
                move |_: Uri| {
                    let path = path.clone();
                    async move {
                        Ok::<_, std::io::Error>(TokioIo::new(UnixStream::connect(path).await?))
                    }
                },
            ));
        Ok(Self {
            client: RuntimeServiceClient::new(channel),
        })
    }

    /// `(runtime name, runtime version)`.
    pub async fn version(&mut self) -> Result<(String, String), tonic::Status> {
        let v = self
            .client
            .version(VersionRequest {
                version: String::new(),
            })
            .await?
            .into_inner();
        Ok((v.runtime_name, v.runtime_version))
    }

    /// The pod a container belongs to, from its CRI labels.
    pub async fn pod_identity(&mut self, container_id: &str) -> Option<PodIdentity> {
        let status = self
            .client
            .container_status(ContainerStatusRequest {
                container_id: container_id.into(),
                verbose: false,
            })
            .await
            .ok()?
            .into_inner()
            .status?;
        let label = |k: &str| status.labels.get(k).cloned().filter(|v| !v.is_empty());
        Some(PodIdentity {
            namespace: label("io.kubernetes.pod.namespace")?,
            name: label("io.kubernetes.pod.name")?,
            uid: label("io.kubernetes.pod.uid")?,
            container_name: label("io.kubernetes.container.name")
                .or_else(|| status.metadata.as_ref().map(|m| m.name.clone()))
                .unwrap_or_default(),
            image: status
                .image
                .as_ref()
                .map(|i| i.image.clone())
                .filter(|i| !i.is_empty())
                .or(Some(status.image_ref.clone()).filter(|i| !i.is_empty())),
        })
    }
}

impl IdentitySource for CriClient {
    fn identity<'a>(&'a mut self, container_id: &'a str) -> BoxFuture<'a, Option<PodIdentity>> {
        Box::pin(self.pod_identity(container_id))
    }
}
