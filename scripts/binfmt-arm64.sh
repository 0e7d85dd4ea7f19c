#!/usr/bin/env bash
# Lets this x86-64 machine run arm64 binaries (the arm64 images' --version check): registers
# Debian's qemu-user-static handler for aarch64 ELF files with binfmt_misc. Its `F` flag
# opens the interpreter now, so it also works inside containers. Idempotent; needs root.
set -euo pipefail
misc=/proc/sys/fs/binfmt_misc
[ -e "$misc/register" ] || mount -t binfmt_misc binfmt_misc "$misc"
[ -e "$misc/qemu-aarch64" ] || cat /usr/lib/binfmt.d/qemu-aarch64.conf >"$misc/register"
grep -qx enabled "$misc/qemu-aarch64"
