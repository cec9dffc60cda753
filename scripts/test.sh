#!/usr/bin/env bash
# Runs every test: unit tests, snapshot tests, the architecture invariants, the CLI on bad input,
# and the real end-to-end tests (offline llama.cpp fixture built with real cmake, a real
# llama-server decoding a tiny model). The first run on a machine builds llama.cpp cold
# (about 12 minutes on 2 cores); later runs reuse the keyed cache and take about a minute.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/ensure-deps.sh

bash scripts/fixtures.sh >/dev/null
cargo build --workspace --bins --all-features
cargo test --workspace --all-features "$@"
