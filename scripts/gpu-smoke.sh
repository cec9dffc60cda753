#!/usr/bin/env bash
# Opt-in GPU check (CI has no GPU): on a host with an NVIDIA GPU and a CUDA toolkit, build
# llama.cpp from source with GGML_CUDA=ON through orchctl, bring it up with every layer on the
# GPU, decode, and check the log shows the layers on CUDA0. Also shows a warm prepare.
#
# Usage: scripts/gpu-smoke.sh ORCHCTL REPO_DIR_OR_BUNDLE MODEL [CUDA_ARCH]
# REPO may be a git repository or a git bundle of the fixture (scripts/fixtures.sh makes one).
set -euo pipefail
orchctl=$(realpath "$1"); source=$(realpath "$2"); model=$(realpath "$3"); arch=${4:-90}
work=${GPU_SMOKE_DIR:-$(mktemp -d)}
out=${GPU_SMOKE_OUT:-$work}
mkdir -p "$work" "$out"
# A host without git can be given a git binary in GPU_SMOKE_GIT (file:// clones need nothing else).
if ! command -v git >/dev/null && [ -n "${GPU_SMOKE_GIT:-}" ]; then
    mkdir -p "$work/git-exec"
    for name in git git-upload-pack git-receive-pack git-upload-archive; do
        ln -sf "$(realpath "$GPU_SMOKE_GIT")" "$work/git-exec/$name"
    done
    export PATH="$work/git-exec:$PATH" GIT_EXEC_PATH="$work/git-exec"
fi
echo "tools: $(command -v git) $(command -v cmake) $(command -v ninja) $(command -v nvcc || echo 'nvcc off PATH')"

if [ -f "$source" ]; then
    git clone --quiet --mirror "$source" "$work/llama.cpp.git"
    source="$work/llama.cpp.git"
fi
ref=$(git -C "$source" tag --list | head -n1)

env_block="{}"
if ! ldconfig -p | grep -q 'libcuda.so.1'; then
    # The driver's libraries are off the loader path on this host; the engine gets an explicit
    # environment (nothing is inherited), so say where they are.
    for dir in /usr/local/nvidia/lib64 /usr/lib/x86_64-linux-gnu; do
        [ -e "$dir/libcuda.so.1" ] && env_block="{LD_LIBRARY_PATH: \"$dir\"}" && break
    done
fi
port=18080
cat > "$work/gpu.yaml" <<YAML
pools:
  - id: gpu-smoke
    engine: llamacpp
    devices: [0]
    provisioning:
      mode: source
      source:
        repo: file://$source
        ref: $ref
        build:
          cmake_flags: [-DLLAMA_CUBLAS=ON, -DCMAKE_CUDA_ARCHITECTURES=$arch, -DGGML_NATIVE=OFF]
      model:
        ref: file:$model
      ports: [$port]
      env: $env_block
      flags: [-ngl, "99", --parallel, "1"]
YAML
export LLAMA_ORCH_CACHE_DIR="$work/cache" LLAMA_ORCH_OFFLINE=true
echo "--- plan"; "$orchctl" engine plan -c "$work/gpu.yaml"
echo "--- up (cold CUDA build)"
start=$(date +%s)
"$orchctl" engine up -c "$work/gpu.yaml" --json | tee "$out/up.json"
echo "cold up seconds: $(( $(date +%s) - start ))"
trap '"$orchctl" engine down -c "$work/gpu.yaml" || true' EXIT
python3 - "$port" > "$out/completion.json" <<'PY'
import json, sys, urllib.request
body = json.dumps({"prompt": "hello", "n_predict": 64, "temperature": 0, "ignore_eos": True}).encode()
request = urllib.request.Request(f"http://127.0.0.1:{sys.argv[1]}/completion", body, {"Content-Type": "application/json"})
print(urllib.request.urlopen(request, timeout=60).read().decode())
PY
python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); t=r["timings"]; print("tokens_predicted", r["tokens_predicted"], "decode tok/s", round(t["predicted_per_second"]))' "$out/completion.json"
python3 -c 'import json,sys,urllib.request; print("build_info", json.load(urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/props"))["build_info"])' "$port"
log=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["log_file"])' "$out/up.json")
cp "$log" "$out/server.log"
grep -E "offloaded [0-9]+/[0-9]+ layers to GPU|CUDA0" "$out/server.log" | head -5
grep -q "CUDA0" "$out/server.log" || { echo "FAIL: no CUDA0 in the server log" >&2; exit 1; }
"$orchctl" engine status -c "$work/gpu.yaml"
echo "--- warm prepare"
for i in 1 2 3; do
    s=$(date +%s%N); "$orchctl" -q engine prepare -c "$work/gpu.yaml" --json > "$out/prepare.json"; e=$(date +%s%N)
    echo "warm prepare (whole orchctl process): $(( (e - s) / 1000000 )) ms"
done
python3 -c 'import json,sys; p=json.load(open(sys.argv[1])); print("engine_version", p["engine_version"], "cache_hit", p["metadata"]["cache_hit"], "backend", p["metadata"]["backend"]); print("flags", p["metadata"]["build_flags"])' "$out/prepare.json"
cp "$work"/cache/llamacpp/builds-v1/*/metadata.json "$out/metadata.json"
echo "GPU smoke: OK"
