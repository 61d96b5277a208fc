#!/usr/bin/env bash
# Installs the Debian packages the integration tests and benchmarks run against:
#
#   swaks    SMTP test client (test/support/swaks.ts)
#   postfix  smtp-sink / smtp-source (test/support/smtp-sink.ts, the relay benchmark's
#            load generator) and postfix itself (a benchmark system under test)
#   openssl  test CA and certificates (test/support/certs.ts)
#   libnet-ssleay-perl  swaks' STARTTLS/implicit TLS support (a Recommends of swaks)
#   prometheus  promtool, to unit-test the shipped alerting rules (test/monitoring)
#   lua5.4   runs the Argo CD health check against sample statuses (test/argocd)
#   postgresql  a real PostgreSQL for the fleet message-trace store (test/support/postgres.ts)
#   nsd      an authoritative DNS server serving test zones on loopback (test/support/dns.ts)
#   opendkim, opendmarc, postfix-policyd-spf-python  Postfix's DKIM and DMARC milters and SPF
#            policy service: the relay benchmark's verifying Postfix (test/bench/auth-peers.ts)
#
# Idempotent: when every command is already present it exits without touching apt
# (a second run takes about a second). Installing postfix never leaves a system
# postfix running: the benchmark starts its own instance from a private config dir.
# Must run as root (or with passwordless sudo) when something is missing.
set -euo pipefail

log() { printf '[ci-deps] %s\n' "$*" >&2; }
die() {
  log "ERROR: $*"
  exit 1
}

# command -> Debian package providing it
declare -A NEEDED=(
  [swaks]=swaks
  [smtp-sink]=postfix
  [smtp-source]=postfix
  [postfix]=postfix
  [openssl]=openssl
  [promtool]=prometheus
  [lua5.4]=lua5.4
  [initdb]=postgresql
  [nsd]=nsd
  [opendkim]=opendkim
  [opendmarc]=opendmarc
  [policyd-spf]=postfix-policyd-spf-python
)

# smtp-sink/smtp-source/postfix live in /usr/sbin, which is not always on PATH.
# PostgreSQL's server binaries live in /usr/lib/postgresql/<version>/bin.
have() {
  command -v "$1" >/dev/null 2>&1 || [[ -x "/usr/sbin/$1" ]] ||
    compgen -G "/usr/lib/postgresql/*/bin/$1" >/dev/null
}

# packages with no command of their own
EXTRA_PKGS=(libnet-ssleay-perl)

missing_pkgs=()
for pkg in "${EXTRA_PKGS[@]}"; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing_pkgs+=("$pkg")
done
for cmd in "${!NEEDED[@]}"; do
  pkg=${NEEDED[$cmd]}
  if ! have "$cmd" || ! dpkg -s "$pkg" >/dev/null 2>&1; then
    [[ " ${missing_pkgs[*]-} " == *" $pkg "* ]] || missing_pkgs+=("$pkg")
  fi
done

if ((${#missing_pkgs[@]} == 0)); then
  log "all present: swaks postfix(smtp-sink, smtp-source) openssl prometheus(promtool) lua5.4 postgresql nsd opendkim opendmarc postfix-policyd-spf-python ${EXTRA_PKGS[*]}"
  exit 0
fi

SUDO=()
if ((EUID != 0)); then
  command -v sudo >/dev/null 2>&1 || die "need root (or sudo) to install: ${missing_pkgs[*]}"
  SUDO=(sudo -n)
fi
command -v apt-get >/dev/null 2>&1 || die "apt-get not found; install ${missing_pkgs[*]} by hand (Debian 12 package names)"

export DEBIAN_FRONTEND=noninteractive
if [[ " ${missing_pkgs[*]} " == *" postfix "* ]]; then
  # No system mail setup: the benchmark configures its own postfix instance.
  echo 'postfix postfix/main_mailer_type select No configuration' | "${SUDO[@]}" debconf-set-selections
  echo 'postfix postfix/mailname string localhost' | "${SUDO[@]}" debconf-set-selections
fi
if [[ " ${missing_pkgs[*]} " == *" opendmarc "* ]]; then
  # no report database: the benchmark runs opendmarc from its own config, without history
  echo 'opendmarc opendmarc/dbconfig-install boolean false' | "${SUDO[@]}" debconf-set-selections
fi

log "installing: ${missing_pkgs[*]}"
"${SUDO[@]}" apt-get update -qq || die "apt-get update failed"
"${SUDO[@]}" apt-get install -y -qq --no-install-recommends "${missing_pkgs[@]}" >&2 ||
  die "apt-get install ${missing_pkgs[*]} failed"

# A freshly installed postfix may have been started by the package scripts (no systemd
# in containers: through the init script). Stop it so nothing listens on :25.
if [[ " ${missing_pkgs[*]} " == *" postfix "* ]]; then
  if have postfix && "${SUDO[@]}" /usr/sbin/postfix status >/dev/null 2>&1; then
    log "stopping the system postfix the package started"
    "${SUDO[@]}" /usr/sbin/postfix stop >&2 || die "could not stop the system postfix"
  fi
  if command -v systemctl >/dev/null 2>&1 && [[ -d /run/systemd/system ]]; then
    "${SUDO[@]}" systemctl disable --now postfix >/dev/null 2>&1 || true
  fi
fi

# The prometheus and postgresql packages may start their daemons (prometheus on :9090, the
# relay's default admin port); the tests start their own instances, so stop the system ones.
if [[ " ${missing_pkgs[*]} " == *" prometheus "* ]]; then
  "${SUDO[@]}" service prometheus stop >/dev/null 2>&1 || true
  pkill -x prometheus >/dev/null 2>&1 || true
fi
if [[ " ${missing_pkgs[*]} " == *" postgresql "* ]]; then
  "${SUDO[@]}" service postgresql stop >/dev/null 2>&1 || true
fi
# nsd's package may start a system nsd on :53; the tests start their own on a free loopback port.
if [[ " ${missing_pkgs[*]} " == *" nsd "* ]]; then
  "${SUDO[@]}" service nsd stop >/dev/null 2>&1 || true
fi
# The milter packages may start system daemons; the benchmark starts its own from private configs.
for svc in opendkim opendmarc; do
  if [[ " ${missing_pkgs[*]} " == *" $svc "* ]]; then
    "${SUDO[@]}" service "$svc" stop >/dev/null 2>&1 || true
  fi
done

for cmd in "${!NEEDED[@]}"; do
  have "$cmd" || die "$cmd still missing after installing ${missing_pkgs[*]}"
done
log "done"
