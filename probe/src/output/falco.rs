//! A finding as a Falco alert in JSON, the input Falcosidekick accepts on `POST /`: it needs
//! a known `priority`, a `rule`, an RFC 3339 `time` and non-empty `output_fields`; `source`,
//! `tags` and `hostname` are optional and kept. Field names in `output_fields` follow Falco's
//! (`proc.name`, `fd.name`, `k8s.ns.name`, ...) so existing routing and templates work;
//! sockwarden's own facts are under `sockwarden.*`.
use std::collections::BTreeMap;

use api::FindingOperation;
use serde::Serialize;
use serde_json::{json, Value};
use time::{format_description::well_known::Rfc3339, OffsetDateTime};

use super::Report;

/// `source` on every event: lets Falcosidekick's users route sockwarden's apart from Falco's.
pub const SOURCE: &str = "sockwarden";

#[derive(Debug, Serialize)]
pub struct FalcoEvent {
    pub time: String,
    pub rule: &'static str,
    pub priority: &'static str,
    pub output: String,
    pub source: &'static str,
    pub tags: Vec<&'static str>,
    pub hostname: String,
    pub output_fields: BTreeMap<&'static str, Value>,
}

/// Falco priority for a severity on the policies' 0–3 scale. A container reaching a runtime
/// socket can own the node, so TRC-1019's default (2) is `Critical`; nothing is below
/// `Warning`.
pub fn priority(severity: u8) -> &'static str {
    match severity {
        0 => "Warning",
        1 => "Error",
        2 => "Critical",
        _ => "Alert",
    }
}

/// RFC 3339 in UTC with nine fractional digits, as Falco writes `time`.
fn falco_time(rfc3339: &str) -> OffsetDateTime {
    OffsetDateTime::parse(rfc3339, &Rfc3339)
        .unwrap_or_else(|_| OffsetDateTime::now_utc())
        .to_offset(time::UtcOffset::UTC)
}

/// Control characters (newlines, escape sequences) an attacker put in a name or command line
/// would reach chat messages and terminals through `output`: shown as U+FFFD there. The
/// `output_fields` keep the exact strings (JSON-escaped).
fn printable(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { '\u{fffd}' } else { c })
        .collect()
}

impl FalcoEvent {
    pub fn from_report(r: &Report) -> Self {
        let f = r.finding;
        let k = r.kubernetes;
        let at = falco_time(&f.time);
        let clock = format!(
            "{:02}:{:02}:{:02}.{:09}",
            at.hour(),
            at.minute(),
            at.second(),
            at.nanosecond()
        );
        let time = format!(
            "{:04}-{:02}-{:02}T{clock}Z",
            at.year(),
            u8::from(at.month()),
            at.day()
        );
        let priority = priority(r.severity());
        let container_id = f.container.as_ref().and_then(|c| c.id.as_deref());
        // Falco's container.id is the 12-character short id, `host` for a host process.
        let short_id = match (&f.container, container_id) {
            (_, Some(id)) => id[..id.len().min(12)].to_string(),
            (Some(_), None) => String::new(),
            (None, None) => "host".into(),
        };
        let place = match k {
            Some(k) => format!(
                "pod {}/{} container {}",
                printable(&k.namespace),
                printable(&k.pod),
                printable(&k.container)
            ),
            None if f.container.is_some() => format!("container {short_id}"),
            None => "the host".into(),
        };
        let via = match f.requested_path.as_deref() {
            Some(p) if p != f.socket.host_path => format!(" via {}", printable(p)),
            _ => String::new(),
        };
        let output = format!(
            "{clock}: {priority} {rule}: process {comm} (pid {pid}, uid {uid}, exe {exe}) in {place} {verb} the {runtime} socket {socket}{via} on node {node}{times}",
            rule = f.signature.name,
            comm = printable(&f.process.comm),
            pid = f.process.pid,
            uid = f.process.uid,
            exe = printable(f.process.exe.as_deref().unwrap_or("?")),
            verb = match f.operation {
                FindingOperation::Open => "opened",
                FindingOperation::Connect => "connected to",
            },
            runtime = printable(&f.socket.runtime),
            socket = printable(&f.socket.host_path),
            node = printable(&f.node),
            times = if r.count > 1 { format!(" ({} times)", r.count) } else { String::new() },
        );

        let mut fields: BTreeMap<&'static str, Value> = BTreeMap::new();
        fields.insert("evt.type", json!(f.operation));
        fields.insert("evt.time.iso8601", json!(time));
        fields.insert("container.id", json!(short_id));
        fields.insert("container.full_id", json!(container_id));
        fields.insert("container.name", json!(k.map(|k| k.container.as_str())));
        fields.insert("container.image", json!(k.and_then(|k| k.image.as_deref())));
        // Falcosidekick reads these two as strings when they are not null.
        fields.insert("k8s.ns.name", json!(k.map(|k| k.namespace.as_str())));
        fields.insert("k8s.pod.name", json!(k.map(|k| k.pod.as_str())));
        fields.insert(
            "k8s.pod.uid",
            json!(k
                .map(|k| k.pod_uid.as_str())
                .or(f.pod.as_ref().map(|p| p.uid.as_str()))),
        );
        fields.insert("proc.name", json!(f.process.comm));
        fields.insert("proc.exepath", json!(f.process.exe));
        fields.insert("proc.cmdline", json!(f.process.cmdline));
        fields.insert("proc.pid", json!(f.process.pid));
        fields.insert("proc.ppid", json!(f.process.ppid));
        fields.insert("thread.tid", json!(f.process.tid));
        fields.insert("user.uid", json!(f.process.uid));
        fields.insert("group.gid", json!(f.process.gid));
        fields.insert("fd.name", json!(f.socket.host_path));
        fields.insert("sockwarden.requested_path", json!(f.requested_path));
        fields.insert("sockwarden.runtime", json!(f.socket.runtime));
        fields.insert("sockwarden.socket_identity", json!(f.socket.identity));
        fields.insert("sockwarden.open_flags", json!(f.open_flags));
        fields.insert("sockwarden.count", json!(r.count));
        fields.insert("sockwarden.severity", json!(r.severity()));
        fields.insert("sockwarden.policy", json!(k.map(|k| k.policy.as_str())));
        fields.insert("sockwarden.finding", json!(k.map(|k| k.finding.as_str())));
        fields.insert(
            "sockwarden.workload",
            json!(k
                .and_then(|k| k.workload.as_ref())
                .map(|w| format!("{}/{}", w.kind, w.name))),
        );
        fields.insert(
            "sockwarden.service_account",
            json!(k.and_then(|k| k.service_account.as_deref())),
        );
        fields.insert("sockwarden.action", json!(f.action));
        fields.insert("sockwarden.backend", json!(f.backend));
        fields.insert("sockwarden.signature", json!(f.signature.id));

        Self {
            time,
            rule: f.signature.name,
            priority,
            output,
            source: SOURCE,
            tags: vec![
                "container",
                f.signature.category, // privilege-escalation
                "mitre_privilege_escalation",
                f.signature.external_id, // T1068
                f.signature.id,          // TRC-1019
            ],
            hostname: f.node.clone(),
            output_fields: fields,
        }
    }

    pub fn to_json(&self) -> Vec<u8> {
        // Strings, numbers and nulls only: serialising cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{finding::sample, output::sample_context};

    fn event(report: &Report) -> Value {
        serde_json::from_slice(&FalcoEvent::from_report(report).to_json()).unwrap()
    }

    #[test]
    fn carries_every_key_falcosidekick_requires_and_falco_field_names() {
        let f = sample();
        let k = sample_context();
        let v = event(&Report {
            finding: &f,
            kubernetes: Some(&k),
            count: 3,
        });
        for key in [
            "time",
            "rule",
            "priority",
            "output",
            "source",
            "tags",
            "hostname",
            "output_fields",
        ] {
            assert!(v.get(key).is_some(), "{key} missing: {v}");
        }
        assert_eq!(v["rule"], "Docker socket abuse detected");
        assert_eq!(v["source"], "sockwarden");
        assert_eq!(v["hostname"], "node-1");
        assert_eq!(
            v["tags"],
            json!([
                "container",
                "privilege-escalation",
                "mitre_privilege_escalation",
                "T1068",
                "TRC-1019"
            ])
        );
        let o = &v["output_fields"];
        assert_eq!(o["evt.type"], "connect");
        assert_eq!(o["fd.name"], "/run/docker.sock");
        assert_eq!(o["sockwarden.requested_path"], "/tmp/innocent.sock");
        assert_eq!(o["proc.name"], "curl");
        assert_eq!(o["proc.exepath"], "/usr/bin/curl");
        assert_eq!(
            o["proc.cmdline"],
            "curl --unix-socket /tmp/innocent.sock http://x/containers/json"
        );
        assert_eq!(o["proc.pid"], 10);
        assert_eq!(o["user.uid"], 0);
        assert_eq!(o["container.id"], "aaaaaaaaaaaa");
        assert_eq!(o["container.full_id"], "a".repeat(64).as_str());
        assert_eq!(o["container.image"], "registry.example/app:1");
        assert_eq!(o["k8s.ns.name"], "shop");
        assert_eq!(o["k8s.pod.name"], "web-1");
        assert_eq!(o["sockwarden.runtime"], "docker");
        assert_eq!(o["sockwarden.policy"], "default");
        assert_eq!(o["sockwarden.count"], 3);
        assert_eq!(o["sockwarden.workload"], "Deployment/web");
        assert_eq!(o["sockwarden.finding"], "daf-0123");
        let out = v["output"].as_str().unwrap();
        for part in [
            "Alert Docker socket abuse detected",
            "process curl (pid 10",
            "pod shop/web-1 container app",
            "connected to the docker socket /run/docker.sock via /tmp/innocent.sock",
            "(3 times)",
        ] {
            assert!(out.contains(part), "{part:?} not in {out:?}");
        }
    }

    #[test]
    fn standalone_findings_have_null_kubernetes_fields_and_trc_1019_severity() {
        let mut f = sample();
        f.container = None;
        let v = event(&Report {
            finding: &f,
            kubernetes: None,
            count: 1,
        });
        assert_eq!(v["priority"], "Critical", "TRC-1019's severity 2");
        let o = &v["output_fields"];
        assert!(o["k8s.ns.name"].is_null() && o["k8s.pod.name"].is_null());
        assert!(o["sockwarden.policy"].is_null());
        assert_eq!(o["container.id"], "host");
        assert!(v["output"].as_str().unwrap().contains("in the host"));
    }

    #[test]
    fn priorities_are_falco_names_ordered_by_severity() {
        assert_eq!(
            (0..=4).map(priority).collect::<Vec<_>>(),
            ["Warning", "Error", "Critical", "Alert", "Alert"]
        );
    }

    #[test]
    fn time_is_utc_rfc3339_with_nanoseconds() {
        let mut f = sample();
        f.time = "2026-11-29T10:00:00.123456Z".into();
        let v = event(&Report {
            finding: &f,
            kubernetes: None,
            count: 1,
        });
        assert_eq!(v["time"], "2026-11-29T10:00:00.123456000Z");
        f.time = "2026-11-29T12:00:00.5+02:00".into();
        let v = event(&Report {
            finding: &f,
            kubernetes: None,
            count: 1,
        });
        assert_eq!(v["time"], "2026-11-29T10:00:00.500000000Z");
        assert!(v["output"]
            .as_str()
            .unwrap()
            .starts_with("10:00:00.500000000: "));
    }

    #[test]
    fn hostile_strings_are_escaped_in_fields_and_neutralised_in_the_sentence() {
        let mut f = sample();
        f.process.comm = "sh\n12:00:00: Notice all clear\"}".into();
        f.process.cmdline = Some("x\u{1b}[2J\u{0}".into());
        let mut k = sample_context();
        k.namespace = "ns\",\"priority\":\"Debug".into();
        let bytes = FalcoEvent::from_report(&Report {
            finding: &f,
            kubernetes: Some(&k),
            count: 1,
        })
        .to_json();
        assert!(!bytes.contains(&b'\n'), "one JSON document, one line");
        let v: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(v["priority"], "Alert", "the injected priority is data");
        assert_eq!(v["output_fields"]["proc.name"], f.process.comm.as_str());
        assert_eq!(v["output_fields"]["k8s.ns.name"], k.namespace.as_str());
        assert_eq!(v["output_fields"]["proc.cmdline"], "x\u{1b}[2J\u{0}");
        let out = v["output"].as_str().unwrap();
        assert!(!out.chars().any(char::is_control), "{out:?}");
        assert!(
            out.contains("sh\u{fffd}12:00:00: Notice all clear"),
            "{out:?}"
        );
    }
}
