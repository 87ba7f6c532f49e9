#!/usr/bin/env bash
# Make the four base images the compose files and Dockerfiles name available to a Docker
# engine that cannot reach a registry. For each name: keep a local image, else pull it, else
# build a stand-in from Debian packages (debootstrap, then `docker import`), tagged with the
# exact name the files use:
#   debian:bookworm-slim        debootstrap --variant=minbase bookworm
#   python:3.11-slim-bookworm   Debian's python3 (3.11.2) + venv + pip + headers
#   mysql:8.4                   MariaDB 10.11 behind an entrypoint honouring MYSQL_* / *_FILE
#   redis:7.4                   Debian's redis-server (7.0)
# Stand-ins are for smoke tests only (docs/runbooks/deploy.md), never for production.
# Usage: deploy/standin-bases.sh            (needs root for debootstrap; builds use the host network)
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
MIRROR="${QI2_DEBIAN_MIRROR:-http://deb.debian.org/debian}"

have() { docker image inspect "$1" >/dev/null 2>&1; }
available() {
  # A local image, or a pull that succeeds; prints what happened.
  if have "$1"; then echo "standin-bases: $1 present"; return 0; fi
  if timeout 60 docker pull -q "$1" >/dev/null 2>&1; then echo "standin-bases: $1 pulled"; return 0; fi
  return 1
}

debian_base() {
  local root
  root="$(mktemp -d)"
  trap 'rm -rf "$root"' RETURN
  echo "standin-bases: building debian:bookworm-slim with debootstrap (a few minutes)"
  debootstrap --variant=minbase bookworm "$root" "$MIRROR" >/dev/null
  # mktemp made the root 0700: as the image's "/" it would lock out every non-root user.
  chmod 755 "$root"
  rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
  tar -C "$root" -c . | docker import -c 'CMD ["bash"]' - debian:bookworm-slim >/dev/null
}

build_standin() {
  # The build context gets the host's extra CA certificates (e.g. a TLS-intercepting proxy's,
  # which pip inside the builds must trust as the host does); none is fine too.
  local ctx
  ctx="$(mktemp -d)"
  trap 'rm -rf "$ctx"' RETURN
  cp -r "$HERE/standins/$2/." "$ctx/"
  mkdir -p "$ctx/extra-ca"
  cp "${QI2_STANDIN_CA_DIR:-/usr/local/share/ca-certificates}"/*.crt "$ctx/extra-ca/" 2>/dev/null || true
  # The python stand-in pins pip to the project's lock (see its Dockerfile).
  cp "$HERE/../requirements/lock.txt" "$ctx/lock.txt"
  echo "standin-bases: building $1 from $2 (stand-in)"
  docker build -q --network host -t "$1" "$ctx" >/dev/null
}

available debian:bookworm-slim || debian_base
available python:3.11-slim-bookworm || build_standin python:3.11-slim-bookworm python
available mysql:8.4 || build_standin mysql:8.4 mysql
available redis:7.4 || build_standin redis:7.4 redis
echo "standin-bases: ready"
