#!/usr/bin/env bash
# The whole test suite, as CI runs it: installs what is missing, starts the test peers,
# checks formatting and lints, runs every test (unit, component, eBPF, end-to-end), stops the peers.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh

cleanup() { scripts/peers.sh stop || true; }
trap cleanup EXIT
eval "$(scripts/peers.sh start)"

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked --no-fail-fast
