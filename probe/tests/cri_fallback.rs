//! CRI fallback against a real containerd: a Kubernetes-style pod made through the CRI API
//! (no kubelet, no registry, no CNI) attacks the Docker socket; the API double holds no Pod
//! object, so the probe can only name the pod from the container's CRI labels.
mod common;

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use common::{environment_ready, which, Docker, Probe};
use hyper_util::rt::TokioIo;
use k8s_cri::v1::{
    runtime_service_client::RuntimeServiceClient, ContainerConfig, ContainerMetadata,
    CreateContainerRequest, ImageSpec, LinuxContainerConfig, LinuxPodSandboxConfig,
    LinuxSandboxSecurityContext, Mount, NamespaceMode, NamespaceOption, PodSandboxConfig,
    PodSandboxMetadata, RemovePodSandboxRequest, RunPodSandboxRequest, StartContainerRequest,
    StopPodSandboxRequest,
};
use tonic::transport::{Endpoint, Uri};

struct Containerd {
    child: Child,
    dir: PathBuf,
}

impl Containerd {
    fn sock(&self) -> PathBuf {
        self.dir.join("containerd.sock")
    }

    fn start(dir: &Path) -> Containerd {
        for d in ["root", "state", "cni/bin", "cni/conf", "logs"] {
            std::fs::create_dir_all(dir.join(d)).unwrap();
        }
        let d = dir.display();
        let config = format!(
            r#"version = 2
root = "{d}/root"
state = "{d}/state"
[grpc]
  address = "{d}/containerd.sock"
[ttrpc]
  address = "{d}/containerd.sock.ttrpc"
[debug]
  address = "{d}/debug.sock"
[plugins]
  [plugins."io.containerd.grpc.v1.cri"]
    sandbox_image = "docker.io/library/sockwarden-pause:latest"
    restrict_oom_score_adj = true
    [plugins."io.containerd.grpc.v1.cri".cni]
      bin_dir = "{d}/cni/bin"
      conf_dir = "{d}/cni/conf"
"#
        );
        std::fs::write(dir.join("config.toml"), config).unwrap();
        let log = std::fs::File::create(dir.join("containerd.log")).unwrap();
        let child = Command::new(which("containerd").expect("containerd"))
            .arg("--config")
            .arg(dir.join("config.toml"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start containerd");
        let c = Containerd {
            child,
            dir: dir.to_path_buf(),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if c.ctr(&["version"]).status.success() {
                return c;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!(
            "containerd did not start: {}",
            std::fs::read_to_string(dir.join("containerd.log")).unwrap_or_default()
        );
    }

    fn ctr(&self, args: &[&str]) -> std::process::Output {
        Command::new("ctr")
            .arg("--address")
            .arg(self.sock())
            .args(args)
            .output()
            .unwrap()
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

async fn cri_client(sock: PathBuf) -> RuntimeServiceClient<tonic::transport::Channel> {
    let channel = Endpoint::try_from("http://[::]:0")
        .unwrap()
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let sock = sock.clone();
            async move {
                Ok::<_, std::io::Error>(TokioIo::new(tokio::net::UnixStream::connect(sock).await?))
            }
        }))
        .await
        .unwrap();
    RuntimeServiceClient::new(channel)
}

#[test]
fn a_cri_pod_unknown_to_the_api_is_named_from_its_cri_labels() {
    if !environment_ready() {
        return;
    }
    if which("containerd").is_none() || which("ctr").is_none() {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!(
                "CI must run the CRI test, but containerd/ctr are missing (run scripts/setup.sh)"
            );
        }
        eprintln!("SKIPPED: needs containerd and ctr (run scripts/setup.sh)");
        return;
    }
    common::register_cleanup();
    let dir = PathBuf::from(format!("/tmp/sw-cri-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();

    // Images without a registry: built with Docker, saved, imported into containerd's
    // Kubernetes namespace. The sandbox ("pause") image needs a command.
    let docker = Docker::start(&dir.join("docker"));
    docker.build_image();
    let rootfs_tar = dir.join("docker/rootfs.tar");
    let out = docker.cli(&[
        "import",
        "--change",
        r#"CMD ["/bin/sleep", "86400"]"#,
        rootfs_tar.to_str().unwrap(),
        "sockwarden-pause:latest",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let images = dir.join("images.tar");
    let out = docker.cli(&[
        "save",
        "-o",
        images.to_str().unwrap(),
        common::IMAGE,
        "sockwarden-pause:latest",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let containerd = Containerd::start(&dir.join("containerd"));
    let out = containerd.ctr(&["-n", "k8s.io", "images", "import", images.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "ctr import: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let rt = tokio::runtime::Runtime::new().unwrap();
    let api = rt.block_on(common::fake_api::FakeApi::start());
    let kubeconfig = dir.join("kubeconfig");
    api.write_kubeconfig(&kubeconfig);
    let probe = Probe::start_with_env(
        &[
            "--cluster".into(),
            "--node".into(),
            "cri-node".into(),
            "--no-default-sockets".into(),
            "--socket".into(),
            format!("{}=docker", docker.sock.display()),
            "--cri-socket".into(),
            containerd.sock().display().to_string(),
        ],
        &[("KUBECONFIG", kubeconfig.to_str().unwrap())],
        &dir,
    );

    let uid = "6f9d2c1e-4b3a-4d5e-9f80-a1b2c3d4e5f6";
    let (sandbox_id, container_id) = rt.block_on(async {
        let mut cri = cri_client(containerd.sock()).await;
        let labels: HashMap<String, String> = [
            ("io.kubernetes.pod.name", "cri-pod"),
            ("io.kubernetes.pod.namespace", "cri-ns"),
            ("io.kubernetes.pod.uid", uid),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let sandbox_config = PodSandboxConfig {
            metadata: Some(PodSandboxMetadata {
                name: "cri-pod".into(),
                uid: uid.into(),
                namespace: "cri-ns".into(),
                attempt: 0,
            }),
            log_directory: dir.join("containerd/logs").display().to_string(),
            labels: labels.clone(),
            linux: Some(LinuxPodSandboxConfig {
                cgroup_parent: format!("/kubepods/besteffort/pod{uid}"),
                security_context: Some(LinuxSandboxSecurityContext {
                    namespace_options: Some(NamespaceOption {
                        network: NamespaceMode::Node as i32,
                        pid: NamespaceMode::Pod as i32,
                        ipc: NamespaceMode::Pod as i32,
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let sandbox = cri
            .run_pod_sandbox(RunPodSandboxRequest {
                config: Some(sandbox_config.clone()),
                runtime_handler: String::new(),
            })
            .await
            .expect("RunPodSandbox")
            .into_inner()
            .pod_sandbox_id;
        let mut container_labels = labels.clone();
        container_labels.insert("io.kubernetes.container.name".into(), "attacker".into());
        let container = cri
            .create_container(CreateContainerRequest {
                pod_sandbox_id: sandbox.clone(),
                config: Some(ContainerConfig {
                    metadata: Some(ContainerMetadata {
                        name: "attacker".into(),
                        attempt: 0,
                    }),
                    image: Some(ImageSpec {
                        image: format!("docker.io/library/{}", common::IMAGE),
                        ..Default::default()
                    }),
                    command: vec!["/swclient".into()],
                    args: vec!["connect".into(), "/var/run/docker.sock".into()],
                    mounts: vec![Mount {
                        container_path: "/var/run/docker.sock".into(),
                        host_path: docker.sock.display().to_string(),
                        ..Default::default()
                    }],
                    labels: container_labels,
                    log_path: "attacker.log".into(),
                    linux: Some(LinuxContainerConfig::default()),
                    ..Default::default()
                }),
                sandbox_config: Some(sandbox_config),
            })
            .await
            .expect("CreateContainer")
            .into_inner()
            .container_id;
        cri.start_container(StartContainerRequest {
            container_id: container.clone(),
        })
        .await
        .expect("StartContainer");
        (sandbox, container)
    });

    let deadline = Instant::now() + Duration::from_secs(15);
    let found = loop {
        let all = api.findings();
        if !all.is_empty() || Instant::now() > deadline {
            break all;
        }
        std::thread::sleep(Duration::from_millis(100));
    };

    rt.block_on(async {
        let mut cri = cri_client(containerd.sock()).await;
        let _ = cri
            .stop_pod_sandbox(StopPodSandboxRequest {
                pod_sandbox_id: sandbox_id.clone(),
            })
            .await;
        let _ = cri
            .remove_pod_sandbox(RemovePodSandboxRequest {
                pod_sandbox_id: sandbox_id,
            })
            .await;
    });
    let log = probe.log();
    assert!(probe.terminate().success());
    drop(containerd);
    for hierarchy in std::fs::read_dir("/sys/fs/cgroup").unwrap().flatten() {
        let _ = std::fs::remove_dir(
            hierarchy
                .path()
                .join(format!("kubepods/besteffort/pod{uid}")),
        );
        let _ = std::fs::remove_dir(hierarchy.path().join("kubepods/besteffort"));
        let _ = std::fs::remove_dir(hierarchy.path().join("kubepods"));
    }

    assert_eq!(
        found.len(),
        1,
        "one finding from the CRI pod: {found:#?}\n{log}"
    );
    let obj = &found[0];
    assert_eq!(obj["metadata"]["namespace"], "cri-ns");
    assert_eq!(obj["spec"]["pod"]["name"], "cri-pod");
    assert_eq!(obj["spec"]["pod"]["uid"], uid);
    assert_eq!(obj["spec"]["container"]["name"], "attacker");
    assert_eq!(obj["spec"]["container"]["id"], container_id.as_str());
    assert_eq!(obj["spec"]["node"], "cri-node");
    assert_eq!(obj["status"]["count"], 1);
}
