#!/bin/sh
# lockmaster's namespace, for docker-compose.yml's one-shot `temporal-namespace` service (image
# temporalio/admin-tools): waits for the frontend, then creates the namespace unless it exists.
# The frontend takes only mutual TLS: this service has its own client certificate
# (deploy/make-certs.sh, directory temporal-admin).
# Environment: TEMPORAL_ADDRESS, NAMESPACE, RETENTION, TLS_DIR, TLS_SERVER_NAME.
set -eu

address=${TEMPORAL_ADDRESS:-temporal:7233}
namespace=${NAMESPACE:-lockmaster}
retention=${RETENTION:-720h}
tls=${TLS_DIR:-/etc/temporal/tls}

for f in ca.pem client.pem client.key; do
    [ -r "$tls/$f" ] || {
        echo "$tls/$f is missing: run deploy/make-certs.sh before docker compose up" >&2
        exit 2
    }
done

t() {
    temporal "$@" --address "$address" \
        --tls-ca-path "$tls/ca.pem" --tls-cert-path "$tls/client.pem" \
        --tls-key-path "$tls/client.key" --tls-server-name "${TLS_SERVER_NAME:-temporal}"
}

tries=0
until t operator cluster health >/dev/null 2>&1; do
    tries=$((tries + 1))
    [ "$tries" -lt 60 ] || { t operator cluster health; exit 1; }
    sleep 2
done

if t operator namespace describe --namespace "$namespace" >/dev/null 2>&1; then
    echo "namespace $namespace exists"
else
    t operator namespace create --namespace "$namespace" --retention "$retention"
    echo "namespace $namespace created"
fi
