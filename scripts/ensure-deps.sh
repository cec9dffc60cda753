#!/usr/bin/env bash
# Installs the Debian packages the demo and the tests need, when they are missing:
# cmake (the build), ccache (fast rebuilds), curl (the demo's completion request).
# As root it runs apt-get directly, otherwise through `sudo -n`; if neither works it prints the
# exact command and stops.
set -euo pipefail
need=()
for pkg in cmake ccache curl; do
    command -v "$pkg" >/dev/null || need+=("$pkg")
done
[ ${#need[@]} -eq 0 ] && exit 0
command -v apt-get >/dev/null || {
    echo "error: missing ${need[*]}; install them with your package manager" >&2
    exit 1
}
if [ "$(id -u)" -eq 0 ]; then
    sudo=()
elif sudo -n true 2>/dev/null; then
    sudo=(sudo -n)
else
    echo "error: missing ${need[*]}; run: sudo apt-get install -y --no-install-recommends ${need[*]}" >&2
    exit 1
fi
echo "installing ${need[*]} with apt-get" >&2
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -qq
"${sudo[@]}" apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
