#!/usr/bin/env bash
# CycloneDX SBOM of what the image ships (production dependencies), made by npm itself from
# package-lock.json: writes sbom.cdx.json (or the path given). Meant to run at image build time
# (Dockerfile, after `npm ci --omit=dev`), so the SBOM always matches the image; not committed.
# Usage: bash scripts/sbom.sh [OUTPUT]
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-sbom.cdx.json}"
tmp="$(mktemp)"
trap 'rm -f "$tmp"' EXIT
npm sbom --sbom-format cyclonedx --omit dev --package-lock-only >"$tmp"
# sanity: a CycloneDX document with components
grep -q '"bomFormat": "CycloneDX"' "$tmp" || { echo "sbom.sh: npm sbom did not produce CycloneDX" >&2; exit 1; }
# mktemp makes the file 0600: the image's non-root user (and anyone scanning it) must read it.
chmod 0644 "$tmp"
mv "$tmp" "$out"
trap - EXIT
echo "wrote $out" >&2
