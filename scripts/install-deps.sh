#!/bin/sh
# Installs what building and testing p2pgraph needs on Debian/Ubuntu, if it
# is missing: a C compiler, make, pkg-config, mbedTLS and cmocka headers,
# and the openssl command (the TLS interop test).
# Uses sudo when not root.  Does nothing when everything is there.
set -e
need=""
have_pkg() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }
for p in gcc make pkg-config libmbedtls-dev libcmocka-dev openssl "$@"; do
    have_pkg "$p" || need="$need $p"
done
[ -z "$need" ] && exit 0
if ! command -v apt-get >/dev/null 2>&1; then
    echo "install-deps: missing:$need (no apt-get here: install them by hand)" >&2
    exit 1
fi
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO=sudo
echo "install-deps: installing$need"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $need >/dev/null
