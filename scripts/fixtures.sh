#!/usr/bin/env bash
# Prepare the offline fixtures the end-to-end tests and the demo use:
#   - a local git repository holding a real llama.cpp source tree (taken from the
#     PyPI sdist of llama-cpp-python, which vendors upstream llama.cpp), cloned by
#     the provisioner through a file:// URL exactly as it would clone GitHub;
#   - a tiny random-weight GGUF model written with the PyPI `gguf` package.
#
# Everything lands in one directory (default ~/.cache/engine-provisioner/fixtures,
# override with ENGINE_PROVISIONER_FIXTURES or the first argument) and is reused
# on the next run. The commit is made with fixed author, committer and dates, so
# its SHA is the same on every machine and the provisioner's build cache stays warm.
# The script prints shell assignments describing the fixtures on stdout.
set -euo pipefail

LLAMA_CPP_PYTHON_VERSION=0.3.36
# Upstream ggml-org/llama.cpp commit vendored by that sdist.
UPSTREAM_COMMIT=0c1e57098
FIXTURE_TAG=fixture-b0

dir=${1:-${ENGINE_PROVISIONER_FIXTURES:-$HOME/.cache/engine-provisioner/fixtures}}
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
here=$(cd "$(dirname "$0")" && pwd)
log() { printf 'fixtures: %s\n' "$*" >&2; }

repo="$dir/llama.cpp"
if [ ! -f "$repo/.fixture-complete" ]; then
    rm -rf "$repo" "$dir/sdist" "$dir/extract"
    log "downloading llama-cpp-python==$LLAMA_CPP_PYTHON_VERSION sdist (about 77 MB)"
    python3 -m pip download --quiet --no-deps --no-binary llama-cpp-python \
        "llama-cpp-python==$LLAMA_CPP_PYTHON_VERSION" -d "$dir/sdist"
    mkdir -p "$dir/extract"
    prefix="llama_cpp_python-$LLAMA_CPP_PYTHON_VERSION/vendor/llama.cpp"
    # Only what llama-server needs; models/ and docs/ alone are over 100 MB.
    members=()
    for part in CMakeLists.txt CMakePresets.json cmake ggml src include common vendor tools app scripts licenses LICENSE; do
        members+=("$prefix/$part")
    done
    log "extracting the llama.cpp tree"
    tar -xzf "$dir/sdist/llama_cpp_python-$LLAMA_CPP_PYTHON_VERSION.tar.gz" -C "$dir/extract" "${members[@]}"
    mv "$dir/extract/$prefix" "$repo"
    rm -rf "$dir/extract" "$dir/sdist"
    find "$repo" -name .git -maxdepth 1 -exec rm -rf {} +
    log "committing it as a local git repository"
    export GIT_AUTHOR_NAME=fixture GIT_AUTHOR_EMAIL=fixture@localhost \
        GIT_COMMITTER_NAME=fixture GIT_COMMITTER_EMAIL=fixture@localhost \
        GIT_AUTHOR_DATE='2026-01-01T00:00:00Z' GIT_COMMITTER_DATE='2026-01-01T00:00:00Z'
    git -C "$repo" -c init.defaultBranch=master init --quiet
    git -C "$repo" add -A
    git -C "$repo" -c core.autocrlf=false commit --quiet --no-gpg-sign \
        -m "llama.cpp $UPSTREAM_COMMIT as vendored by llama-cpp-python $LLAMA_CPP_PYTHON_VERSION"
    git -C "$repo" tag "$FIXTURE_TAG"
    touch "$repo/.fixture-complete"
    printf '.fixture-complete\n' >> "$repo/.git/info/exclude"
fi

venv="$dir/venv"
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import gguf, numpy' 2>/dev/null; then
    log "creating a Python venv with gguf and numpy"
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet 'gguf==0.19.0' 'numpy<3'
fi

model="$dir/tiny.gguf"
if [ ! -s "$model" ]; then
    log "writing the tiny GGUF model"
    "$venv/bin/python" "$here/make_tiny_gguf.py" "$model.tmp"
    mv "$model.tmp" "$model"
fi

commit=$(git -C "$repo" rev-parse HEAD)
cat <<EOF
FIXTURE_DIR=$dir
FIXTURE_REPO_URL=file://$repo
FIXTURE_REF=$FIXTURE_TAG
FIXTURE_COMMIT=$commit
FIXTURE_UPSTREAM_COMMIT=$UPSTREAM_COMMIT
FIXTURE_MODEL=$model
EOF
