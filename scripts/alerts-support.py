#!/usr/bin/env python3
"""Helpers of scripts/check-alerts.sh (one subcommand each; the script says why).

  rules RENDER OUT             the PrometheusRule's spec of a chart render as a rules file
  monitor-tests RENDER OUT     promtool tests of the alerts under each rendered monitor
  metric-names FILE...         fail on metric names in rule exprs or dashboard queries that
                               the binaries do not export
  dashboard-rules JSON OUT     every dashboard query as a recording rule, for promtool
"""
import json
import re
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
NAMESPACE = "sockwarden-system"  # the release namespace check-alerts.sh renders with
METRIC_SOURCES = [ROOT / "probe/src/metrics.rs", ROOT / "operator/src/metrics.rs"]


def docs(path):
    return [d for d in yaml.safe_load_all(Path(path).read_text()) if d]


def one(render, kind):
    found = [d for d in docs(render) if d["kind"] == kind]
    if len(found) != 1:
        sys.exit(f"{render}: expected one {kind}, found {len(found)}")
    return found[0]


def cmd_rules(render, out):
    rule = one(render, "PrometheusRule")
    Path(out).write_text(yaml.safe_dump(rule["spec"], sort_keys=False))


# --- Prometheus `replace` relabeling over a synthetic target -------------------------------

def relabel(labels, configs):
    """Applies relabel configs as Prometheus does; only the actions the chart uses."""
    labels = dict(labels)
    for c in configs:
        action = c.get("action", "replace").lower()
        if action != "replace":
            sys.exit(f"relabel action {action!r} is not simulated here: extend alerts-support.py")
        source = c.get("separator", ";").join(labels.get(n, "") for n in c.get("sourceLabels", []))
        m = re.fullmatch(c.get("regex", "(.*)"), source)
        if not m:
            continue
        # Prometheus writes $1 or ${1}; Python's expand wants \g<1>.
        value = m.expand(re.sub(r"\$\{?(\w+)\}?", r"\\g<\1>", c.get("replacement", "$1")))
        if value:
            labels[c["targetLabel"]] = value
        else:
            labels.pop(c["targetLabel"], None)
    return labels


def target(kind, monitor, component, node):
    """The labels Prometheus gives a target of `component`'s pod under `monitor`.

    The Prometheus Operator's own relabelings come first (namespace, pod, container, the
    service for a ServiceMonitor, job = the Service's name or "<namespace>/<PodMonitor>"),
    then the endpoint's relabelings from the chart."""
    pod = f"{component}-x7k2q"
    service = {"sockwarden-probe": "sockwarden-probe-metrics",
               "sockwarden-operator": "sockwarden-operator-metrics"}[component]
    meta = {
        "__address__": "10.0.0.7:9464",
        "__meta_kubernetes_namespace": NAMESPACE,
        "__meta_kubernetes_pod_name": pod,
        "__meta_kubernetes_pod_node_name": node,
        "__meta_kubernetes_pod_container_name": component.split("-", 1)[1],
        "__meta_kubernetes_pod_label_app_kubernetes_io_name": component,
        "__meta_kubernetes_pod_label_app_kubernetes_io_part_of": "sockwarden",
        "__meta_kubernetes_service_name": service,
    }
    if kind == "ServiceMonitor":
        endpoints = monitor["spec"]["endpoints"]
        defaults = {"namespace": NAMESPACE, "service": service, "pod": pod,
                    "container": meta["__meta_kubernetes_pod_container_name"], "job": service,
                    "endpoint": "metrics"}
    else:
        endpoints = monitor["spec"]["podMetricsEndpoints"]
        defaults = {"namespace": NAMESPACE, "pod": pod,
                    "container": meta["__meta_kubernetes_pod_container_name"],
                    "job": f"{monitor['metadata']['namespace']}/{monitor['metadata']['name']}",
                    "endpoint": "metrics"}
    if len(endpoints) != 1:
        sys.exit(f"{kind}: expected one endpoint, found {len(endpoints)}")
    ep = endpoints[0]
    labels = relabel({**meta, **defaults, "instance": meta["__address__"]}, ep.get("relabelings", []))
    return {k: v for k, v in labels.items() if not k.startswith("__")}, bool(ep.get("honorLabels"))


def scraped(target_labels, honor, exposed):
    """A scraped series' labels: target labels attached with honor_labels semantics."""
    out = dict(exposed)
    for k, v in target_labels.items():
        if k in out and not honor:
            out["exported_" + k] = out[k]
            out[k] = v
        elif k not in out:
            out[k] = v
    return out


def series(name, labels):
    return name + "{" + ", ".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}"


def firing(name, at, alert, inputs, alerts):
    """A test that exactly `alerts` (label sets) of `alert` fire at `at`. It reads the ALERTS
    series, so annotations (checked by the hand-written tests) need not be repeated here."""
    return {"name": name, "interval": "1m",
            "input_series": [{"series": s, "values": v} for s, v in inputs],
            "promql_expr_test": [{
                "expr": f'ALERTS{{alertname="{alert}", alertstate="firing"}}', "eval_time": at,
                "exp_samples": [{"labels": series("ALERTS", {**a, "alertname": alert, "alertstate": "firing"}),
                                 "value": 1} for a in alerts]}]}


def cmd_monitor_tests(render, out):
    tests = []
    for kind in ("ServiceMonitor", "PodMonitor"):
        monitor = one(render, kind)
        probe, honor = target(kind, monitor, "sockwarden-probe", "node-a")
        operator, _ = target(kind, monitor, "sockwarden-operator", "node-b")
        finding = {"namespace": "shop", "pod": "web-1", "operation": "connect",
                   "runtime": "docker", "action": "Audit"}
        seen = scraped(probe, honor, finding)
        up = scraped(probe, honor, {})
        leader = scraped(operator, honor, {})
        tests += [
            firing(f"{kind}: a pod's first finding names that pod, not the probe", "3m",
                   "SockwardenRuntimeSocketAbuse",
                   [(series("sockwarden_probe_finding_last_seen_timestamp_seconds", seen), "_ _ 90x5"),
                    (series("sockwarden_probe_findings_total", seen), "_ _ 1x5")],
                   [{**finding, "node": "node-a", "severity": "critical"}]),
            firing(f"{kind}: a probe that stops answering scrapes is down", "8m", "SockwardenProbeDown",
                   [(series("up", up), "1 1 0x10")], [{**up, "severity": "warning"}]),
            firing(f"{kind}: a probe that answers is not down", "10m", "SockwardenProbeDown",
                   [(series("up", up), "1x12")], []),
            firing(f"{kind}: operator replicas without the lease", "12m", "SockwardenOperatorNoLeader",
                   [(series("sockwarden_operator_leader", leader), "0x15")], [{"severity": "warning"}]),
            firing(f"{kind}: an operator replica holds the lease", "12m", "SockwardenOperatorNoLeader",
                   [(series("sockwarden_operator_leader", leader), "1x15")], []),
        ]
        print(f"[alerts] {kind}: probe target job={probe.get('job')!r} node={probe.get('node')!r}, "
              f"operator job={operator.get('job')!r}, honorLabels={honor}")
    Path(out).write_text(yaml.safe_dump({"rule_files": ["rules.yaml"], "evaluation_interval": "1m",
                                         "tests": tests}, sort_keys=False))


# --- metric names ---------------------------------------------------------------------------

def exported():
    names = set()
    for src in METRIC_SOURCES:
        text = src.read_text()
        for m in re.finditer(r'"((sockwarden_probe|sockwarden_operator)_[a-z0-9_]+)"', text):
            name = m.group(1)
            names.add(name)
            # A histogram exports _bucket, _sum and _count series.
            if re.search(r"Histogram(Vec)?::\w+\(\s*HistogramOpts::new\(\s*$", text[:m.start()]):
                names |= {name + "_bucket", name + "_sum", name + "_count"}
    return names


def used(expr):
    # String literals and label matchers are not metric names.
    expr = re.sub(r'"(\\.|[^"\\])*"', '""', expr)
    return set(re.findall(r"\bsockwarden_[a-z0-9_]+", expr))


def exprs(path):
    if path.endswith(".json"):
        dash = json.loads(Path(path).read_text())
        return [(p.get("title", "?"), t["expr"]) for p in dash.get("panels", []) for t in p.get("targets", [])
                ] + [("variable " + v["name"], v["query"]["query"]) for v in dash["templating"]["list"]
                     if isinstance(v.get("query"), dict)]
    spec = yaml.safe_load(Path(path).read_text())
    return [(r.get("alert") or r.get("record"), r["expr"]) for g in spec["groups"] for r in g["rules"]]


def cmd_metric_names(*paths):
    known = exported()
    bad = []
    count = 0
    for path in paths:
        for where, expr in exprs(path):
            for name in used(expr):
                count += 1
                if name not in known:
                    bad.append(f"{path}: {where}: {name} is not exported by {', '.join(str(s.relative_to(ROOT)) for s in METRIC_SOURCES)}")
    if bad:
        sys.exit("\n".join(bad))
    print(f"[alerts] {count} metric references in {len(paths)} file(s), all exported")


def cmd_dashboard_rules(path, out):
    """Grafana's variables are not PromQL: each becomes a value of its kind first."""
    subs = [(r"\$__(rate_interval|interval|range)\b", "5m"), (r"\$\{?node\}?", ".*"),
            (r"\$\{?datasource\}?", "prometheus")]
    rules = []
    for i, (where, expr) in enumerate(exprs(path)):
        if where.startswith("variable "):
            m = re.fullmatch(r"label_values\((.*),\s*\w+\)", expr)
            if not m:
                sys.exit(f"{path}: {where}: unexpected query {expr}")
            expr = m.group(1)
        for pat, rep in subs:
            expr = re.sub(pat, rep, expr)
        if "$" in expr:
            sys.exit(f"{path}: {where}: a Grafana variable this check does not know: {expr}")
        rules.append({"record": f"dashboard:query_{i}", "expr": expr})
    Path(out).write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}, sort_keys=False))
    print(f"[alerts] {len(rules)} dashboard queries written for promtool")


if __name__ == "__main__":
    cmds = {"rules": cmd_rules, "monitor-tests": cmd_monitor_tests, "metric-names": cmd_metric_names,
            "dashboard-rules": cmd_dashboard_rules}
    if len(sys.argv) < 2 or sys.argv[1] not in cmds:
        sys.exit(__doc__)
    cmds[sys.argv[1]](*sys.argv[2:])
