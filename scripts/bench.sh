#!/usr/bin/env bash
# Benchmark: warm prepare (cache hit) vs re-running `cmake --build` on an up-to-date tree.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/fixtures.sh >/dev/null
cargo run --release -p tests --features real --bin bench-prepare
