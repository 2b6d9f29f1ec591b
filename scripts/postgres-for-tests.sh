# Sourced by scripts/test.sh: sets HALLMARK_TEST_DATABASE_URL, the PostgreSQL server the store
# tests create their throwaway databases on. Kept when already set; else the local server on
# 127.0.0.1:5432 when it answers with trust auth (user postgres); else a throwaway cluster of
# Debian's postgresql, started on a free loopback port as the postgres user and stopped by
# hallmark_stop_test_postgres. `hallmark_test_postgres --throwaway` skips the local server.

hallmark_pg_dir=""
hallmark_pg_ctl=""

hallmark_as_postgres() {
  if [[ $(id -u) -eq 0 ]]; then runuser -u postgres -- "$@"; else "$@"; fi
}

hallmark_test_postgres() {
  if [[ -n "${HALLMARK_TEST_DATABASE_URL:-}" ]]; then return 0; fi
  if [[ "${1:-}" != "--throwaway" ]] && pg_isready -q -h 127.0.0.1 -p 5432 \
    && psql -h 127.0.0.1 -p 5432 -U postgres -d postgres -Atqc 'SELECT 1' >/dev/null 2>&1; then
    export HALLMARK_TEST_DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres
    return 0
  fi
  local bin
  bin=$(ls -d /usr/lib/postgresql/*/bin/initdb 2>/dev/null | sort -V | tail -n 1)
  bin=${bin%/initdb}
  if [[ -z "$bin" ]]; then
    echo "no PostgreSQL for the store tests: install Debian's postgresql or set HALLMARK_TEST_DATABASE_URL" >&2
    return 1
  fi
  hallmark_pg_dir=$(mktemp -d /tmp/hallmark-pg.XXXXXX)
  hallmark_pg_ctl="$bin/pg_ctl"
  # The server refuses to run as root: the cluster belongs to the postgres user.
  if [[ $(id -u) -eq 0 ]]; then chown postgres: "$hallmark_pg_dir"; fi
  local port
  port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  echo "==> starting a throwaway PostgreSQL cluster on 127.0.0.1:$port"
  hallmark_as_postgres "$bin/initdb" -D "$hallmark_pg_dir/data" -A trust -U postgres >/dev/null
  hallmark_as_postgres "$hallmark_pg_ctl" -D "$hallmark_pg_dir/data" -l "$hallmark_pg_dir/log" -w \
    -o "-c listen_addresses=127.0.0.1 -p $port -k $hallmark_pg_dir" start >/dev/null
  export HALLMARK_TEST_DATABASE_URL="postgres://postgres@127.0.0.1:$port/postgres"
}

hallmark_stop_test_postgres() {
  if [[ -n "$hallmark_pg_dir" ]]; then
    hallmark_as_postgres "$hallmark_pg_ctl" -D "$hallmark_pg_dir/data" -m fast -w stop >/dev/null 2>&1 || true
    rm -rf "$hallmark_pg_dir"
    hallmark_pg_dir=""
  fi
}
