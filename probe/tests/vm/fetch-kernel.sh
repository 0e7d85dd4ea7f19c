#!/bin/sh
# fetch-kernel.sh SUITE ARCH DEST: Debian's cloud kernel of SUITE (bullseye, bookworm,
# trixie) for ARCH (amd64, arm64), and the same release's static busybox for ARCH (the VM's
# shell and tools when ARCH is not the host's), unpacked into DEST/x. apt runs with its own
# sources, lists, status and archive under DEST (the host's are not touched, and what the
# host has installed is never the candidate) and checks the suite's signature with Debian's
# archive keyring. Only /boot and busybox are kept (the modules are not needed: the test
# boots from an initramfs of its own).
set -eu
suite=$1 arch=$2 dest=$3
key=/usr/share/keyrings/debian-archive-keyring.gpg
mkdir -p "$dest/apt/archives/partial"
: > "$dest/apt/status"
apt_opts="-o Dir::Etc::sourcelist=$dest/apt/sources.list -o Dir::Etc::sourceparts=-
  -o Dir::State::Lists=$dest/apt/lists -o Dir::State::status=$dest/apt/status
  -o Dir::Cache=$dest/apt -o APT::Architecture=$arch -o APT::Architectures=$arch
  -o APT::Sandbox::User=root -o Debug::NoLocking=1"

# fetch SECTION...: the newest cloud kernel and busybox those sections hold, into DEST.
fetch() {
  for section in "$@"; do
    echo "deb [arch=$arch signed-by=$key] http://deb.debian.org/$section main"
  done > "$dest/apt/sources.list"
  rm -rf "$dest/apt/lists" && mkdir -p "$dest/apt/lists/partial"
  # shellcheck disable=SC2086 # apt_opts is a list of words without spaces in them
  apt-get $apt_opts -qq update || return 1
  # shellcheck disable=SC2086
  pkg=$(apt-cache $apt_opts depends "linux-image-cloud-$arch" | awk '/Depends: linux-image-[0-9]/{print $2; exit}')
  [ -n "$pkg" ] || { echo "no linux-image-cloud-$arch in $*" >&2; return 1; }
  # shellcheck disable=SC2086
  (cd "$dest" && rm -f ./*.deb && apt-get $apt_opts -qq download "$pkg:$arch" "busybox-static:$arch")
}

# The suite and its security updates (where a stable release's newest kernel is). The
# package mirror may lack an architecture's security pool (bullseye's arm64, here): then
# the suite's own, last point-release kernel.
fetch "debian $suite" "debian-security $suite-security" || {
  echo "fetch-kernel: $suite-security has no $arch kernel to download; taking $suite's own" >&2
  fetch "debian $suite"
}
cd "$dest"
rm -rf x && mkdir x
dpkg-deb --fsys-tarfile linux-image-*.deb | tar -x -C x ./boot
# ./bin/busybox, or ./usr/bin/busybox since trixie's merged /usr
dpkg-deb --fsys-tarfile busybox-static_*.deb | tar -x -C x --wildcards '*bin/busybox'
[ -f x/bin/busybox ] || { mkdir -p x/bin && mv x/usr/bin/busybox x/bin/busybox && rm -rf x/usr; }
rm -rf apt ./*.deb # the kernel is unpacked; the indexes are large and dated
