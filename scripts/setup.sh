#!/usr/bin/env bash
# Installs everything Tether's build, tests and `tether up` need on a fresh Debian 12 machine.
# Runs as root (apt-get, eBPF). Idempotent: a second run only re-checks.
set -euo pipefail

APT_PACKAGES=(
  # eBPF programs: clang compiles node-enforcer/bpf/*.bpf.c, libbpf-dev has bpf_helpers.h, bpftool dumps BTF
  clang llvm libbpf-dev bpftool
  # real containers for the node-enforcer tests
  runc busybox-static
  # test peers and comparison tools
  bpftrace auditd
  # the Pub/Sub emulator is a Java program
  default-jre-headless
  # benchmarks
  wrk hyperfine linux-perf
  # misc
  iproute2 procps psmisc ca-certificates curl
)
PIP_PACKAGES=("moto[server]==5.*")

need_root() {
  if [ "$(id -u)" -ne 0 ]; then
    echo "setup: run as root (apt-get and eBPF need it): sudo $0" >&2
    exit 1
  fi
}

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  need_root
  echo "setup: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${missing[@]}" >/dev/null
fi

python3 -m pip install -q --disable-pip-version-check "${PIP_PACKAGES[@]}"

# The Pub/Sub emulator ships with the Google Cloud CLI (package google-cloud-cli-pubsub-emulator).
if ! gcloud beta emulators pubsub --help >/dev/null 2>&1; then
  echo "setup: the Pub/Sub emulator is missing: install google-cloud-cli and google-cloud-cli-pubsub-emulator" >&2
  exit 1
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "setup: no Rust toolchain: install rustup and a stable toolchain (1.85 or newer)" >&2
  exit 1
fi
rustup component add rustfmt clippy >/dev/null 2>&1 || true
echo "setup: ok"
