#!/usr/bin/env bash
# A throw-away PostgreSQL server from Debian's package, on loopback, in a
# temporary directory, for the ledger's PostgreSQL tests.
#   eval "$(bash .ci/postgres.sh start)"   # exports CRAFTING_TEST_POSTGRES, CT_PG_DIR
#   bash .ci/postgres.sh stop "$CT_PG_DIR"
set -euo pipefail
bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true)
if [ -z "$bin" ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
  bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
fi
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
case "${1:-start}" in
  start)
    dir=$(mktemp -d /tmp/ct-pg.XXXXXX)
    [ "$(id -u)" = 0 ] && chown postgres "$dir"
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    as_pg "$bin/initdb" -D "$dir/data" --auth=trust -U postgres -E UTF8 >"$dir/initdb.log" 2>&1
    as_pg "$bin/pg_ctl" -D "$dir/data" -o "-k $dir -p $port -h 127.0.0.1 -c max_connections=300" \
      -l "$dir/server.log" -w start >/dev/null
    echo "export CRAFTING_TEST_POSTGRES=postgres://postgres@127.0.0.1:$port/postgres CT_PG_DIR=$dir"
    ;;
  stop)
    as_pg "$bin/pg_ctl" -D "$2/data" -m fast -w stop >/dev/null 2>&1 || true
    rm -rf "$2"
    ;;
esac
