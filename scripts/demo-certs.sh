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

usage() {
  echo "usage: $0 [--force] DIR" >&2
  exit 2
}

force=0
dir=""
for arg in "$@"; do
  case "$arg" in
    --force) force=1 ;;
    -h | --help)
      sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'
      exit 0
      ;;
    -*) usage ;;
    *)
      [[ -z "$dir" ]] || usage
      dir="$arg"
      ;;
  esac
done
[[ -n "$dir" ]] || usage

command -v openssl > /dev/null || {
  echo "demo-certs: openssl not found" >&2
  exit 1
}

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

# quiet CMD...: runs CMD, showing its output only when it fails.
quiet() {
  local out
  if ! out="$("$@" 2>&1)"; then
    echo "demo-certs: failed: $*" >&2
    echo "$out" >&2
    return 1
  fi
}

new_key() {
  quiet openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1"
}

serial() {
  echo "0x$(openssl rand -hex 16)"
}

# issue NAME SUBJECT EXTENSIONS...: NAME.key and NAME.crt signed by the CA.
issue() {
  local name="$1" subject="$2"
  shift 2
  new_key "$work/$name.key"
  {
    echo "[ext]"
    echo "basicConstraints = critical, CA:FALSE"
    echo "subjectKeyIdentifier = hash"
    echo "authorityKeyIdentifier = keyid"
    printf '%s\n' "$@"
  } > "$work/$name.ext"
  quiet openssl req -new -key "$work/$name.key" -subj "$subject" -out "$work/$name.csr"
  quiet openssl x509 -req -in "$work/$name.csr" -CA "$work/ca.crt" -CAkey "$work/ca.key" \
    -set_serial "$(serial)" -days "$days" -sha256 \
    -extfile "$work/$name.ext" -extensions ext -out "$work/$name.crt"
}

new_key "$work/ca.key"
quiet openssl req -x509 -new -key "$work/ca.key" -sha256 -days "$days" -set_serial "$(serial)" \
  -subj "/O=$trust_domain/CN=$trust_domain demo CA" \
  -addext "basicConstraints = critical, CA:TRUE" \
  -addext "keyUsage = critical, keyCertSign, cRLSign, digitalSignature" \
  -addext "subjectAltName = URI:spiffe://$trust_domain" \
  -out "$work/ca.crt"

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
  quiet openssl verify -CAfile "$work/ca.crt" "$work/$name.crt"
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
