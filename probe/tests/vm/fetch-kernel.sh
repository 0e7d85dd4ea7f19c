#!/bin/sh
# fetch-kernel.sh SUITE ARCH DEST: Debian's cloud kernel of SUITE (bullseye, bookworm,
# trixie) for ARCH (amd64, arm64), and the same release's static busybox for ARCH (the VM's
# shell and tools when ARCH is not the host's), unpacked into DEST/x. apt runs with its own lists and
# archive under DEST (the host's sources are not touched) and checks the suite's signature
# with Debian's archive keyring. Only vmlinuz, config and System.map are kept (the modules
# are not needed: the test boots from an initramfs of its own).
set -eu
suite=$1 arch=$2 dest=$3
mkdir -p "$dest/apt/lists/partial" "$dest/apt/archives/partial"
# The suite and its security updates (where the newest kernel of a stable release is).
key=/usr/share/keyrings/debian-archive-keyring.gpg
cat > "$dest/apt/sources.list" <<SOURCES
deb [arch=$arch signed-by=$key] http://deb.debian.org/debian $suite main
deb [arch=$arch signed-by=$key] http://deb.debian.org/debian-security $suite-security main
SOURCES
set -- -o "Dir::Etc::sourcelist=$dest/apt/sources.list" -o Dir::Etc::sourceparts=- \
  -o "Dir::State::Lists=$dest/apt/lists" -o "Dir::Cache=$dest/apt" \
  -o "APT::Architecture=$arch" -o "APT::Architectures=$arch" -o APT::Sandbox::User=root \
  -o Debug::NoLocking=1
apt-get "$@" -qq update
pkg=$(apt-cache "$@" depends "linux-image-cloud-$arch" | awk '/Depends: linux-image-[0-9]/{print $2; exit}')
[ -n "$pkg" ] || { echo "no linux-image-cloud-$arch in $suite" >&2; exit 1; }
cd "$dest"
rm -rf x ./*.deb && mkdir x
apt-get "$@" -qq download "$pkg:$arch" "busybox-static:$arch"
dpkg-deb --fsys-tarfile linux-image-*.deb | tar -x -C x ./boot
# ./bin/busybox, or ./usr/bin/busybox since trixie's merged /usr
dpkg-deb --fsys-tarfile busybox-static_*.deb | tar -x -C x --wildcards '*bin/busybox'
[ -f x/bin/busybox ] || { mkdir -p x/bin && mv x/usr/bin/busybox x/bin/busybox && rm -rf x/usr; }
rm -rf apt ./*.deb # the kernel is unpacked; the indexes are large and dated
