#!/usr/bin/env bash
# Builds the Mail-Plus image the way a user does -- `docker build` of the repository's Dockerfile,
# here with buildah (Debian; no daemon, no registry) -- on a Node 24 base image built locally:
#
#   1. a Debian 12 root filesystem from debootstrap (minbase), cached;
#   2. Node 24 from the npm package pinned in package.json (`node`, the binary of
#      node-linux-<arch>) and npm from the npm package of the same version as the host's npm,
#      added under /usr/local as in the official node images -> localhost/mailplus-cluster/node:<v>;
#   3. buildah build of ./Dockerfile with --build-arg NODE_IMAGE=<that image>, VERSION, REVISION;
#   4. the result written as an OCI archive (for `test/cluster/cluster.sh import`).
#
# Prints the archive path as the last line of stdout; the image is named localhost/mailplus:e2e
# (or $MAILPLUS_IMAGE). Buildah's storage is kept under the cache root, so an unchanged
# package-lock.json reuses the dependency layer.
#
# Environment: MAILPLUS_CACHE_DIR (cache root), MAILPLUS_IMAGE (name), MAILPLUS_DEBIAN_MIRROR.
set -o errexit -o nounset -o pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$REPO"
NODE=$REPO/node_modules/.bin/node
IMAGE=${MAILPLUS_IMAGE:-localhost/mailplus:e2e}
CACHE_ROOT=${MAILPLUS_CACHE_DIR:-${XDG_CACHE_HOME:-${HOME:?HOME is not set}/.cache}/mailplus}
IMAGES=$CACHE_ROOT/images
MIRROR=${MAILPLUS_DEBIAN_MIRROR:-http://deb.debian.org/debian}

log() { printf '[build-image] %s\n' "$*" >&2; }
die() {
  printf '[build-image] ERROR: %s\n' "$*" >&2
  exit 1
}
ensure_packages() {
  local missing=() p
  for p in "$@"; do
    [[ "$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)" == "install ok installed" ]] || missing+=("$p")
  done
  ((${#missing[@]} == 0)) && return 0
  [[ $(id -u) -eq 0 ]] || die "need Debian packages ${missing[*]} (run as root)"
  log "apt-get install ${missing[*]}"
  apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2 ||
    die "apt-get install ${missing[*]} failed"
}

[[ $(id -u) -eq 0 ]] || die "needs root (debootstrap, buildah's chroot isolation)"
[[ -x $NODE ]] || die "no $NODE: run npm ci first"
ensure_packages debootstrap buildah
mkdir -p "$IMAGES"
exec 9>"$IMAGES/.lock"
flock -w 1800 9 || die "timed out waiting for $IMAGES/.lock"
t0=$SECONDS

# --- 1. Debian root filesystem ------------------------------------------------------------------
base_tar=$IMAGES/debian-bookworm-minbase.tar
if [[ ! -f $base_tar ]]; then
  log "debootstrap bookworm (minbase) from $MIRROR"
  root=$(mktemp -d "$IMAGES/.debootstrap.XXXXXX")
  nice -n 19 debootstrap --variant=minbase --include=ca-certificates bookworm "$root" "$MIRROR" >&2 ||
    die "debootstrap failed (log: $root/debootstrap/debootstrap.log)"
  # No package lists or caches in the image (as in Debian's docker images).
  rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb
  tar --numeric-owner --xattrs -C "$root" -cf "$base_tar.partial" . && mv "$base_tar.partial" "$base_tar"
  rm -rf "$root"
  log "base root filesystem cached: $base_tar ($((SECONDS - t0)) s)"
fi

# --- 2. Node 24 base image ----------------------------------------------------------------------
node_version=$("$NODE" -p 'process.versions.node')
node_major=${node_version%%.*}
npm_version=$(npm --version)
node_image=localhost/mailplus-cluster/node:$node_version
node_archive=$IMAGES/node-$node_version-npm-$npm_version.tar
if [[ ! -f $node_archive ]]; then
  log "base image $node_image: Node $node_version (npm package) + npm $npm_version"
  stage=$(mktemp -d "$IMAGES/.node.XXXXXX")
  tar --numeric-owner --xattrs -C "$stage" -xf "$base_tar"
  install -D -m 0755 "$(readlink -f "$NODE")" "$stage/usr/local/bin/node"
  (cd "$stage" && npm pack --silent "npm@$npm_version" >/dev/null) || die "npm pack npm@$npm_version failed"
  mkdir -p "$stage/usr/local/lib/node_modules/npm"
  tar -xzf "$stage"/npm-"$npm_version".tgz --strip-components=1 -C "$stage/usr/local/lib/node_modules/npm"
  rm -f "$stage"/npm-"$npm_version".tgz
  ln -s ../lib/node_modules/npm/bin/npm-cli.js "$stage/usr/local/bin/npm"
  ln -s ../lib/node_modules/npm/bin/npx-cli.js "$stage/usr/local/bin/npx"
  "$NODE" test/cluster/oci-archive.ts --name "$node_image" --rootfs "$stage" --preserve-owners \
    --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin --env "NODE_VERSION=$node_version" \
    --cmd node --label "org.opencontainers.image.description=Debian 12 minbase + Node $node_version" \
    --out "$node_archive.partial"
  mv "$node_archive.partial" "$node_archive"
  rm -rf "$stage"
  log "base image cached: $node_archive ($((SECONDS - t0)) s)"
fi
((node_major == 24)) || die "package.json's node package gives Node $node_version, the image needs 24"

# --- 3. buildah build of the Dockerfile ---------------------------------------------------------
# In a private mount namespace: the overlay mounts buildah makes (and leaves) vanish with it.
bh=(unshare --mount --propagation private buildah --root "$IMAGES/buildah/root" --runroot "$IMAGES/buildah/run" --storage-driver overlay)
if ! "${bh[@]}" inspect --type image "$node_image" >/dev/null 2>&1; then
  id=$("${bh[@]}" pull --quiet "oci-archive:$node_archive" | tail -n 1)
  "${bh[@]}" tag "$id" "$node_image"
fi
version=$("$NODE" -p 'require("./package.json").version')
revision=$(git rev-parse HEAD 2>/dev/null || echo unknown)
log "buildah build -t $IMAGE (NODE_IMAGE=$node_image)"
# Chroot isolation: RUN steps need no runtime daemon; they share the host's network for npm ci.
# The host's CA bundle and an npmrc pointing npm at it are mounted for the RUN steps only (never
# part of a layer): npm ci then trusts what the host trusts (e.g. a TLS-inspecting egress proxy's
# CA), as `docker build` on that host would need too.
build_env=$IMAGES/build-env
mkdir -p "$build_env"
printf 'cafile=/etc/ssl/certs/ca-certificates.crt\n' >"$build_env/npmrc"
host_ca=/etc/ssl/certs/ca-certificates.crt
mounts=(--volume "$build_env/npmrc:/usr/local/etc/npmrc:ro")
[[ -f $host_ca ]] && mounts+=(--volume "$host_ca:/etc/ssl/certs/ca-certificates.crt:ro")
"${bh[@]}" build --isolation chroot --layers --pull=false "${mounts[@]}" \
  --build-arg "NODE_IMAGE=$node_image" --build-arg "VERSION=$version" --build-arg "REVISION=$revision" \
  -t "$IMAGE" -f Dockerfile . >&2
out=$IMAGES/mailplus-image.tar
rm -f "$out"
"${bh[@]}" push --quiet "$IMAGE" "oci-archive:$out:$IMAGE" >&2
log "image $IMAGE -> $out ($((SECONDS - t0)) s)"
printf '%s\n' "$out"
