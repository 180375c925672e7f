#!/usr/bin/env bash
# Makes sure the tests have a PostgreSQL server to talk to.
#
# Order (matching tests/conftest.py): SWARM_TEST_POSTGRES_URL if set; else a
# Docker engine (testcontainers starts a throwaway server); else the local
# server on 127.0.0.1:5432 — started if it is down, installed from Debian's
# packages if the machine has none. Never fails by itself: a test that cannot
# reach Postgres fails loudly instead.
set -uo pipefail

if [ -n "${SWARM_TEST_POSTGRES_URL:-}" ]; then
  exit 0
fi
if command -v docker >/dev/null 2>&1 && timeout 5 docker info >/dev/null 2>&1; then
  exit 0
fi
if command -v pg_isready >/dev/null 2>&1 && pg_isready -q -h 127.0.0.1 -p 5432; then
  exit 0
fi

if ! command -v pg_ctlcluster >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "ensure-postgres: installing PostgreSQL from Debian's packages" >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
    fresh_install=1
  else
    echo "ensure-postgres: no PostgreSQL here and cannot install it (need root + apt-get)" >&2
    exit 0
  fi
fi

version=$(ls /etc/postgresql 2>/dev/null | sort -V | tail -n 1)
if [ -n "$version" ]; then
  pg_ctlcluster --skip-systemctl-redirect "$version" main start 2>/dev/null || true
  for _ in $(seq 1 30); do
    pg_isready -q -h 127.0.0.1 -p 5432 && break
    sleep 0.5
  done
fi

if [ "${fresh_install:-0}" = 1 ]; then
  # A fresh cluster uses password auth on TCP; the tests' default URL carries
  # the password "postgres", which trust-auth servers simply ignore.
  su postgres -c "psql -q -c \"ALTER USER postgres PASSWORD 'postgres'\"" || true
  su postgres -c "createdb test" 2>/dev/null || true
fi
exit 0
