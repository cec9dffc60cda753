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

# The tree the tests build by default, and an older one (mid-2025: server under tools/,
# LLAMA_CURL on by default, the `version: N (commit)` output), both vendored by PyPI sdists of
# llama-cpp-python, which pin upstream ggml-org/llama.cpp commits.
LLAMA_CPP_PYTHON_VERSION=0.3.36
UPSTREAM_COMMIT=0c1e57098
FIXTURE_TAG=fixture-b0
OLDER_LLAMA_CPP_PYTHON_VERSION=0.3.14
OLDER_UPSTREAM_COMMIT=79e0b68c1
OLDER_FIXTURE_TAG=fixture-2025

dir=${1:-${ENGINE_PROVISIONER_FIXTURES:-$HOME/.cache/engine-provisioner/fixtures}}
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
here=$(cd "$(dirname "$0")" && pwd)
log() { printf 'fixtures: %s\n' "$*" >&2; }

# make_tree VERSION UPSTREAM_COMMIT REPO TAG: the llama.cpp tree vendored by
# llama-cpp-python==VERSION, committed as a local git repository at REPO and tagged TAG.
make_tree() {
    local version=$1 upstream=$2 repo=$3 tag=$4
    [ -f "$repo/.fixture-complete" ] && return 0
    local work="$repo.work"
    rm -rf "$repo" "$work"
    mkdir -p "$work"
    log "downloading llama-cpp-python==$version sdist (50-80 MB)"
    python3 -m pip download --quiet --no-deps --no-binary llama-cpp-python \
        "llama-cpp-python==$version" -d "$work/sdist"
    local archive="$work/sdist/llama_cpp_python-$version.tar.gz"
    local prefix="llama_cpp_python-$version/vendor/llama.cpp"
    # Only what llama-server needs (models/ and docs/ alone are over 100 MB), of the parts
    # this tree has.
    local members=() part
    local listing
    listing=$(tar -tzf "$archive" | awk -F/ -v p="$prefix" 'index($0, p "/") == 1 {print $4}' | sort -u)
    for part in CMakeLists.txt CMakePresets.json cmake ggml src include common vendor tools app scripts licenses LICENSE; do
        if grep -qx -- "$part" <<<"$listing"; then
            members+=("$prefix/$part")
        fi
    done
    log "extracting the llama.cpp tree of $version"
    mkdir -p "$work/extract"
    tar -xzf "$archive" -C "$work/extract" "${members[@]}"
    mv "$work/extract/$prefix" "$repo"
    rm -rf "$work"
    find "$repo" -name .git -maxdepth 1 -exec rm -rf {} +
    log "committing it as a local git repository"
    (
        export GIT_AUTHOR_NAME=fixture GIT_AUTHOR_EMAIL=fixture@localhost \
            GIT_COMMITTER_NAME=fixture GIT_COMMITTER_EMAIL=fixture@localhost \
            GIT_AUTHOR_DATE='2026-01-01T00:00:00Z' GIT_COMMITTER_DATE='2026-01-01T00:00:00Z'
        git -C "$repo" -c init.defaultBranch=master init --quiet
        git -C "$repo" add -A
        git -C "$repo" -c core.autocrlf=false commit --quiet --no-gpg-sign \
            -m "llama.cpp $upstream as vendored by llama-cpp-python $version"
        git -C "$repo" tag "$tag"
    )
    touch "$repo/.fixture-complete"
    printf '.fixture-complete\n' >> "$repo/.git/info/exclude"
}

repo="$dir/llama.cpp"
make_tree "$LLAMA_CPP_PYTHON_VERSION" "$UPSTREAM_COMMIT" "$repo" "$FIXTURE_TAG"
older="$dir/llama.cpp-$OLDER_LLAMA_CPP_PYTHON_VERSION"
make_tree "$OLDER_LLAMA_CPP_PYTHON_VERSION" "$OLDER_UPSTREAM_COMMIT" "$older" "$OLDER_FIXTURE_TAG"

venv="$dir/venv"
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import gguf, numpy, huggingface_hub' 2>/dev/null; then
    log "creating a Python venv with gguf, numpy and huggingface_hub"
    rm -rf "$venv"
    python3 -m venv "$venv"
    # huggingface_hub: the tests prove that the Python client reads the cache we stage.
    "$venv/bin/pip" install --quiet 'gguf==0.19.0' 'numpy<3' 'huggingface-hub==2.4.0'
fi

model="$dir/tiny.gguf"
if [ ! -s "$model" ]; then
    log "writing the tiny GGUF model"
    "$venv/bin/python" "$here/make_tiny_gguf.py" "$model.tmp"
    mv "$model.tmp" "$model"
fi

commit=$(git -C "$repo" rev-parse HEAD)
older_commit=$(git -C "$older" rev-parse HEAD)
cat <<EOF
FIXTURE_DIR=$dir
FIXTURE_REPO_URL=file://$repo
FIXTURE_REF=$FIXTURE_TAG
FIXTURE_COMMIT=$commit
FIXTURE_UPSTREAM_COMMIT=$UPSTREAM_COMMIT
FIXTURE_MODEL=$model
FIXTURE_OLDER_REPO_URL=file://$older
FIXTURE_OLDER_REF=$OLDER_FIXTURE_TAG
FIXTURE_OLDER_COMMIT=$older_commit
FIXTURE_OLDER_UPSTREAM_COMMIT=$OLDER_UPSTREAM_COMMIT
EOF
