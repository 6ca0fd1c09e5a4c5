#!/usr/bin/env bash
# Certificates of the compose mesh (docker-compose.yml), made with the openssl CLI:
#
#   scripts/compose-certs.sh [--force] DIR
#
# Creates in DIR (made if missing) the CA of the trust domain mesh.local (ca.crt, ca.key: URI
# SAN spiffe://mesh.local) and one directory per identity, which is what the container of that
# identity mounts (and all it sees):
#
#   DIR/<name>/svid.crt, svid.key, ca.crt
#
#   edge      spiffe://mesh.local/ns/default/sa/edge      DNS edge, localhost
#   auth      spiffe://mesh.local/ns/default/sa/auth      DNS auth-sidecar, localhost
#   learner   spiffe://mesh.local/ns/default/sa/learner   DNS learner-sidecar, localhost
#   events    spiffe://mesh.local/ns/default/sa/events    DNS events-sidecar, localhost
#   admin     spiffe://mesh.local/ns/default/sa/admin     (a client only, for tests and curl)
#
# Each Envoy's certificate is both its X509-SVID (the client certificate it presents to the
# other sidecars) and its server certificate (valid for its container's DNS name); the
# sidecars check each other's SPIFFE ID. Keys are EC P-256 (PKCS#8 PEM, mode 600);
# certificates are valid for 2 days. Does nothing while every certificate in DIR is valid for
# another hour, unless --force is given; otherwise makes everything anew. A running stack
# reads new certificates when its containers are restarted (make down && make up).
set -euo pipefail

trust_domain="mesh.local"
days=2
names=(edge auth learner events admin)

tool=compose-certs
help_lines=2,24
# shellcheck source=scripts/pki.sh
source "$(dirname "${BASH_SOURCE[0]}")/pki.sh"
pki_args "$@"

fresh() {
  local name
  [[ -e "$dir/ca.crt" && -e "$dir/ca.key" ]] || return 1
  for name in "${names[@]}"; do
    [[ -e "$dir/$name/svid.crt" && -e "$dir/$name/svid.key" && -e "$dir/$name/ca.crt" ]] || return 1
    openssl x509 -checkend 3600 -noout -in "$dir/$name/svid.crt" >/dev/null 2>&1 || return 1
  done
}

if [[ "$force" -eq 0 ]] && fresh; then
  echo "compose-certs: certificates in $dir are valid, nothing to do (--force to make new ones)"
  exit 0
fi

mkdir -p "$dir"
# Everything is made in a scratch directory inside DIR and moved in place at the end.
work="$(mktemp -d "$dir/.compose-certs.XXXXXX")"
trap 'rm -rf "$work"' EXIT
umask 077

new_ca "$work/ca.key" "$work/ca.crt" "$trust_domain" "$trust_domain compose CA"

for name in "${names[@]}"; do
  mkdir -p "$work/$name"
  case "$name" in
    admin) usage_line="extendedKeyUsage = clientAuth" san="" ;;
    edge) usage_line="extendedKeyUsage = serverAuth, clientAuth" san=", DNS:edge, DNS:localhost" ;;
    *) usage_line="extendedKeyUsage = serverAuth, clientAuth" san=", DNS:$name-sidecar, DNS:localhost" ;;
  esac
  new_leaf "$work/ca.key" "$work/ca.crt" "$work/$name/svid.key" "$work/$name/svid.crt" \
    "/O=$trust_domain/CN=$name" \
    "keyUsage = critical, digitalSignature" \
    "$usage_line" \
    "subjectAltName = URI:spiffe://$trust_domain/ns/default/sa/$name$san"
  cp "$work/ca.crt" "$work/$name/ca.crt"
  chmod 755 "$work/$name"
  chmod 644 "$work/$name/svid.crt" "$work/$name/ca.crt"
  chmod 600 "$work/$name/svid.key"
done
chmod 644 "$work/ca.crt"
chmod 600 "$work/ca.key"

for name in "${names[@]}"; do
  rm -rf "${dir:?}/$name"
  mv "$work/$name" "$dir/$name"
  echo "compose-certs: $dir/$name/{svid.crt,svid.key,ca.crt} (spiffe://$trust_domain/ns/default/sa/$name)"
done
mv -f "$work/ca.key" "$dir/ca.key"
mv -f "$work/ca.crt" "$dir/ca.crt"
echo "compose-certs: $dir/ca.crt (CA, trust domain $trust_domain)"
