#!/bin/bash
# Create one database per Swarm service, owned by the Swarm role.
#
# The postgres image runs this once, when the data directory is initialised.
# It is idempotent, so after adding a name to databases.list on a cluster
# whose volume already exists, run it again by hand:
#   kubectl -n swarm exec postgres-0 -- /docker-entrypoint-initdb.d/10-create-databases.sh
set -euo pipefail

list="${SWARM_DATABASES_LIST:-/docker-entrypoint-initdb.d/databases.list}"

while read -r db _; do
  case "$db" in '' | '#'*) continue ;; esac
  # \gexec runs the generated statement only when the database is missing
  # (CREATE DATABASE has no IF NOT EXISTS); %I quotes the name safely.
  psql -v ON_ERROR_STOP=1 --no-psqlrc --quiet \
    --username "$POSTGRES_USER" --dbname postgres \
    --set db="$db" <<'SQL'
SELECT format('CREATE DATABASE %I OWNER %I', :'db', current_user)
WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = :'db')\gexec
SQL
done <"$list"
