#!/bin/sh
# The results database on the deployment's PostgreSQL, for docker-compose.yml's one-shot
# `results-db-setup` service (image postgres, for psql): creates the role and the database
# `lockmaster_results` when missing and sets the role's password from the secret file
# (deploy/secrets/results/password), so changing the file and re-running the service rotates
# it. The schema is lockmaster's: the orchestrator migrates it when it opens the database
# (`lockmaster results migrate` does it ahead). Any run after the first changes nothing else.
# Environment: PGHOST, PGPORT, PGUSER, PGPASSWORD (the server's administrator, as psql reads
# them), RESULTS_PASSWORD_FILE.
set -eu

: "${PGHOST:?PGHOST: the PostgreSQL host}"
password_file=${RESULTS_PASSWORD_FILE:?RESULTS_PASSWORD_FILE: the results role password file}
[ -s "$password_file" ] || {
    echo "$password_file is missing or empty: put the results database password in" \
         "deploy/secrets/results/password (openssl rand -hex 24 > deploy/secrets/results/password)" >&2
    exit 1
}

tries=0
until pg_isready -q; do
    tries=$((tries + 1))
    [ "$tries" -lt 60 ] || { echo "PostgreSQL at $PGHOST does not answer" >&2; exit 1; }
    sleep 2
done

# The password goes to psql as a variable (never on a command line: `ps` would show it);
# :'password' quotes it as a literal.
password=$(cat "$password_file")
psql -v ON_ERROR_STOP=1 -v password="$password" -d postgres <<'SQL'
SELECT 'CREATE ROLE lockmaster_results LOGIN'
 WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'lockmaster_results') \gexec
ALTER ROLE lockmaster_results WITH LOGIN PASSWORD :'password';
SELECT 'CREATE DATABASE lockmaster_results OWNER lockmaster_results'
 WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'lockmaster_results') \gexec
SQL
echo "results database lockmaster_results ready on $PGHOST"
