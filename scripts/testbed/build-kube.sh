#!/usr/bin/env bash
# Builds Kubernetes 1.20.2 (control plane, kubelet, kubectl) from Debian bookworm's source
# package with Debian's Go 1.19, once per machine: the binaries are cached outside the clone
# in $SW_KUBE_CACHE (default /var/cache/sockwarden/kube-1.20.2), so a second run only checks
# the stamp. Everything comes from Debian's mirror. Prints the bin directory on stdout.
#
# Go 1.19 needs four changes to that tree (measured, ../shared/KUBE-TESTBED.md):
#  1. Debian's own patches (debian/patches/series);
#  2. vendor/modules.txt: each Go-1.15-style wildcard replacement line "# X => X vN" must
#     stand before the versioned block of the same module, else -mod=vendor refuses to build;
#  3. vendored github.com/modern-go/reflect2 1.0.1 replaced by Debian's 1.0.2 (1.0.1 faults
#     in UnsafeIterate under Go >= 1.18: the API server dies on any YAML/pretty response);
#  4. pkg/generated/openapi/zz_generated.openapi.go generated with the vendored openapi-gen
#     (not shipped in the tarball).
# One more, ours: vendored kube-openapi's type validator treats a value as null when
# reflect.DeepEqual(reflect.Zero(T), reflect.ValueOf(v)) holds. Compiled with Go >= 1.19 that
# holds for "" (both Values point at the runtime's shared zero buffer), so the API server
# refused every custom resource holding an empty string ("must be of type string: null"),
# which no released Kubernetes does. Only a nil value is null now, as upstream has it since.
set -euo pipefail
log() { printf '[build-kube] %s\n' "$*" >&2; }

VERSION=1.20.2
PKG_VERSION=1.20.5+really1.20.2-1.1+deb12u1
STAMP_VALUE=$PKG_VERSION+sockwarden1  # bump when the changes to the tree change
CACHE=${SW_KUBE_CACHE:-/var/cache/sockwarden/kube-$VERSION}
BIN=$CACHE/bin
STAMP=$BIN/.built
BINS="kube-apiserver kube-controller-manager kube-scheduler kubelet kubectl"

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$STAMP_VALUE" ]; then
  echo "$BIN"
  exit 0
fi
[ "$(id -u)" -eq 0 ] || { echo "build-kube.sh must run as root (apt-get)" >&2; exit 1; }
t0=$(date +%s)
export DEBIAN_FRONTEND=noninteractive

# Debian's source entries for bookworm and its security suite (the +deb12u1 upload).
src_list=/etc/apt/sources.list.d/sockwarden-kube-src.sources
if [ ! -f "$src_list" ]; then
  cat >"$src_list" <<'EOF'
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: bookworm
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb-src
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
  apt-get update -qq
fi
need=()
for p in golang-1.19-go dpkg-dev patch python3; do dpkg -s "$p" >/dev/null 2>&1 || need+=("$p"); done
if [ "${#need[@]}" -gt 0 ]; then
  log "installing ${need[*]}"
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

work=$CACHE/src
tree=$work/kubernetes-$VERSION
rm -rf "$work" && mkdir -p "$work" "$BIN"
cd "$work"
log "fetching the source package kubernetes=$PKG_VERSION"
apt-get source -qq --download-only "kubernetes=$PKG_VERSION" >/dev/null
apt-get download -qq golang-github-modern-go-reflect2-dev=1.0.2-2 >/dev/null
tar xzf kubernetes_*.orig.tar.gz
mkdir debian-pkg && tar xJf kubernetes_*.debian.tar.xz -C debian-pkg

# 1. Debian's patches
while read -r p; do
  [ -n "$p" ] && patch -d "$tree" -p1 -s <"debian-pkg/debian/patches/$p"
done <debian-pkg/debian/patches/series

# 2. modules.txt order
python3 - "$tree/vendor/modules.txt" <<'EOF'
import sys
path = sys.argv[1]
head, blocks = [], []
for line in open(path).read().split("\n"):
    if line.startswith("# "):
        blocks.append([line])
    elif blocks:
        blocks[-1].append(line)
    else:
        head.append(line)
out, i = head, 0
while i < len(blocks):
    cur = blocks[i][0].split()
    nxt = blocks[i + 1][0].split() if i + 1 < len(blocks) else []
    # "# X vN" followed by "# X => ...": the wildcard replacement goes first
    if len(cur) >= 3 and cur[2] != "=>" and len(nxt) >= 3 and nxt[1] == cur[1] and nxt[2] == "=>":
        out += [blocks[i + 1][0]] + blocks[i] + blocks[i + 1][1:]
        i += 2
    else:
        out += blocks[i]
        i += 1
open(path, "w").write("\n".join(out))
EOF

# 3. reflect2 1.0.2
dpkg-deb -x golang-github-modern-go-reflect2-dev_*.deb reflect2
r2=$tree/vendor/github.com/modern-go/reflect2
find "$r2" -maxdepth 1 -type f \( -name '*.go' -o -name '*.s' \) -delete
cp reflect2/usr/share/gocode/src/github.com/modern-go/reflect2/*.go \
   reflect2/usr/share/gocode/src/github.com/modern-go/reflect2/*.s "$r2/"

# 5. "" is not null
tv=$tree/vendor/k8s.io/kube-openapi/pkg/validation/validate/type.go
zero='if data == nil || reflect.DeepEqual(reflect.Zero(reflect.TypeOf(data)), reflect.ValueOf(data)) {'
grep -qF "$zero" "$tv" || { echo "build-kube.sh: $tv changed; revisit fix 5" >&2; exit 1; }
python3 - "$tv" "$zero" <<'EOF'
import sys
path, zero = sys.argv[1], sys.argv[2]
src = open(path).read()
open(path, "w").write(src.replace(zero, "if data == nil {"))
EOF
# reflect may now be unused in that file
grep -q 'reflect\.' "$tv" || sed -i '/^\s*"reflect"$/d' "$tv"

export PATH=/usr/lib/go-1.19/bin:$PATH GOCACHE=$CACHE/gocache GOPATH=$CACHE/gopath
export GOFLAGS=-mod=vendor GOPROXY=off GO111MODULE=on CGO_ENABLED=0

# 4. OpenAPI definitions: the same inputs as upstream's Makefile (every package tagged
# +k8s:openapi-gen), generated in GOPATH mode like hack/run-in-gopath.sh.
log "generating the OpenAPI definitions"
cd "$tree"
nice -n 10 go build -o "$work/openapi-gen" k8s.io/kube-openapi/cmd/openapi-gen
gp=$work/gopath-gen
mkdir -p "$gp/src/k8s.io" && ln -sfn "$tree" "$gp/src/k8s.io/kubernetes"
inputs=$(grep -rl --include='*.go' '+k8s:openapi-gen=' pkg cmd plugin staging/src/k8s.io vendor \
           2>/dev/null | grep -v -e '/code-generator/' -e '/sample-apiserver/' \
           -e '_test.go$' | xargs -n1 dirname | sed 's|^staging/src/|vendor/|' | LC_ALL=C sort -u \
         | sed 's|^|k8s.io/kubernetes/|' | paste -sd, -)
(cd "$gp/src/k8s.io/kubernetes" && GOPATH=$gp GO111MODULE=off GOFLAGS='' nice -n 10 "$work/openapi-gen" \
  --logtostderr -i "$inputs" -p k8s.io/kubernetes/pkg/generated/openapi -O zz_generated.openapi \
  -h vendor/k8s.io/code-generator/hack/boilerplate.go.txt -r "$work/openapi-violations.txt" >/dev/null 2>"$work/openapi-gen.log") \
  || { tail -20 "$work/openapi-gen.log" >&2; exit 1; }
[ -s pkg/generated/openapi/zz_generated.openapi.go ] || { echo "openapi-gen wrote nothing" >&2; exit 1; }
# Same inputs as upstream give the same rule violations as upstream's list.
diff -q "$work/openapi-violations.txt" api/api-rules/violation_exceptions.list >/dev/null \
  || log "warning: OpenAPI rule violations differ from upstream's list (inputs differ?)"


ldflags="-s -w"
for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  ldflags="$ldflags -X $p.gitVersion=v$VERSION -X $p.gitMajor=1 -X $p.gitMinor=20 -X $p.gitTreeState=archive -X $p.gitCommit=debian-$PKG_VERSION"
done
for b in $BINS; do
  log "building $b"
  nice -n 10 go build -ldflags "$ldflags" -o "$BIN/$b" "./cmd/$b"
done
echo "$STAMP_VALUE" >"$STAMP"
# The tree and the Go cache are only needed to build: keep the binaries.
rm -rf "$work" "$CACHE/gocache" "$CACHE/gopath"
log "built in $(( $(date +%s) - t0 )) s: $BIN"
echo "$BIN"
