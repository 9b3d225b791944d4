#!/bin/sh
# Creates the private CA and the certificates of the Temporal frontend's mutual TLS for
# docker-compose.yml (docs/deployment.md, "Certificates"):
#
#   OUT/ca/ca.pem, ca.key    the CA; ca.key signs, and is mounted nowhere
#   OUT/temporal/            the server: server.pem, server.key (frontend and internode), ca.pem
#   OUT/<client>/            a client certificate each: client.pem, client.key, ca.pem; one per
#                            service that talks to Temporal (temporal-admin, temporal-ui,
#                            lockmaster-setup, orchestrator, executor, launcher, publisher,
#                            gerrit-listener, web) and one for operators (operator)
#
# Usage: deploy/make-certs.sh [OUT]       (OUT: deploy/secrets/tls beside this script)
# Environment:
#   TEMPORAL_SANS  more names the server certificate is valid for, comma-separated, e.g.
#                  "DNS:temporal.ci.example.org,IP:192.0.2.10" (the address remote workers -
#                  TE hosts, static builders - and operators dial); always: DNS:temporal,
#                  DNS:localhost, IP:127.0.0.1
#   CLIENTS        the client certificates to make (default: the list above)
#   DAYS           leaf certificates' validity in days (default 825); the CA's is 3650
#   FORCE=1        make the leaf certificates again (same CA) - rotation; restart the services
#
# What exists is kept (a second run is a no-op), so the CA is never replaced by accident.
# Directories are 0700 and the CA key 0600. Mounted files are readable by all (0644): the
# Temporal images run as their own user (uid 1000), not as whoever runs this script; the
# isolation is that each service mounts only its own directory, and that OUT's parent
# (deploy/secrets) is 0700.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
out=${1:-"$here/secrets/tls"}
days=${DAYS:-825}
clients=${CLIENTS:-"temporal-admin temporal-ui lockmaster-setup orchestrator executor launcher publisher gerrit-listener web operator"}
sans="DNS:temporal,DNS:localhost,IP:127.0.0.1${TEMPORAL_SANS:+,$TEMPORAL_SANS}"

command -v openssl >/dev/null 2>&1 || {
    echo "make-certs.sh: openssl not found; install it (Debian: apt-get install openssl)" >&2
    exit 2
}

umask 077
mkdir -p "$out/ca"
# The secrets directory above OUT is what keeps the 0644 files private on this host.
parent=$(dirname "$out")
[ "$(basename "$parent")" = secrets ] && chmod 700 "$parent"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT INT TERM

serial() { echo "0x$(openssl rand -hex 16)"; }

ca="$out/ca"
if [ ! -s "$ca/ca.key" ] || [ ! -s "$ca/ca.pem" ]; then
    [ -e "$ca/ca.key" ] || [ -e "$ca/ca.pem" ] && {
        echo "make-certs.sh: $ca holds half a CA; remove it to start over" >&2
        exit 2
    }
    cat > "$work/ca.cnf" <<'EOF'
[req]
distinguished_name = dn
prompt = no
[dn]
CN = lockmaster Temporal CA
[v3_ca]
basicConstraints = critical, CA:TRUE, pathlen:0
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
EOF
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$ca/ca.key" 2>/dev/null
    openssl req -new -x509 -key "$ca/ca.key" -config "$work/ca.cnf" -extensions v3_ca \
        -days 3650 -set_serial "$(serial)" -sha256 -out "$ca/ca.pem"
    chmod 600 "$ca/ca.key"
    chmod 644 "$ca/ca.pem"
    echo "created CA $ca/ca.pem"
fi

# leaf DIR NAME CN EKU SAN: DIR/NAME.pem and DIR/NAME.key signed by the CA, DIR/ca.pem.
leaf() {
    dir="$out/$1" name=$2 cn=$3 eku=$4 san=$5
    if [ -s "$dir/$name.pem" ] && [ -s "$dir/$name.key" ] && [ "${FORCE:-0}" != 1 ]; then
        return 0
    fi
    mkdir -p "$dir"
    chmod 755 "$dir"
    {
        echo "basicConstraints = critical, CA:FALSE"
        echo "keyUsage = critical, digitalSignature"
        echo "extendedKeyUsage = $eku"
        echo "subjectKeyIdentifier = hash"
        echo "authorityKeyIdentifier = keyid"
        [ -n "$san" ] && echo "subjectAltName = $san"
    } > "$work/$1.ext"
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$work/$1.key" 2>/dev/null
    openssl req -new -key "$work/$1.key" -subj "/O=lockmaster/CN=$cn" -out "$work/$1.csr"
    openssl x509 -req -in "$work/$1.csr" -CA "$ca/ca.pem" -CAkey "$ca/ca.key" \
        -set_serial "$(serial)" -days "$days" -sha256 -extfile "$work/$1.ext" \
        -out "$work/$1.pem" 2>/dev/null
    install -m 644 "$work/$1.key" "$dir/$name.key"
    install -m 644 "$work/$1.pem" "$dir/$name.pem"
    install -m 644 "$ca/ca.pem" "$dir/ca.pem"
    echo "created $dir/$name.pem ($cn)"
}

# The server's certificate is also its client certificate between Temporal's own services
# (internode TLS with client authentication): both usages.
leaf temporal server temporal "serverAuth, clientAuth" "$sans"
for client in $clients; do
    leaf "$client" client "$client" clientAuth ""
done
