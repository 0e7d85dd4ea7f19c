#!/usr/bin/env python3
"""Writes the values table of charts/sockwarden/README.md from values.yaml.

The convention, kept simple so that anyone adding a value gets it right:
  - the comment lines directly above a key (no blank line between) describe it;
  - nested keys are shown as dotted paths (`operator.replicas`);
  - every value that is not a non-empty map is a row, its default shown as inline JSON;
    a map written on one line (`requests: {cpu: 50m}`) and keys inside lists count as
    part of their value;
  - a described map (a section) gets a row too, without a default; a described map none of
    whose keys is described is one row, with the whole map as its default.
The table goes between `<!-- values:start -->` and `<!-- values:end -->`.

  scripts/chart-readme.py          rewrite the table
  scripts/chart-readme.py --check  exit 1 if the table is stale or a value has no description
"""
import json
import re
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
VALUES = ROOT / "charts/sockwarden/values.yaml"
README = ROOT / "charts/sockwarden/README.md"
START, END = "<!-- values:start -->", "<!-- values:end -->"
SECTION = object()
KEY = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z0-9_./-]+|\"[^\"]+\"|'[^']+'):(?P<rest>.*)$")


def rows(text):
    """(path, default, description) in file order; the default of a section is SECTION."""
    data = yaml.safe_load(text) or {}
    stack = []  # (indent, key) of the enclosing maps
    comment = []
    out = []
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("#"):
            comment.append(stripped.lstrip("#").strip())
            continue
        m = KEY.match(line)
        if not m or not stripped:
            comment = []  # a blank line or a list item ends a description
            continue
        indent, key = len(m["indent"]), m["key"].strip("\"'")
        while stack and stack[-1][0] >= indent:
            stack.pop()
        parent = data
        for _, k in stack:
            parent = parent.get(k) if isinstance(parent, dict) else None
        description, comment = " ".join(c for c in comment if c), []
        if not isinstance(parent, dict) or key not in parent:
            continue  # a key inside a list item: part of that list's default
        value = parent[key]
        path = ".".join([k for _, k in stack] + [key])
        inline = m["rest"].split(" #", 1)[0].strip()
        if isinstance(value, dict) and value and not inline:
            stack.append((indent, key))
            out.append((path, SECTION, description, value))
        else:
            out.append((path, value, description, value))
    return collapse(out)


def collapse(entries):
    """Sections: a described map without described keys becomes one row; an undescribed
    map is not a row of its own (its keys are)."""
    out = []
    skip = None
    for i, (path, value, description, raw) in enumerate(entries):
        if skip and path.startswith(skip):
            continue
        skip = None
        if value is SECTION:
            inner = [e for e in entries[i + 1:] if e[0].startswith(path + ".")]
            if description and not any(d for _, _, d, _ in inner):
                out.append((path, raw, description))
                skip = path + "."
                continue
            if not description:
                continue
        out.append((path, value, description))
    return out


def cell(text):
    return text.replace("|", "\\|")


def table(entries):
    lines = ["| value | default | description |", "| --- | --- | --- |"]
    for path, value, description in entries:
        default = "" if value is SECTION else "`" + json.dumps(value, separators=(", ", ": ")) + "`"
        lines.append(f"| `{path}` | {cell(default)} | {cell(description)} |")
    return "\n".join(lines)


def main():
    check = sys.argv[1:] == ["--check"]
    if sys.argv[1:] not in ([], ["--check"]):
        sys.exit(__doc__)
    entries = rows(VALUES.read_text())
    undescribed = [p for p, _, d in entries if not d]
    readme = README.read_text()
    if readme.count(START) != 1 or readme.count(END) != 1 or readme.index(START) > readme.index(END):
        sys.exit(f"{README.relative_to(ROOT)}: needs exactly one {START} ... {END} block")
    head, rest = readme.split(START)
    _, tail = rest.split(END)
    new = f"{head}{START}\n{table(entries)}\n{END}{tail}"
    if undescribed:
        print(f"{VALUES.relative_to(ROOT)}: no comment line directly above: "
              + ", ".join(undescribed), file=sys.stderr)
    if check:
        if new != readme:
            sys.exit(f"{README.relative_to(ROOT)}: the values table is stale: run scripts/chart-readme.py")
        if undescribed:
            sys.exit(1)
        print(f"[chart] {README.relative_to(ROOT)}: values table current ({len(entries)} rows)")
        return
    README.write_text(new)
    print(f"wrote {len(entries)} rows to {README.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
