#!/usr/bin/env bash
# docker-compose.yml mounts this in the postgres image's /docker-entrypoint-initdb.d: it runs once,
# on an empty data directory, as POSTGRES_USER. The local stack (scripts/stack) does the same.
# pg_stat_statements in aurore's database (postgres_exporter reads it there), and a monitoring
# role for the exporter with pg_monitor and nothing more.
set -euo pipefail
psql -v ON_ERROR_STOP=1 -v pw="${POSTGRES_EXPORTER_PASSWORD:-postgres_exporter}" \
  --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" <<'SQL'
CREATE EXTENSION IF NOT EXISTS pg_stat_statements;
CREATE ROLE postgres_exporter LOGIN PASSWORD :'pw';
GRANT pg_monitor TO postgres_exporter;
SQL
