#!/usr/bin/env bash
# Sets up a fresh machine and runs `tether up`: every Tether role on this host, embedded defaults.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo build --release --locked -p tether
exec target/release/tether up "$@"
