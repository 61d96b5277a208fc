#!/usr/bin/env bash
# Installs the binaries the operator's Kubernetes tests run against -- a real
# kube-apiserver, etcd and kubectl -- into a cache directory outside the repo,
# in the layout of controller-runtime's setup-envtest (one directory holding
# the three binaries). Prints that directory as the LAST line of stdout, so
#
#     KUBEBUILDER_ASSETS=$(scripts/envtest-assets.sh)
#
# works. Progress goes to stderr. Any failure exits non-zero.
#
#     scripts/envtest-assets.sh --node
#
# installs, into a sibling directory, everything a single-node cluster runs
# (test/cluster/cluster.sh): the three above plus kubelet, kube-controller-manager,
# kube-scheduler, kube-proxy (same source, same build) and the static `pause`
# binary from the source's build/pause/linux/pause.c.
#
# kube-apiserver v1.20.2 is built from Debian 12's `kubernetes` source package
# (full upstream source, vendored dependencies included) with Debian's Go,
# offline (GOPROXY=off). etcd comes from Debian's etcd-server, kubectl from the
# PATH or Debian's kubernetes-client. See docs/envtest.md.
#
# Environment:
#   KUBEBUILDER_ASSETS      if set and complete, printed as is (nothing built)
#   MAILPLUS_CACHE_DIR      cache root (default ${XDG_CACHE_HOME:-$HOME/.cache}/mailplus)
#   MAILPLUS_DEBIAN_MIRROR  Debian mirror for the source package (default: the
#                           one this machine's apt sources use, else deb.debian.org)
#   MAILPLUS_ENVTEST_KEEP_BUILD=1  keep the temporary build tree (debugging)
set -euo pipefail

readonly K8S_VERSION=1.20.2
readonly K8S_GIT_COMMIT=faecb196815e248d3ecfb03c680a4507229c2a56 # upstream tag v1.20.2
readonly SRC_PACKAGE=kubernetes
readonly SRC_SUITE=bookworm
readonly REFLECT2_DIR=/usr/share/gocode/src/github.com/modern-go/reflect2

log() { printf '[envtest-assets] %s\n' "$*" >&2; }
die() {
  printf '[envtest-assets] ERROR: %s\n' "$*" >&2
  exit 1
}
BUILD_DIR=
ASSET_DIR=
on_exit() {
  local rc=$?
  if [[ -n $BUILD_DIR && -d $BUILD_DIR ]]; then
    if [[ ${MAILPLUS_ENVTEST_KEEP_BUILD:-0} == 1 ]]; then
      printf '[envtest-assets] keeping build tree %s\n' "$BUILD_DIR" >&2
    else
      rm -rf "$BUILD_DIR"
    fi
  fi
  if [[ $rc -ne 0 && -n $ASSET_DIR ]]; then printf '[envtest-assets] FAILED (exit %s); %s is incomplete, rerun to finish\n' "$rc" "$ASSET_DIR" >&2; fi
  exit "$rc"
}
trap on_exit EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

MODE=envtest
case "${1:-}" in
'') ;;
--node) MODE=node ;;
*) die "unknown argument '$1' (usage: $0 [--node])" ;;
esac
BINARIES=(kube-apiserver etcd kubectl)
# Upstream Go commands (make WHAT=cmd/<name>) among BINARIES.
GO_COMMANDS=(kube-apiserver)
if [[ $MODE == node ]]; then
  BINARIES+=(kubelet kube-controller-manager kube-scheduler kube-proxy pause)
  GO_COMMANDS+=(kubelet kube-controller-manager kube-scheduler kube-proxy)
fi
# What else a node runs, from Debian (test/cluster/cluster.sh), and the static busybox its smoke
# test builds an image from.
NODE_PACKAGES=(containerd runc containernetworking-plugins iptables conntrack openssl busybox-static)
readonly MODE BINARIES GO_COMMANDS NODE_PACKAGES

pkg_installed() { [[ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null || true)" == "install ok installed" ]]; }
node_packages_ok() { # the Debian packages a node needs are installed (always true for envtest)
  local p
  [[ $MODE == node ]] || return 0
  for p in "${NODE_PACKAGES[@]}"; do pkg_installed "$p" || return 1; done
}

complete_dir() { # complete_dir DIR -> 0 if DIR holds the executables
  local d=$1 b
  for b in "${BINARIES[@]}"; do
    [[ -f $d/$b && -x $d/$b ]] || return 1
  done
}

# --- 1. Assets given by the caller --------------------------------------------
if [[ $MODE == envtest && -n ${KUBEBUILDER_ASSETS:-} ]]; then
  if complete_dir "$KUBEBUILDER_ASSETS"; then
    printf '%s\n' "$KUBEBUILDER_ASSETS"
    exit 0
  fi
  die "KUBEBUILDER_ASSETS=$KUBEBUILDER_ASSETS is set but does not contain executable ${BINARIES[*]}; unset it to build the default assets"
fi

# --- 2. The cache ----------------------------------------------------------------
case "$(uname -m)" in
x86_64 | amd64) ARCH=amd64 ;;
aarch64 | arm64) ARCH=arm64 ;;
*) ARCH=$(uname -m) ;;
esac
CACHE_ROOT=${MAILPLUS_CACHE_DIR:-${XDG_CACHE_HOME:-${HOME:?HOME is not set}/.cache}/mailplus}
ENVTEST_ROOT=$CACHE_ROOT/envtest
if [[ $MODE == node ]]; then
  ASSET_DIR=$ENVTEST_ROOT/k8s-node-$K8S_VERSION-$ARCH
else
  ASSET_DIR=$ENVTEST_ROOT/k8s-$K8S_VERSION-$ARCH
fi

# Fast path: everything present -> print and leave (no lock, no apt).
if complete_dir "$ASSET_DIR" && node_packages_ok; then
  printf '%s\n' "$ASSET_DIR"
  exit 0
fi

mkdir -p "$ENVTEST_ROOT"
# One installer at a time (parallel test workers may all call this script).
exec 9>"$ENVTEST_ROOT/.lock"
if ! flock -n 9; then
  log "another envtest-assets.sh run holds $ENVTEST_ROOT/.lock; waiting (up to 30 min)"
  flock -w 1800 9 || die "timed out waiting for $ENVTEST_ROOT/.lock"
fi
if complete_dir "$ASSET_DIR" && node_packages_ok; then # the other run finished the job
  printf '%s\n' "$ASSET_DIR"
  exit 0
fi
mkdir -p "$ASSET_DIR"
for b in "${BINARIES[@]}"; do rm -f "$ASSET_DIR/.$b".*; done # interrupted copies
log "installing Kubernetes $K8S_VERSION $MODE assets into $ASSET_DIR"

# --- helpers -------------------------------------------------------------------
APT_UPDATED=0

ensure_packages() { # ensure_packages PKG... : install the missing ones with apt-get
  local missing=() p
  for p in "$@"; do pkg_installed "$p" || missing+=("$p"); done
  ((${#missing[@]} == 0)) && return 0
  command -v apt-get >/dev/null || die "need Debian packages ${missing[*]} but apt-get is not available"
  if [[ $(id -u) -ne 0 ]]; then
    die "need Debian packages ${missing[*]}; run as root or install them: sudo apt-get install -y ${missing[*]}"
  fi
  if ((APT_UPDATED == 0)); then
    log "apt-get update"
    apt-get update -qq >&2 || die "apt-get update failed"
    APT_UPDATED=1
  fi
  log "apt-get install ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2 ||
    die "apt-get install ${missing[*]} failed"
}

install_file() { # install_file SRC NAME : copy SRC into the asset dir atomically
  local src=$1 name=$2 tmp
  tmp=$(mktemp "$ASSET_DIR/.$name.XXXXXX")
  cp -L "$src" "$tmp"
  chmod 0755 "$tmp"
  mv -f "$tmp" "$ASSET_DIR/$name"
  log "installed $ASSET_DIR/$name"
}

debian_mirror() { # the Debian archive this machine's apt uses
  if [[ -n ${MAILPLUS_DEBIAN_MIRROR:-} ]]; then
    printf '%s\n' "${MAILPLUS_DEBIAN_MIRROR%/}"
    return
  fi
  local f uri
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.sources /etc/apt/sources.list.d/*.list; do
    [[ -f $f ]] || continue
    # deb822 "URIs: a b" and one-line "deb [opts] URI suite comps"; words wanted
    # shellcheck disable=SC2013
    for uri in $(sed -nE \
      -e 's/^[[:space:]]*URIs:[[:space:]]*(.*)$/\1/p' \
      -e 's/^[[:space:]]*deb(-src)?[[:space:]]+(\[[^]]*\][[:space:]]+)?([^[:space:]]+).*/\3/p' "$f"); do
      if [[ $uri =~ ^https?://[^[:space:]]*/debian/?$ ]]; then
        printf '%s\n' "${uri%/}"
        return
      fi
    done
  done
  printf '%s\n' "http://deb.debian.org/debian"
}

[[ $MODE == node ]] && ensure_packages "${NODE_PACKAGES[@]}"

# --- 3. etcd -------------------------------------------------------------------
if ! [[ -x $ASSET_DIR/etcd ]]; then
  etcd_bin=$(command -v etcd || true)
  if [[ -z $etcd_bin ]]; then
    ensure_packages etcd-server
    etcd_bin=$(command -v etcd || echo /usr/bin/etcd)
  fi
  [[ -x $etcd_bin ]] || die "etcd not found after installing etcd-server"
  install_file "$etcd_bin" etcd
fi

# --- 4. kubectl ----------------------------------------------------------------
if ! [[ -x $ASSET_DIR/kubectl ]]; then
  kubectl_bin=$(command -v kubectl || true)
  if [[ -z $kubectl_bin ]]; then
    ensure_packages kubernetes-client
    kubectl_bin=$(command -v kubectl || echo /usr/bin/kubectl)
  fi
  [[ -x $kubectl_bin ]] || die "kubectl not found after installing kubernetes-client"
  install_file "$kubectl_bin" kubectl
fi

# --- 5. Kubernetes commands (and pause), built from Debian's source package -----
missing=()
for b in "${GO_COMMANDS[@]}"; do [[ -x $ASSET_DIR/$b ]] || missing+=("$b"); done
need_pause=0
[[ $MODE == node && ! -x $ASSET_DIR/pause ]] && need_pause=1
if ((${#missing[@]} > 0 || need_pause)); then
  start=$SECONDS
  ensure_packages golang-go dpkg-dev golang-github-modern-go-reflect2-dev debian-archive-keyring \
    ca-certificates make rsync patch xz-utils findutils util-linux
  ((need_pause)) && ensure_packages gcc libc6-dev

  # A fixed path (we hold the lock): Go's build cache keys include source
  # directories, so a stable path lets a rebuild reuse the cache.
  BUILD_DIR=$ENVTEST_ROOT/.build-k8s-$K8S_VERSION
  rm -rf "$BUILD_DIR" # leftovers of an interrupted run
  mkdir -p "$BUILD_DIR"

  # 5a. Fetch the source package with a private apt configuration (no change to
  #     the machine's apt sources; works on Debian 12 and 13 alike).
  mirror=$(debian_mirror)
  keyring=/usr/share/keyrings/debian-archive-keyring.gpg
  mkdir -p "$BUILD_DIR/apt/lists/partial" "$BUILD_DIR/apt/parts" "$BUILD_DIR/dl"
  cat >"$BUILD_DIR/apt/sources.list" <<EOF
deb-src [signed-by=$keyring] $mirror $SRC_SUITE main
EOF
  apt_src=(apt-get -q
    -o "Dir::Etc::SourceList=$BUILD_DIR/apt/sources.list"
    -o "Dir::Etc::SourceParts=$BUILD_DIR/apt/parts"
    -o "Dir::State::Lists=$BUILD_DIR/apt/lists"
    -o "Dir::Cache::pkgcache=" -o "Dir::Cache::srcpkgcache="
    -o "APT::Get::List-Cleanup=0")
  [[ $(id -u) -eq 0 ]] && apt_src+=(-o "APT::Sandbox::User=root")
  log "fetching Debian source package '$SRC_PACKAGE' ($SRC_SUITE) from $mirror"
  "${apt_src[@]}" update >&2 || die "apt-get update for $SRC_SUITE deb-src failed"
  (cd "$BUILD_DIR/dl" && "${apt_src[@]}" source --download-only "$SRC_PACKAGE" >&2) ||
    die "apt-get source --download-only $SRC_PACKAGE failed"
  shopt -s nullglob
  dscs=("$BUILD_DIR"/dl/"$SRC_PACKAGE"_*really"$K8S_VERSION"*.dsc)
  shopt -u nullglob
  ((${#dscs[@]} == 1)) || die "expected one ${SRC_PACKAGE}_*really$K8S_VERSION*.dsc, got: $(ls "$BUILD_DIR/dl")"
  log "unpacking $(basename "${dscs[0]}")"
  dpkg-source -x "${dscs[0]}" "$BUILD_DIR/k8s" >&2 || die "dpkg-source -x failed"
  SRC=$BUILD_DIR/k8s
  grep -q "tag: v$K8S_VERSION'" "$SRC/hack/lib/version.sh" ||
    die "source package is not upstream v$K8S_VERSION"

  # 5b. Vendored reflect2 v1.0.1 crashes with Go >= 1.18: use Debian's v1.0.2.
  [[ -f $REFLECT2_DIR/go_above_118.go ]] || die "$REFLECT2_DIR lacks reflect2 >= 1.0.2 sources"
  rsync -a --delete --exclude go.mod --exclude go.sum --exclude '*_test.go' --exclude BUILD \
    "$REFLECT2_DIR/" "$SRC/vendor/github.com/modern-go/reflect2/"

  # 5c. Build with upstream's make (generates OpenAPI code first), offline.
  cat >"$BUILD_DIR/version.env" <<EOF
KUBE_GIT_COMMIT='$K8S_GIT_COMMIT'
KUBE_GIT_TREE_STATE='clean'
KUBE_GIT_VERSION='v$K8S_VERSION'
KUBE_GIT_MAJOR='${K8S_VERSION%%.*}'
KUBE_GIT_MINOR='$(cut -d. -f2 <<<"$K8S_VERSION")'
EOF
  export PATH=/usr/lib/go/bin:$PATH # Debian's Go first
  go_version=$(go version) || die "go not found"
  log "building ${missing[*]:-nothing with Go} with $go_version (first build takes ~5 min per command on 2 cores)"
  # Upstream's build forces GOCACHE=_output/local/go/cache: point that at the
  # persistent cache so rebuilds are fast.
  mkdir -p "$ENVTEST_ROOT/gocache" "$SRC/_output/local/go"
  ln -sfn "$ENVTEST_ROOT/gocache" "$SRC/_output/local/go/cache"
  whats=()
  for b in "${missing[@]}"; do whats+=("cmd/$b"); done
  ((${#whats[@]} == 0)) || (
    cd "$SRC"
    env GOPROXY=off GOTOOLCHAIN=local GOFLAGS=-tags=providerless CGO_ENABLED=0 \
      GOCACHE="$ENVTEST_ROOT/gocache" \
      KUBE_GIT_VERSION_FILE="$BUILD_DIR/version.env" \
      KUBE_GIT_COMMIT="$K8S_GIT_COMMIT" KUBE_GIT_TREE_STATE=clean KUBE_GIT_VERSION="v$K8S_VERSION" \
      make WHAT="${whats[*]}"
  ) >&2 || die "make WHAT='${whats[*]}' failed"
  for b in "${missing[@]}"; do
    built=$SRC/_output/bin/$b
    [[ -x $built ]] || die "build produced no $built"
    got=$("$built" --version 2>&1) || die "built $b does not run: $got"
    [[ $got == "Kubernetes v$K8S_VERSION" ]] || die "built $b reports '$got', want 'Kubernetes v$K8S_VERSION'"
    install_file "$built" "$b"
  done
  # 5d. The pod sandbox's init process, with upstream's flags (build/pause/Makefile).
  if ((need_pause)); then
    pause_tag=$(sed -n 's/^TAG = //p' "$SRC/build/pause/Makefile")
    [[ -n $pause_tag ]] || die "no TAG in $SRC/build/pause/Makefile"
    gcc -Os -Wall -Werror -static -DVERSION="v$pause_tag-mailplus" \
      -o "$BUILD_DIR/pause" "$SRC/build/pause/linux/pause.c" >&2 || die "building pause failed"
    got=$("$BUILD_DIR/pause" -v 2>&1) || die "built pause does not run: $got"
    [[ $got == "pause.c v$pause_tag-mailplus" ]] || die "built pause reports '$got'"
    install_file "$BUILD_DIR/pause" pause
  fi
  ((need_pause)) && missing+=(pause)
  log "built ${missing[*]} in $((SECONDS - start)) s"
fi

complete_dir "$ASSET_DIR" || die "internal error: $ASSET_DIR is incomplete"
printf '%s\n' "$ASSET_DIR"
