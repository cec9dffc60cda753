#!/usr/bin/env bash
# Benchmark: warm prepare (cache hit) vs re-running `cmake --build` on an up-to-date tree.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/fixtures.sh >/dev/null
cargo build --release -p cli -p tests --features tests/real --bins
echo "== warm prepare vs cmake --build no-op (source mode)"
target/release/bench-prepare
echo "== cold binary install vs curl + sha256sum + tar (binary mode)"
target/release/bench-binary
echo "== container prepare (warm, cold) vs podman pull (container mode)"
target/release/bench-container
