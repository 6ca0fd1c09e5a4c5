# Shared by scripts/demo-certs.sh and scripts/compose-certs.sh (sourced, not run): the
# `[--force] DIR` arguments, and a CA and leaf certificates made with the openssl CLI.
# The sourcing script sets `tool` (its name in messages) and `help_lines` (the `sed` range of
# its header comment) before calling `pki_args "$@"`; afterwards `force` and `dir` are set.
# Keys are EC P-256 (PKCS#8 PEM); certificates are signed with SHA-256 for `days` days.

pki_usage() {
  echo "usage: $0 [--force] DIR" >&2
  exit 2
}

pki_args() {
  force=0
  dir=""
  local arg
  for arg in "$@"; do
    case "$arg" in
      --force) force=1 ;;
      -h | --help)
        sed -n "${help_lines}p" "$0" | sed 's/^# \{0,1\}//'
        exit 0
        ;;
      -*) pki_usage ;;
      *)
        [[ -z "$dir" ]] || pki_usage
        dir="$arg"
        ;;
    esac
  done
  [[ -n "$dir" ]] || pki_usage
  command -v openssl > /dev/null || {
    echo "$tool: openssl not found" >&2
    exit 1
  }
}

# quiet CMD...: runs CMD, showing its output only when it fails.
quiet() {
  local out
  if ! out="$("$@" 2>&1)"; then
    echo "$tool: failed: $*" >&2
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

# new_ca KEY CRT TRUST_DOMAIN CN: a self-signed CA with URI SAN spiffe://TRUST_DOMAIN.
new_ca() {
  new_key "$1"
  quiet openssl req -x509 -new -key "$1" -sha256 -days "$days" -set_serial "$(serial)" \
    -subj "/O=$3/CN=$4" \
    -addext "basicConstraints = critical, CA:TRUE" \
    -addext "keyUsage = critical, keyCertSign, cRLSign, digitalSignature" \
    -addext "subjectAltName = URI:spiffe://$3" \
    -out "$2"
}

# new_leaf CA_KEY CA_CRT KEY CRT SUBJECT EXTENSION...: a leaf signed by the CA, with the given
# extension lines (keyUsage, extendedKeyUsage, subjectAltName ...), checked against the CA.
new_leaf() {
  local ca_key="$1" ca_crt="$2" key="$3" crt="$4" subject="$5"
  shift 5
  new_key "$key"
  {
    echo "[ext]"
    echo "basicConstraints = critical, CA:FALSE"
    echo "subjectKeyIdentifier = hash"
    echo "authorityKeyIdentifier = keyid"
    printf '%s\n' "$@"
  } > "$crt.ext"
  quiet openssl req -new -key "$key" -subj "$subject" -out "$crt.csr"
  quiet openssl x509 -req -in "$crt.csr" -CA "$ca_crt" -CAkey "$ca_key" \
    -set_serial "$(serial)" -days "$days" -sha256 \
    -extfile "$crt.ext" -extensions ext -out "$crt"
  quiet openssl verify -CAfile "$ca_crt" "$crt"
  rm -f "$crt.csr" "$crt.ext"
}
