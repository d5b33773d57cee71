#!/usr/bin/env bash
# The official postgres image's contract, for a server run as the postgres user.
set -euo pipefail
if [ "${1:0:1}" = '-' ]; then set -- postgres "$@"; fi
if [ "$1" = postgres ] && [ ! -s "$PGDATA/PG_VERSION" ]; then
  : "${POSTGRES_PASSWORD:?POSTGRES_PASSWORD must be set (this image does not run without a password)}"
  user=${POSTGRES_USER:-postgres}
  db=${POSTGRES_DB:-$user}
  initdb -D "$PGDATA" -U "$user" -E UTF8 --locale=C.UTF-8 --auth-local=trust --auth-host=scram-sha-256 \
    --pwfile=<(printf '%s\n' "$POSTGRES_PASSWORD") >/dev/null
  echo "host all all all scram-sha-256" >>"$PGDATA/pg_hba.conf"
  # A private server for initialisation: Unix socket only. Its log goes to stdout, as in the
  # official image (testcontainers waits for its "ready to accept connections" there).
  pg_ctl -D "$PGDATA" -o "-c listen_addresses=''" -w start
  psql=(psql -X -v ON_ERROR_STOP=1 -U "$user" -d postgres -q)
  if [ "$db" != postgres ]; then "${psql[@]}" -c "CREATE DATABASE \"$db\""; fi
  for f in /docker-entrypoint-initdb.d/*; do
    # shellcheck source=/dev/null # whoever runs the image mounts these scripts
    case "$f" in
      *.sh) echo "running $f"; . "$f" ;;
      *.sql) echo "running $f"; "${psql[@]}" -d "$db" -f "$f" ;;
      *.sql.gz) echo "running $f"; gunzip -c "$f" | "${psql[@]}" -d "$db" ;;
    esac
  done
  pg_ctl -D "$PGDATA" -m fast -w stop
  echo "PostgreSQL init process complete; ready for start up."
fi
if [ "$1" = postgres ]; then
  shift
  exec postgres -D "$PGDATA" -c listen_addresses='*' -c shared_preload_libraries=pg_stat_statements "$@"
fi
exec "$@"
