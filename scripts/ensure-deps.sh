#!/usr/bin/env bash
# Installs the Debian packages the demo and the tests need, when they are missing:
# cmake and ccache (source builds), curl (the demo), podman with runc and catatonit (container
# mode), docker-registry and apache2-utils (a loopback OCI registry with htpasswd auth),
# busybox-static (small test images), dpkg-dev (a local apt repository), pacman-package-manager
# and libarchive-tools (pacman into an alternative root), sudo (the package tests run installs
# as users with and without passwordless sudo), strace (the kill trials slow fsync down to widen
# the window between spawning an engine and recording it).
# As root it runs apt-get directly, otherwise through `sudo -n`; if neither works it prints the
# exact command and stops.
set -euo pipefail
need=()
check() { # check COMMAND-OR-PATH PACKAGE
    if [ "${1#/}" != "$1" ]; then [ -e "$1" ] && return; else command -v "$1" >/dev/null && return; fi
    need+=("$2")
}
check cmake cmake
check ccache ccache
check curl curl
check podman podman
check runc runc
check /usr/libexec/podman/catatonit catatonit
check docker-registry docker-registry
check htpasswd apache2-utils
check dpkg-scanpackages dpkg-dev
check pacman pacman-package-manager
check bsdtar libarchive-tools
check sudo sudo
check strace strace
dpkg-query -W -f='${Status}' busybox-static 2>/dev/null | grep -q "ok installed" || need+=(busybox-static)
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
