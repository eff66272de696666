#!/usr/bin/env bash
# A development certificate authority and certificates for the mesh, made with openssl:
#   scripts/dev-ca.sh [dir] [extra host names...]      (default dir: deploy/dev-ca)
# writes ca.pem / ca.key, a server certificate (server.pem, server.key) valid for localhost,
# 127.0.0.1, the compose service names and any extra names, and a client certificate
# (client.pem, client.key) for mutual TLS between services. Nothing here is committed: keys
# are made on the machine that uses them. Existing files are kept (delete the dir to renew).
set -euo pipefail
dir=${1:-deploy/dev-ca}
shift || true
mkdir -p "$dir"
cd "$dir"
[ -f ca.pem ] && [ -f server.pem ] && [ -f client.pem ] && exit 0
names=(localhost registry predictor batch proxy monitor console envoy "$@")
san="IP:127.0.0.1,IP:::1"
for name in "${names[@]}"; do san+=",DNS:$name"; done
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 825 \
  -subj "/CN=mlmesh development CA" -keyout ca.key -out ca.pem \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
issue() { # name, subject, extended key usage, subjectAltName
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj "/CN=$2" -keyout "$1.key" -out "$1.csr" 2>/dev/null
  printf 'basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=%s\nsubjectAltName=%s\n' "$3" "$4" > "$1.ext"
  openssl x509 -req -in "$1.csr" -CA ca.pem -CAkey ca.key -CAcreateserial -days 825 -extfile "$1.ext" -out "$1.pem" 2>/dev/null
  rm -f "$1.csr" "$1.ext"
}
issue server "mlmesh services" serverAuth "$san"
issue client "mlmesh mesh client" clientAuth "DNS:mlmesh-client"
chmod 600 ./*.key
echo "dev-ca: certificates in $dir (CA: $dir/ca.pem)" >&2
