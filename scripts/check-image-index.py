#!/usr/bin/env python3
"""Checks a multi-arch image archive written by scripts/images.sh.

The OCI archive's tag must resolve to an image index with exactly linux/amd64 and
linux/arm64; each platform's manifest must name a config of that architecture, and the
sockwarden binary in its layer must be an ELF file for that machine (so a swapped or
missing binary fails here, not on a node).

Usage: check-image-index.py ARCHIVE TAG
"""
import gzip
import io
import json
import sys
import tarfile

ELF_MACHINE = {"amd64": 62, "arm64": 183}  # EM_X86_64, EM_AARCH64


def main():
    archive, tag = sys.argv[1], sys.argv[2]
    with tarfile.open(archive) as tar:
        def blob(digest):
            algo, hexdigest = digest.split(":", 1)
            return tar.extractfile(f"blobs/{algo}/{hexdigest}").read()

        top = json.loads(tar.extractfile("index.json").read())
        named = [m for m in top["manifests"]
                 if m.get("annotations", {}).get("org.opencontainers.image.ref.name") == tag]
        if len(named) != 1:
            sys.exit(f"{archive}: tag {tag} names {len(named)} entries, not one")
        if named[0]["mediaType"] != "application/vnd.oci.image.index.v1+json":
            sys.exit(f"{archive}: tag {tag} is a {named[0]['mediaType']}, not an image index")
        index = json.loads(blob(named[0]["digest"]))
        platforms = {}
        for m in index["manifests"]:
            p = m["platform"]
            platforms[f"{p['os']}/{p['architecture']}"] = m
        if sorted(platforms) != ["linux/amd64", "linux/arm64"]:
            sys.exit(f"{archive}: index has {sorted(platforms)}, not linux/amd64 and linux/arm64")
        for name, m in sorted(platforms.items()):
            arch = name.split("/")[1]
            manifest = json.loads(blob(m["digest"]))
            config = json.loads(blob(manifest["config"]["digest"]))
            if (config["os"], config["architecture"]) != ("linux", arch):
                sys.exit(f"{archive}: {name} manifest's config says {config['os']}/{config['architecture']}")
            machines = set()
            for layer in manifest["layers"]:
                data = blob(layer["digest"])
                if layer["mediaType"].endswith("gzip"):
                    data = gzip.decompress(data)
                with tarfile.open(fileobj=io.BytesIO(data)) as fs:
                    for member in fs.getmembers():
                        if member.name.lstrip("./").startswith("sockwarden-") and member.isfile():
                            head = fs.extractfile(member).read(20)
                            machines.add(int.from_bytes(head[18:20], "little"))
            if machines != {ELF_MACHINE[arch]}:
                sys.exit(f"{archive}: {name} holds binaries for ELF machines {machines}, "
                         f"not {ELF_MACHINE[arch]}")
            print(f"[images] {archive}:{tag} {name}: {manifest['config']['digest'][:19]}, "
                  f"binary built for {arch}")


if __name__ == "__main__":
    main()
