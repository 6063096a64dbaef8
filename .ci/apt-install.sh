#!/usr/bin/env bash
# Install Debian packages for the test servers (.ci/postgres.sh, .ci/redis.sh), as root.
#
#   .ci/apt-install.sh PACKAGE...
#
# `apt-get update` only when the package lists don't know the first package, or when the install
# fails with what it has (stale lists: the old .debs are gone from the mirror). Output goes to stderr.
set -euo pipefail

log() { echo "apt-install.sh: $*" >&2; }
die() { log "error: $*"; exit 1; }

[[ $# -gt 0 ]] || die "usage: $0 PACKAGE..."
[[ $EUID -eq 0 ]] || die "not root: apt-get install $*"
export DEBIAN_FRONTEND=noninteractive
apt=(apt-get -y -q -o Dpkg::Use-Pty=0 -o Dpkg::Options::=--force-confdef
     -o Dpkg::Options::=--force-confold install --no-install-recommends "$@")
policy=$(apt-cache policy "$1" 2>/dev/null || true)
if [[ $policy != *"Candidate: "[0-9]* ]]; then
  log "apt-get update"
  apt-get -q -o Dpkg::Use-Pty=0 update >&2 || log "apt-get update reported errors; trying anyway"
fi
log "apt-get install $*"
if ! "${apt[@]}" >&2; then
  log "install failed; apt-get update and one more try"
  apt-get -q -o Dpkg::Use-Pty=0 update >&2 || true
  "${apt[@]}" >&2 || die "apt-get install $* failed"
fi
