#!/usr/bin/env bash
# The main job end to end on an embedded default: prepare the offline llama.cpp source fixture
# and a tiny model, `orchctl engine up` (build from source with cmake, start, wait until ready,
# check the running build), ask for a completion, `orchctl engine down`.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/ensure-deps.sh
eval "$(bash scripts/fixtures.sh)"
cargo build --release -p cli
orchctl=target/release/orchctl

port=${DEMO_PORT:-8089}
config=$(mktemp --suffix=.yaml)
trap 'rm -f "$config"' EXIT
cat > "$config" <<YAML
pools:
  - id: demo-llamacpp-cpu
    engine: llamacpp
    provisioning:
      mode: source
      source:
        repo: $FIXTURE_REPO_URL
        ref: $FIXTURE_REF
        build:
          cmake_flags: [-DCMAKE_BUILD_TYPE=Release, -DGGML_NATIVE=OFF]
      model:
        ref: file:$FIXTURE_MODEL
      ports: [$port]
      flags: [--parallel, "1", --n-gpu-layers, "0"]
YAML

echo "--- plan" >&2
"$orchctl" engine plan --config "$config"
echo "--- up (the first run builds llama.cpp from source: about 12 minutes on 2 cores)" >&2
"$orchctl" engine up --config "$config"
trap '"$orchctl" engine down --config "$config" >/dev/null 2>&1 || true; rm -f "$config"' EXIT
echo "--- completion" >&2
curl -sS "http://127.0.0.1:$port/completion" -H 'Content-Type: application/json' \
    -d '{"prompt": "hello", "n_predict": 8, "temperature": 0, "ignore_eos": true}' |
    python3 -c 'import json, sys; r = json.load(sys.stdin); print("tokens_predicted:", r["tokens_predicted"]); print("content:", repr(r["content"]))'
echo "--- status" >&2
"$orchctl" engine status --config "$config"
echo "--- down" >&2
"$orchctl" engine down --config "$config"
