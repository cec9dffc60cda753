#!/usr/bin/env bash
# Benchmarks, each against a baseline measured in the same run: warm source prepare vs a no-op
# `cmake --build`; binary install vs curl + sha256sum + tar; container prepare vs podman pull;
# package prepare (warm, and cold vs apt-get install; installs into this system, needs root);
# staging a 512 MiB hf: model from a loopback hub vs curl -L -o and the Python huggingface_hub.
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
echo "== hf: model staging vs curl -L -o and python hf_hub_download (model staging)"
target/release/bench-model
echo "== package prepare (warm, cold) vs apt-get install (package mode)"
target/release/bench-package
