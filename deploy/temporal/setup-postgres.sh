#!/bin/sh
# Temporal's schema on PostgreSQL, for docker-compose.yml's one-shot `temporal-schema` service
# (image temporalio/admin-tools, the same version as temporalio/server): creates the default
# and the visibility database if they are missing, sets up their schema on a fresh database,
# and brings it to the image's version (update-schema applies only what is newer, so a run
# after upgrading the images migrates, and any other run changes nothing).
# Environment: POSTGRES_SEEDS, DB_PORT, POSTGRES_USER, POSTGRES_PWD (as the server reads them).
set -eu

host=${POSTGRES_SEEDS:?POSTGRES_SEEDS: the PostgreSQL host}
port=${DB_PORT:-5432}
user=${POSTGRES_USER:?POSTGRES_USER: the PostgreSQL user}
export SQL_PASSWORD="${POSTGRES_PWD:?POSTGRES_PWD: the PostgreSQL password}"
schema=/etc/temporal/schema/postgresql/v12

tries=0
until nc -z -w 5 "$host" "$port"; do
    tries=$((tries + 1))
    [ "$tries" -lt 60 ] || { echo "PostgreSQL at $host:$port does not answer" >&2; exit 1; }
    sleep 2
done

sql() { temporal-sql-tool --plugin postgres12 --ep "$host" -p "$port" -u "$user" "$@"; }

for db in temporal:temporal temporal_visibility:visibility; do
    name=${db%%:*} dir=${db#*:}
    # create fails when the database exists, as it does on every run but the first; any other
    # reason it failed, the next command fails on too.
    sql --db "$name" create || echo "database $name not created: taken to exist"
    # Version tables and version 0.0 on a new database; on a database past 0.0, nothing.
    sql --db "$name" setup-schema -v 0.0
    sql --db "$name" update-schema -d "$schema/$dir/versioned"
done
echo "Temporal schema ready on $host:$port"
