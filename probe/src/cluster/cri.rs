//! Attribution through the container runtime's CRI API, for a container that attacked
//! before the pod cache saw it: `runtime.v1.RuntimeService/ContainerStatus` returns the
//! `io.kubernetes.*` labels kubelet set when it created the container.
use std::path::Path;

use hyper_util::rt::TokioIo;
use k8s_cri::v1::{
    runtime_service_client::RuntimeServiceClient, ContainerStatusRequest, VersionRequest,
};
use tokio::net::UnixStream;
use tonic::transport::{Channel, Endpoint, Uri};

use super::pods::PodMeta;

/// CRI sockets tried when none is configured (containerd, k3s/rke2 containerd, CRI-O).
pub const DEFAULT_CRI_SOCKETS: &[&str] = &[
    "/run/containerd/containerd.sock",
    "/run/k3s/containerd/containerd.sock",
    "/var/run/crio/crio.sock",
];

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
    pub async fn pod_meta(&mut self, container_id: &str) -> Option<PodMeta> {
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
        let label = |k: &str| status.labels.get(k).cloned();
        Some(PodMeta {
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
            // CRI container labels carry neither pod labels nor the service account.
            service_account: None,
            labels: Default::default(),
            controller: None,
            workload: None,
        })
    }
}
