#!/usr/bin/env bash
# Benchmarks, each against a baseline measured in the same run: warm source prepare vs a no-op
# `cmake --build`; binary install vs curl + sha256sum + tar; container prepare vs podman pull;
# package prepare (warm, and cold vs apt-get install; installs into this system, needs root);
# staging a 512 MiB hf: model from a loopback hub vs curl -L -o and the Python huggingface_hub.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/fixtures.sh >/dev/null
cargo build --release -p cli -p tests --features tests/real --bins
log=$(mktemp)
trap 'rm -f "$log"' EXIT
run() { # run NAME TITLE: one benchmark, its output kept for the summary
    echo "== $2"
    "target/release/$1" 2>&1 | tee "$log.$1"
}
run bench-prepare "warm prepare vs cmake --build no-op (source mode)"
run bench-binary "cold binary install vs curl + sha256sum + tar (binary mode)"
run bench-container "container prepare (warm, cold) vs podman pull (container mode)"
run bench-model "hf: model staging vs curl -L -o and python hf_hub_download (model staging)"
run bench-package "package prepare (warm, cold) vs apt-get install (package mode)"
echo
echo "== summary: every ratio against its in-run baseline, and peak RSS"
for name in bench-prepare bench-binary bench-container bench-model bench-package; do
    grep -iE "ratio|peak RSS" "$log.$name" | sed "s/^/$name: /" || true
    rm -f "$log.$name"
done
