#!/usr/bin/env python3
"""Turns the probe DaemonSet (YAML on stdin, from `sockwarden-operator render-daemonset`) into
`docker run` arguments with the same privileges, host mounts and arguments, so an image test
proves the DaemonSet's pod spec is sufficient. Prints one argument per line: the options,
then `--`, then the container's args."""
import sys

import yaml

ds = yaml.safe_load(sys.stdin)
pod = ds["spec"]["template"]["spec"]
(container,) = pod["containers"]
sc = container.get("securityContext", {})
opts = ["--network", "none"]
if pod.get("hostPID"):
    opts += ["--pid", "host"]
if sc.get("privileged"):
    opts.append("--privileged")
for cap in sc.get("capabilities", {}).get("drop", []):
    opts += ["--cap-drop", cap]
added = sc.get("capabilities", {}).get("add", [])
for cap in added:
    # Docker 20.10 does not know CAP_BPF/CAP_PERFMON; the kernel accepts CAP_SYS_ADMIN in
    # their place, and the DaemonSet grants SYS_ADMIN too, so the privileges are the same.
    if cap in ("BPF", "PERFMON"):
        assert "SYS_ADMIN" in added, "BPF/PERFMON need SYS_ADMIN to stand in for them here"
        continue
    opts += ["--cap-add", cap]
if sc.get("seccompProfile", {}).get("type") == "Unconfined":
    opts += ["--security-opt", "seccomp=unconfined"]
if sc.get("allowPrivilegeEscalation") is False:
    opts += ["--security-opt", "no-new-privileges"]
if sc.get("readOnlyRootFilesystem"):
    opts.append("--read-only")
if "runAsUser" in sc:
    opts += ["--user", str(sc["runAsUser"])]
host_paths = {v["name"]: v["hostPath"]["path"] for v in pod.get("volumes", []) if "hostPath" in v}
empty_dirs = {v["name"] for v in pod.get("volumes", []) if "emptyDir" in v}
for m in container.get("volumeMounts", []):
    if m["name"] in empty_dirs:
        opts += ["--tmpfs", f"{m['mountPath']}:size=1m,mode=700"]
        continue
    # mountPropagation (HostToContainer) is left out: Docker refuses it where / is a private
    # mount, as on these test machines; it only matters for mounts made later on the host.
    mode = "ro" if m.get("readOnly") else "rw"
    opts += ["-v", f"{host_paths[m['name']]}:{m['mountPath']}:{mode}"]
for env in container.get("env", []):
    if env.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") == "spec.nodeName":
        opts += ["-e", f"{env['name']}=image-test-node"]
print("\n".join(opts + ["--"] + container.get("args", [])))
