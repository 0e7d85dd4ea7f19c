#!/usr/bin/env python3
"""The README's support table, from the kernel matrix's results.

`cargo test -p probe --test vm_backends` leaves one JSON file per boot (arch, Debian suite,
with or without `bpf` in `lsm=`) under target/tmp/vm-matrix. This renders them as a
Markdown table; with --write README.md it replaces the table between the README's
`<!-- support:start -->` and `<!-- support:end -->` markers.

Usage: python3 scripts/support-table.py [--write README.md] [RESULTS_DIR]
"""
import json
import pathlib
import sys

DEBIAN = {"bullseye": "Debian 11", "bookworm": "Debian 12", "trixie": "Debian 13"}
BACKENDS = ["lsm", "fentry", "tracepoint", "kprobe"]


def short_refusal(why: str) -> str:
    if "BPF LSM is not active" in why:
        return "refused: BPF LSM not active"
    if "sk_data_ready" in why:
        return "refused: no `sk_data_ready` (< 6.6)"
    if "cannot attach BPF trampolines" in why:
        return "refused: no trampolines on kernel functions (arm64 < 6.4)"
    return "refused: " + why.split(":")[0]


def cell(result: dict, backend: str) -> str:
    b = result["backends"][backend]
    if not b["runs"]:
        return short_refusal(b["refused"] or "did not start")
    seen = f"sees {b['scenariosPassed']}/{b['scenarios']}"
    hooks = [f"{b[k]:.0f}" if b.get(k) is not None else "?" for k in ("openHookNs", "connectHookNs")]
    text = f"{seen}; {hooks[0]} / {hooks[1]} ns"
    if "enforcePassed" in b:
        how = "EPERM" if backend in ("lsm", "fentry") else "SIGKILL"
        pinned = "" if b.get("enforcePinned") else ", not pinned"
        text += f"; blocks {b['enforcePassed']}/{b['enforceScenarios']} ({how}{pinned})"
    return text


def kernel_key(result: dict):
    return (result["arch"], [int(p) if p.isdigit() else 0
                             for p in result["kernel"].split("-")[0].split(".")])


def auto_cell(result: dict) -> str:
    if not result["auto"]:
        return "none"
    return f"`{result['auto']}`" + ("" if result["autoSees"] else " (blind!)")


def table(results: list) -> str:
    """One row per kernel: its boot with `bpf` in lsm= forces every backend; the boot without
    forces `lsm` alone (refused) and shows what auto falls back to."""
    lines = [
        "| arch | kernel | auto picks: `bpf` in `lsm=` / not | `lsm` | `fentry` | `tracepoint` | `kprobe` | fmod_ret |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    boots = {}
    for r in results:
        boots.setdefault((r["arch"], r["kernel"]), {})[r["bpfInLsm"]] = r
    for (arch, kernel), pair in sorted(boots.items(), key=lambda kv: kernel_key(next(iter(kv[1].values())))):
        full, without = pair.get(True), pair.get(False)
        suite = DEBIAN.get((full or without)["suite"], (full or without)["suite"])
        autos = " / ".join(auto_cell(r) if r else "not booted" for r in (full, without))
        cells = [cell(full, b) if full else "not booted" for b in BACKENDS]
        if without:
            lsm = without["backends"]["lsm"]
            cells[0] += "; without `bpf` in `lsm=`: " + (
                "runs" if lsm["runs"] else short_refusal(lsm["refused"] or "did not start"))
        fmod = full.get("fmodRetAttaches") if full else None
        lines.append(
            f"| {arch} | {kernel} ({suite}) | {autos} | {' | '.join(cells)} | "
            f"{'attaches' if fmod else 'refused' if fmod is False else '?'} |"
        )
    return "\n".join(lines)


def main():
    args = sys.argv[1:]
    write = None
    if args[:1] == ["--write"]:
        write, args = pathlib.Path(args[1]), args[2:]
    results_dir = pathlib.Path(args[0] if args else "target/tmp/vm-matrix")
    results = [json.loads(p.read_text()) for p in sorted(results_dir.glob("*.json"))]
    if not results:
        sys.exit(f"no matrix results in {results_dir}: run cargo test -p probe --test vm_backends")
    rendered = table(results)
    if write is None:
        print(rendered)
        return
    text = write.read_text()
    start, end = "<!-- support:start -->", "<!-- support:end -->"
    if start not in text or end not in text:
        sys.exit(f"{write} has no {start} ... {end} markers")
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    write.write_text(f"{head}{start}\n{rendered}\n{end}{tail}")
    print(f"{write}: support table rewritten from {len(results)} matrix cells")


if __name__ == "__main__":
    main()
