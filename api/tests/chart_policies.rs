//! The chart's default policy and every example, rendered by helm and judged by the same
//! compiled policy code the probe runs: each compiles (follows the exemption rules), and a
//! table of pods — impostors and the real agents — gets the verdict it should.
use std::{collections::BTreeMap, path::Path, process::Command, sync::Arc};

use api::{
    compiled::{evaluate, CompiledPolicy, Subject, Verdict},
    DockerSocketPolicy, FindingOperation,
};

/// `helm template` of the chart with these values files, or `None` (with the reason printed)
/// outside CI when helm is missing.
fn render(values: &[&Path]) -> Option<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let helm = ["/opt/sockwarden-tools/bin/helm", "helm"]
        .into_iter()
        .find(|h| Command::new(h).arg("version").output().is_ok());
    let Some(helm) = helm else {
        assert!(
            std::env::var("CI").is_err(),
            "helm is missing in CI (scripts/setup.sh installs it)"
        );
        eprintln!("SKIP: helm not installed (scripts/setup.sh installs it)");
        return None;
    };
    let mut cmd = Command::new(helm);
    cmd.args(["template", "sockwarden"])
        .arg(root.join("charts/sockwarden"));
    for v in values {
        cmd.arg("-f").arg(v);
    }
    let out = cmd.output().expect("run helm");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(String::from_utf8(out.stdout).unwrap())
}

/// The rendered DockerSocketPolicies, compiled; panics when one does not compile.
fn policies(values: &[&Path]) -> Option<Vec<Arc<CompiledPolicy>>> {
    let rendered = render(values)?;
    let mut out = Vec::new();
    for doc in serde_yaml_ng::Deserializer::from_str(&rendered) {
        let v: serde_json::Value = serde::Deserialize::deserialize(doc).unwrap();
        if v["kind"] == "DockerSocketPolicy" {
            let p: DockerSocketPolicy = serde_json::from_value(v).unwrap();
            let compiled = CompiledPolicy::compile(&p)
                .unwrap_or_else(|e| panic!("{values:?}: policy {:?}: {e:?}", p.metadata.name));
            out.push(Arc::new(compiled));
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Some(out)
}

fn examples() -> Vec<std::path::PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../charts/sockwarden/examples");
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
}

#[derive(Clone, Copy)]
struct Pod {
    namespace: &'static str,
    service_account: &'static str,
    image: &'static str,
    labels: &'static [(&'static str, &'static str)],
    exe: Option<&'static str>,
}

fn verdict(policies: &[Arc<CompiledPolicy>], pod: &Pod) -> Verdict {
    let labels: BTreeMap<String, String> = pod
        .labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let ns_labels = BTreeMap::new();
    let subject = Subject {
        namespace: pod.namespace,
        namespace_labels: &ns_labels,
        pod_labels: &labels,
        service_account: pod.service_account,
        image: Some(pod.image),
        executable: pod.exe,
    };
    evaluate(policies, &subject, FindingOperation::Connect)
}

const ATTACKER: Pod = Pod {
    namespace: "shop",
    service_account: "default",
    image: "registry.example/x/datadog/agent:1",
    labels: &[],
    exe: Some("/usr/bin/curl"),
};

#[test]
fn every_example_and_the_default_policy_compile_under_the_exemption_rules() {
    let mut files: Vec<Vec<std::path::PathBuf>> = vec![vec![]];
    files.extend(examples().into_iter().map(|f| vec![f]));
    for values in files {
        let refs: Vec<&Path> = values.iter().map(|p| p.as_path()).collect();
        let Some(policies) = policies(&refs) else {
            return;
        };
        // Whatever the example, an impostor in an ordinary namespace is reported.
        if !policies.is_empty() {
            assert!(
                matches!(verdict(&policies, &ATTACKER), Verdict::Report { .. }),
                "{values:?}"
            );
        }
    }
}

#[test]
fn the_default_policy_exempts_the_real_agent_and_no_impostor() {
    let Some(policies) = policies(&[]) else {
        return;
    };
    let real_agent = Pod {
        namespace: "datadog",
        service_account: "datadog",
        image: "gcr.io/datadoghq/agent:7.50.1",
        labels: &[("app", "datadog")],
        exe: Some("/opt/datadog-agent/bin/agent/agent"),
    };
    let cases = [
        ("a look-alike repository in shop", ATTACKER, false),
        (
            "the real agent image with the attacker's own command, in shop",
            Pod {
                image: "docker.io/datadog/agent:7.50.1",
                ..ATTACKER
            },
            false,
        ),
        (
            "a pod that labels itself part of sockwarden",
            Pod {
                labels: &[("app.kubernetes.io/part-of", "sockwarden")],
                ..ATTACKER
            },
            false,
        ),
        (
            "the real agent image under another service account of its namespace",
            Pod {
                service_account: "default",
                ..real_agent
            },
            false,
        ),
        (
            "another image under the agent's service account",
            Pod {
                image: "busybox:1.36",
                ..real_agent
            },
            false,
        ),
        (
            "the real agent in its namespace with its service account",
            real_agent,
            true,
        ),
    ];
    for (what, pod, exempt) in cases {
        let v = verdict(&policies, &pod);
        assert_eq!(matches!(v, Verdict::Exempt { .. }), exempt, "{what}: {v:?}");
        if !exempt {
            assert!(matches!(v, Verdict::Report { .. }), "{what}: {v:?}");
        }
    }
}

#[test]
fn the_ci_runner_example_exempts_the_runner_account_running_docker_only() {
    let file = examples()
        .into_iter()
        .find(|p| p.ends_with("exempt-ci-runner.yaml"))
        .unwrap();
    let Some(policies) = policies(&[&file]) else {
        return;
    };
    let runner = Pod {
        namespace: "ci",
        service_account: "gitlab-runner",
        image: "docker:27-cli",
        labels: &[],
        exe: Some("/usr/local/bin/docker"),
    };
    let cases = [
        ("the runner running docker", runner, true),
        (
            "the runner running something else",
            Pod {
                exe: Some("/tmp/x"),
                ..runner
            },
            false,
        ),
        (
            "an exe the runner cannot be read for",
            Pod {
                exe: None,
                ..runner
            },
            false,
        ),
        (
            "a shop pod that names its binary /usr/bin/docker",
            Pod {
                exe: Some("/usr/bin/docker"),
                ..ATTACKER
            },
            false,
        ),
        (
            "another account in ci running docker",
            Pod {
                service_account: "default",
                ..runner
            },
            false,
        ),
    ];
    for (what, pod, exempt) in cases {
        let v = verdict(&policies, &pod);
        assert_eq!(matches!(v, Verdict::Exempt { .. }), exempt, "{what}: {v:?}");
    }
}
