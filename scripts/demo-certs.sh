#!/usr/bin/env bash
# Demo PKI for the SPIFFE identity demo: a CA for the trust domain mesh.local, a
# certificate for Envoy and client X509-SVIDs, all made with the openssl CLI.
#
#   scripts/demo-certs.sh [--force] DIR
#
# Creates in DIR (made if missing):
#   ca.crt, ca.key          the CA (URI SAN spiffe://mesh.local)
#   envoy.crt, envoy.key    server cert (DNS envoy.mesh.local, localhost; IP 127.0.0.1),
#                           also a client cert (URI spiffe://mesh.local/ns/default/sa/envoy)
#   <name>.crt, <name>.key  client SVIDs spiffe://mesh.local/ns/default/sa/<name> for
#                           auth, learner, events and admin (EKU clientAuth)
# Keys are EC P-256 (PKCS#8 PEM, mode 600); certificates are valid for 2 days.
# Does nothing while every certificate in DIR is valid for another hour, unless --force is
# given; otherwise (missing or expiring) makes everything anew. Prints one line per file made.
set -euo pipefail

trust_domain="mesh.local"
days=2
clients=(auth learner events admin)

tool=demo-certs
help_lines=2,15
# shellcheck source=scripts/pki.sh
source "$(dirname "${BASH_SOURCE[0]}")/pki.sh"
pki_args "$@"

# fresh: every certificate is there and valid for at least another hour.
fresh() {
  local name
  for name in ca envoy "${clients[@]}"; do
    [[ -e "$dir/$name.crt" && -e "$dir/$name.key" ]] || return 1
    openssl x509 -checkend 3600 -noout -in "$dir/$name.crt" > /dev/null 2>&1 || return 1
  done
}

if [[ "$force" -eq 0 ]] && fresh; then
  echo "demo-certs: certificates in $dir are valid, nothing to do (--force to make new ones)"
  exit 0
fi

mkdir -p "$dir"
# Build everything in a scratch directory inside DIR, then move it in place with ca.crt
# last: an interrupted run leaves no ca.crt behind and is simply run again.
work="$(mktemp -d "$dir/.demo-certs.XXXXXX")"
trap 'rm -rf "$work"' EXIT
umask 077

# issue NAME SUBJECT EXTENSIONS...: NAME.key and NAME.crt signed by the CA.
issue() {
  local name="$1"
  shift
  new_leaf "$work/ca.key" "$work/ca.crt" "$work/$name.key" "$work/$name.crt" "$@"
}

new_ca "$work/ca.key" "$work/ca.crt" "$trust_domain" "$trust_domain demo CA"

issue envoy "/O=$trust_domain/CN=envoy.$trust_domain" \
  "keyUsage = critical, digitalSignature" \
  "extendedKeyUsage = serverAuth, clientAuth" \
  "subjectAltName = DNS:envoy.$trust_domain, DNS:localhost, IP:127.0.0.1, URI:spiffe://$trust_domain/ns/default/sa/envoy"

for name in "${clients[@]}"; do
  issue "$name" "/O=$trust_domain/CN=$name" \
    "keyUsage = critical, digitalSignature" \
    "extendedKeyUsage = clientAuth" \
    "subjectAltName = URI:spiffe://$trust_domain/ns/default/sa/$name"
done

for name in ca envoy "${clients[@]}"; do
  chmod 600 "$work/$name.key"
  chmod 644 "$work/$name.crt"
done

describe() {
  case "$1" in
    ca) echo "CA, trust domain $trust_domain" ;;
    envoy) echo "Envoy: DNS envoy.$trust_domain, localhost, IP 127.0.0.1; spiffe://$trust_domain/ns/default/sa/envoy" ;;
    *) echo "client SVID spiffe://$trust_domain/ns/default/sa/$1" ;;
  esac
}

for name in envoy "${clients[@]}" ca; do
  what="$(describe "$name")"
  mv -f "$work/$name.key" "$dir/$name.key"
  echo "demo-certs: $dir/$name.key (key: $what)"
  mv -f "$work/$name.crt" "$dir/$name.crt"
  echo "demo-certs: $dir/$name.crt ($what)"
done
