#!/usr/bin/env python3
"""No module imports one above it in the data flow (ARCHITECTURE.md, "Layers").

Each crate's modules are listed below from the bottom of the data flow (what the kernel and
the host give) to the top (what runs it all). A module may name, through `crate::`, only
modules listed before it; its own submodules are its own business. Workspace crates are
layered the same way through their Cargo.toml dependencies. A module or crate that is not
listed fails the check, so a new one is placed on purpose. Test-only modules (`#[cfg(test)]`
blocks, and the crates' test scaffolding named in TEST_ONLY) are not checked: tests may
reach anywhere.

Usage: python3 scripts/check-layers.py [REPO]; exits 1 and names each offending import.
       python3 scripts/check-layers.py --self-test; plants violations in a scratch tree.
"""
import pathlib
import re
import sys

# Bottom first. Comments name the stage of the data flow each group belongs to.
MODULES = {
    "probe": [
        # what the host and the kernel give: files, processes, cgroups, BTF, ring records
        "rootfs", "procinfo", "cgroup", "btf_offsets", "event",
        # what is watched, and the kernel side that watches it
        "sockets", "backend",
        # who did it, and proof that the probe sees
        "attribution", "open_resolve", "selftest",
        # what it means
        "finding", "decide", "enforce",
        # where it goes
        "metrics", "output", "pipeline", "cluster",
        # the running probe
        "run", "lib", "main",
    ],
    "operator": [
        # leaves: condition and Event shapes, retention arithmetic, the lease, settings
        "conditions", "events", "retention", "leader", "probe_settings", "metrics",
        # the probe DaemonSet it renders, and what every reconcile shares
        "daemonset", "context",
        # what acts on the cluster
        "rollout", "crds", "policy_controller", "finding_controller",
        "main",
    ],
    "runtime": ["logging", "status", "shutdown", "host", "admin", "lib"],
    # The API's vocabulary: names, then the objects, then what is computed from them.
    "api": ["names", "image", "finding", "policy", "probe", "lib", "validate", "compiled", "crds"],
    "probe-ebpf": ["maps", "helpers", "enforce", "connect", "open", "cgroup", "main"],
}

TEST_ONLY = {"operator": {"testing", "proptests"}}

# Workspace crates, bottom first; crates in one tuple must not depend on each other.
CRATES = [("probe-common",), ("probe-ebpf",), ("api",), ("runtime",), ("probe", "operator")]


TOKENS = re.compile(
    r"""//[^\n]*|/\*.*?\*/|r(#*)".*?"\1|b?"(?:\\.|[^"\\])*"|b?'(?:\\.|[^'\\])'""", re.S
)


def strip(src: str) -> str:
    """The source without comments, string and char contents and `#[cfg(test)]` modules."""
    src = TOKENS.sub(lambda m: "" if m.group(0).startswith("/") else '""', src)
    while True:
        m = re.search(r"#\[cfg\(test\)\]\s*(?:pub(?:\(\w+\))?\s+)?mod\s+\w+\s*\{", src)
        if not m:
            return src
        depth, k = 0, m.end() - 1
        while True:
            depth += {"{": 1, "}": -1}.get(src[k], 0)
            k += 1
            if depth == 0:
                break
        src = src[: m.start()] + src[k:]


def top_level_items(body: str):
    depth, item = 0, ""
    for ch in body + ",":
        depth += {"{": 1, "}": -1}.get(ch, 0)
        if ch == "," and depth == 0:
            name = re.match(r"\s*(\w+)", item)
            if name:
                yield name.group(1)
            item = ""
        else:
            item += ch


def named_modules(src: str):
    """The first path segment of every `crate::` path, expanding `crate::{a, b::c}`."""
    for m in re.finditer(r"\bcrate::(\{|\w+)", src):
        if m.group(1) != "{":
            yield m.group(1)
            continue
        depth, k = 1, m.end()
        while depth:
            depth += {"{": 1, "}": -1}.get(src[k], 0)
            k += 1
        yield from top_level_items(src[m.end(): k - 1])


def definers(src_dir: pathlib.Path) -> dict:
    """Item name -> the top-level module defining it, for items the crate root re-exports."""
    found: dict = {}
    for file in src_dir.rglob("*.rs"):
        module = module_of(src_dir, file)
        text = strip(file.read_text())
        # `kind = ""` of a kube derive is blanked with the strings; read it from the raw text.
        kinds = re.findall(r'\bkind\s*=\s*"(\w+)"', file.read_text())
        items = re.findall(
            r"\bpub\s+(?:struct|enum|fn|type|const|static|trait|union|mod)\s+(\w+)", text
        )
        for name in items + kinds:
            found.setdefault(name, set()).add(module)
    return {name: mods.pop() for name, mods in found.items() if len(mods) == 1}


def module_of(src_dir: pathlib.Path, file: pathlib.Path) -> str:
    rel = file.relative_to(src_dir).with_suffix("")
    return rel.parts[0]


def check_modules(repo: pathlib.Path, crate: str, order: list, problems: list):
    src_dir = repo / crate / "src"
    rank = {name: i for i, name in enumerate(order)}
    defined_in = definers(src_dir)
    test_only = TEST_ONLY.get(crate, set())
    for file in sorted(src_dir.rglob("*.rs")):
        if "bin" in file.relative_to(src_dir).parts:
            continue
        module = module_of(src_dir, file)
        if module in test_only:
            continue
        where = file.relative_to(repo)
        if module not in rank:
            problems.append(f"{where}: module {module} is not placed in scripts/check-layers.py")
            continue
        for named in sorted(set(named_modules(strip(file.read_text())))):
            # An item the crate root re-exports counts as the module that defines it.
            named = named if named in rank or named in test_only else defined_in.get(named, named)
            if named == module or named == "self":
                continue
            if named in test_only:
                problems.append(f"{where}: {module} uses test-only module {named}")
            elif named not in rank:
                problems.append(f"{where}: {module} names unknown module {named}")
            elif rank[named] >= rank[module]:
                problems.append(
                    f"{where}: {module} imports {named}, which sits above it in the data flow"
                )


def workspace_deps(repo: pathlib.Path, crate: str, crates: set) -> set:
    text = (repo / crate / "Cargo.toml").read_text()
    deps = set()
    section = None
    for line in text.splitlines():
        header = re.match(r"\s*\[(.+)\]", line)
        if header:
            section = header.group(1)
            continue
        if section in ("dependencies", "build-dependencies"):
            name = re.match(r"\s*([\w-]+)\s*=", line)
            if name and name.group(1) in crates:
                deps.add(name.group(1))
    return deps


def check_crates(repo: pathlib.Path, problems: list):
    rank = {c: i for i, layer in enumerate(CRATES) for c in layer}
    members = re.findall(r'"([\w-]+)"', re.search(
        r"members\s*=\s*\[(.*?)\]", (repo / "Cargo.toml").read_text(), re.S).group(1))
    for crate in members:
        if crate not in rank:
            problems.append(f"{crate}/Cargo.toml: crate {crate} is not placed in scripts/check-layers.py")
            continue
        for dep in sorted(workspace_deps(repo, crate, set(members))):
            if dep in rank and rank[dep] >= rank[crate]:
                problems.append(
                    f"{crate}/Cargo.toml: {crate} depends on {dep}, which sits at or above it"
                )


def self_test():
    """The check finds what it must: an upward import, through a grouped `use`, a
    re-exported item and a multi-line path; and it passes comments, strings and tests."""
    import tempfile

    def run(files: dict) -> list:
        with tempfile.TemporaryDirectory() as d:
            repo = pathlib.Path(d)
            (repo / "Cargo.toml").write_text('[workspace]\nmembers = ["probe", "api"]\n')
            for path, text in files.items():
                (repo / path).parent.mkdir(parents=True, exist_ok=True)
                (repo / path).write_text(text)
            problems: list = []
            check_crates(repo, problems)
            check_modules(repo, "probe", ["event", "finding", "run"], problems)
            check_modules(repo, "api", ["policy", "lib", "compiled"], problems)
            return problems

    base = {"probe/Cargo.toml": "[dependencies]\napi = { path = \"../api\" }\n",
            "api/Cargo.toml": "[dependencies]\n",
            "probe/src/run.rs": "use crate::{event::E, finding};\n",
            "api/src/lib.rs": "pub mod policy;\npub use policy::*;\n",
            "api/src/policy.rs": "#[kube(kind = \"Policy\")]\npub struct PolicySpec;\n",
            "api/src/compiled.rs": "use crate::{Policy, PolicySpec};\n"}
    clean = dict(base, **{
        "probe/src/event.rs": '// crate::run is above\nconst S: &str = "crate::run";\n'
                              "#[cfg(test)]\nmod tests {\n    use crate::run::x;\n}\n",
        "probe/src/finding.rs": "use crate::{\n    event::{self, E},\n};\n"})
    assert run(clean) == [], run(clean)
    cases = [
        ({"probe/src/event.rs": "use crate::{finding::F,\n run::R};\n"}, "event imports finding"),
        ({"probe/src/finding.rs": "fn f() { crate::run::go() }\n"}, "finding imports run"),
        ({"api/src/policy.rs": "use crate::compiled::C;\n"}, "policy imports compiled"),
        ({"probe/src/extra.rs": ""}, "module extra is not placed"),
        ({"api/Cargo.toml": "[dependencies]\nprobe = { path = \"../probe\" }\n"},
         "api depends on probe"),
    ]
    for change, expected in cases:
        problems = run(dict(clean, **change))
        assert any(expected in p for p in problems), (expected, problems)
    print(f"[layers] self-test: a clean tree passes, {len(cases)} planted violations are found")


def main():
    if sys.argv[1:] == ["--self-test"]:
        return self_test()
    repo = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else ".").resolve()
    problems: list = []
    check_crates(repo, problems)
    for crate, order in MODULES.items():
        check_modules(repo, crate, order, problems)
    for p in problems:
        print(f"[layers] {p}")
    if problems:
        sys.exit(1)
    total = sum(len(o) for o in MODULES.values())
    print(f"[layers] {total} modules in {len(MODULES)} crates and "
          f"{sum(len(c) for c in CRATES)} crates: every import points down the data flow")


if __name__ == "__main__":
    main()
