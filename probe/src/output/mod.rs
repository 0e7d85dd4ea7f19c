//! Where a reported finding goes besides the API server: one line on stdout and, when asked,
//! an HTTP endpoint (Falco's JSON, for Falcosidekick and the like). [`Outputs::publish`] is the
//! one place a finding fans out, whichever mode (standalone or cluster) decided it.
pub mod falco;
pub mod http;

use std::io::Write;

use serde::Serialize;

use crate::finding::Finding;

/// The Kubernetes context a cluster-mode finding was reported under (its pod as the pod
/// object says, and the policy verdict).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct KubeContext {
    pub namespace: String,
    pub pod: String,
    pub pod_uid: String,
    pub container: String,
    pub image: Option<String>,
    pub workload: Option<api::WorkloadRef>,
    pub service_account: Option<String>,
    pub policy: String,
    pub severity: u8,
    /// Name of the `DockerAbuseFinding` object this finding is counted in.
    pub finding: String,
}

/// A reported finding as the outputs see it.
#[derive(Debug, Clone, Copy)]
pub struct Report<'a> {
    pub finding: &'a Finding,
    /// `None`: standalone mode, or a cluster-mode finding whose pod is unknown.
    pub kubernetes: Option<&'a KubeContext>,
    /// Occurrences this report stands for (cluster mode coalesces repeats; standalone: 1).
    pub count: i64,
}

/// The stdout line: the finding's own fields, then `kubernetes` (null when there is none) and
/// `count`, so every line has one shape.
#[derive(Serialize)]
struct Line<'a> {
    #[serde(flatten)]
    finding: &'a Finding,
    kubernetes: Option<&'a KubeContext>,
    count: i64,
}

impl Report<'_> {
    pub fn to_json(&self) -> String {
        // Plain strings and numbers: serialising cannot fail.
        serde_json::to_string(&Line {
            finding: self.finding,
            kubernetes: self.kubernetes,
            count: self.count,
        })
        .unwrap_or_default()
    }

    pub fn to_text(&self) -> String {
        let mut line = self.finding.to_text();
        if let Some(k) = self.kubernetes {
            line.push_str(&format!(
                " namespace={} pod={} policy={} severity={}",
                k.namespace, k.pod, k.policy, k.severity
            ));
        }
        if self.count != 1 {
            line.push_str(&format!(" count={}", self.count));
        }
        line
    }

    /// The policy's severity in cluster mode, TRC-1019's otherwise.
    pub fn severity(&self) -> u8 {
        self.kubernetes
            .map_or(self.finding.signature.severity, |k| k.severity)
    }
}

/// The outputs of one probe: a writer for the stdout line (injectable, so tests read what
/// would have been printed) and the optional HTTP queue.
pub struct Outputs {
    out: Box<dyn Write + Send>,
    json: bool,
    http: Option<http::HttpOutput>,
}

impl Outputs {
    pub fn new(out: Box<dyn Write + Send>, json: bool, http: Option<http::HttpOutput>) -> Self {
        Self { out, json, http }
    }

    /// Prints the finding's line and queues it for HTTP; never blocks on the network.
    pub fn publish(&mut self, report: &Report) {
        let line = if self.json {
            report.to_json()
        } else {
            report.to_text()
        };
        if let Err(e) = writeln!(self.out, "{line}") {
            tracing::error!(error = %e, "writing a finding to stdout failed");
        }
        if let Some(http) = &self.http {
            http.offer(report);
        }
    }

    pub fn flush(&mut self) {
        let _ = self.out.flush();
    }
}

/// A writer whose bytes a test can read back while something else owns it.
#[cfg(test)]
#[derive(Clone, Default)]
pub struct SharedBuf(pub std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

#[cfg(test)]
impl SharedBuf {
    pub fn lines(&self) -> Vec<String> {
        String::from_utf8(self.0.lock().unwrap().clone())
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect()
    }
}

#[cfg(test)]
impl Write for SharedBuf {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
pub(crate) fn sample_context() -> KubeContext {
    KubeContext {
        namespace: "shop".into(),
        pod: "web-1".into(),
        pod_uid: "pod-uid-1".into(),
        container: "app".into(),
        image: Some("registry.example/app:1".into()),
        workload: Some(api::WorkloadRef {
            kind: "Deployment".into(),
            name: "web".into(),
        }),
        service_account: Some("web-sa".into()),
        policy: "default".into(),
        severity: 3,
        finding: "daf-0123".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::finding::sample;

    #[test]
    fn a_standalone_line_is_the_finding_with_a_null_context_and_count_one() {
        let f = sample();
        let line = Report {
            finding: &f,
            kubernetes: None,
            count: 1,
        }
        .to_json();
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        let mut expected: serde_json::Value = serde_json::from_str(&f.to_json()).unwrap();
        expected["kubernetes"] = serde_json::Value::Null;
        expected["count"] = 1.into();
        assert_eq!(v, expected, "the standalone shape plus two keys");
    }

    #[test]
    fn a_cluster_line_carries_the_kubernetes_context_and_the_coalesced_count() {
        let f = sample();
        let k = sample_context();
        let line = Report {
            finding: &f,
            kubernetes: Some(&k),
            count: 41,
        }
        .to_json();
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["signature"]["id"], "TRC-1019");
        assert_eq!(v["socket"]["hostPath"], "/run/docker.sock");
        assert_eq!(v["count"], 41);
        assert_eq!(
            v["kubernetes"],
            serde_json::json!({
                "namespace": "shop", "pod": "web-1", "podUid": "pod-uid-1", "container": "app",
                "image": "registry.example/app:1",
                "workload": {"kind": "Deployment", "name": "web"},
                "serviceAccount": "web-sa", "policy": "default", "severity": 3,
                "finding": "daf-0123"
            })
        );
    }

    #[test]
    fn hostile_strings_stay_inside_one_line_of_json() {
        let mut f = sample();
        f.process.comm = "x\"}\n{\"evil\":1".into();
        f.process.cmdline = Some("a\u{0}b\r\n\u{1b}[2J".into());
        let mut k = sample_context();
        k.pod = "p\"od\n".into();
        let buf = SharedBuf::default();
        let mut outputs = Outputs::new(Box::new(buf.clone()), true, None);
        outputs.publish(&Report {
            finding: &f,
            kubernetes: Some(&k),
            count: 1,
        });
        let lines = buf.lines();
        assert_eq!(lines.len(), 1, "{lines:?}");
        let v: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
        assert_eq!(v["process"]["comm"], f.process.comm.as_str());
        assert_eq!(v["kubernetes"]["pod"], "p\"od\n");
        assert!(v.get("evil").is_none());
    }
}
