#!/bin/sh
# win32-deps.sh - cross-build static mingw-w64 libraries of mbedTLS and cmocka
# from Debian's source packages into build/win32-deps/{include,lib}, for the
# Win32 build that `make test-win32` runs under wine.
#
# Idempotent: when build/win32-deps/VERSIONS names the pinned versions and
# the libraries exist, it only prints the versions.  Otherwise it installs the
# tools it needs, adds a deb-src entry mirroring the machine's Debian deb
# entry, fetches the pinned source packages, unpacks them (Debian patches
# applied, so the mbedTLS configuration matches libmbedtls-dev) and builds.
#
# Needs root for apt (uses sudo when not root).  Pins can be overridden from
# the environment, e.g. MBEDTLS_DEB_VERSION=2.28.3-1+deb12u1.
set -eu

MBEDTLS_DEB_VERSION=${MBEDTLS_DEB_VERSION:-2.28.3-1}
CMOCKA_DEB_VERSION=${CMOCKA_DEB_VERSION:-1.1.5-2.1}
CROSS=${CROSS:-x86_64-w64-mingw32}
RECIPE=2 # bump when the build steps below change, to force a rebuild
PACKAGES="gcc-mingw-w64-x86-64 wine64 wine dpkg-dev"
SRC_ENTRY=/etc/apt/sources.list.d/p2pgraph-deb-src.sources

cd "$(dirname "$0")/.."
ROOT=$(pwd)
OUT=$ROOT/build/win32-deps
WORK=$ROOT/build/win32-deps-work
STAMP="mbedtls $MBEDTLS_DEB_VERSION, cmocka $CMOCKA_DEB_VERSION ($CROSS, recipe $RECIPE)"

if [ "$(id -u)" -eq 0 ]; then SUDO=; else SUDO=sudo; fi

log() { printf 'win32-deps: %s\n' "$*"; }

if [ -f "$OUT/VERSIONS" ] && [ "$(cat "$OUT/VERSIONS")" = "$STAMP" ] &&
   [ -f "$OUT/lib/libmbedtls.a" ] && [ -f "$OUT/lib/libmbedx509.a" ] &&
   [ -f "$OUT/lib/libmbedcrypto.a" ] && [ -f "$OUT/lib/libcmocka.a" ] &&
   [ -f "$OUT/include/cmocka.h" ] && [ -f "$OUT/include/mbedtls/ssl.h" ]; then
    log "already built: $STAMP"
    exit 0
fi

# --- tools -------------------------------------------------------------------
missing=
for p in $PACKAGES; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed'; then
        missing="$missing $p"
    fi
done
if [ -n "$missing" ]; then
    log "installing:$missing"
    $SUDO apt-get update
    # shellcheck disable=SC2086
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y --no-install-recommends $missing
fi

# --- deb-src entry -----------------------------------------------------------
# The same URIs/Suites/Components/Signed-By as each deb stanza of
# debian.sources (bookworm, bookworm-updates, bookworm-security).
if [ ! -f "$SRC_ENTRY" ]; then
    if [ -f /etc/apt/sources.list.d/debian.sources ]; then
        log "adding $SRC_ENTRY"
        awk 'BEGIN { RS = ""; ORS = "\n\n" }
             /(^|\n)Types:[ \t]*deb[ \t]*(\n|$)/ {
                 sub(/Types:[ \t]*deb[ \t]*\n/, "Types: deb-src\n"); print }' \
            /etc/apt/sources.list.d/debian.sources | $SUDO tee "$SRC_ENTRY" >/dev/null
    elif grep -qs '^deb ' /etc/apt/sources.list; then
        SRC_ENTRY=/etc/apt/sources.list.d/p2pgraph-deb-src.list
        log "adding $SRC_ENTRY"
        sed -n 's/^deb /deb-src /p' /etc/apt/sources.list | $SUDO tee "$SRC_ENTRY" >/dev/null
    else
        log "no Debian deb entry found to mirror as deb-src" >&2
        exit 1
    fi
fi
grep -q 'deb-src' "$SRC_ENTRY" || { log "$SRC_ENTRY has no deb-src entry" >&2; exit 1; }
$SUDO apt-get update

# --- fetch and unpack --------------------------------------------------------
rm -rf "$WORK"
mkdir -p "$WORK"
cd "$WORK"
if ! apt-get source --download-only "mbedtls=$MBEDTLS_DEB_VERSION" "cmocka=$CMOCKA_DEB_VERSION"; then
    log "pinned source versions not available; available ones:" >&2
    apt-cache showsrc mbedtls cmocka | grep -E '^(Package|Version):' >&2 || true
    log "set MBEDTLS_DEB_VERSION / CMOCKA_DEB_VERSION to one of them" >&2
    exit 1
fi
dpkg-source -x "mbedtls_${MBEDTLS_DEB_VERSION#*:}.dsc" mbedtls
dpkg-source -x "cmocka_${CMOCKA_DEB_VERSION#*:}.dsc" cmocka

# --- mbedTLS -----------------------------------------------------------------
# The options Debian's rules enable for libmbedtls-dev, so both builds offer
# the same features; less MBEDTLS_THREADING_C/_PTHREAD (no pthread here; the
# library is single-threaded).
log "building mbedTLS $MBEDTLS_DEB_VERSION"
for opt in MBEDTLS_DEPRECATED_WARNING MBEDTLS_HAVEGE_C MBEDTLS_MD2_C MBEDTLS_MD4_C \
           MBEDTLS_CMAC_C MBEDTLS_SSL_DTLS_SRTP; do
    sed -i "s|^//#define $opt\$|#define $opt|" mbedtls/include/mbedtls/config.h
    grep -q "^#define $opt\$" mbedtls/include/mbedtls/config.h ||
        { log "cannot enable $opt in mbedtls/include/mbedtls/config.h" >&2; exit 1; }
done
make -j2 -C mbedtls/library CC="$CROSS-gcc" AR="$CROSS-ar" WINDOWS=1 static >build-mbedtls.log 2>&1 ||
    { tail -n 40 build-mbedtls.log >&2; exit 1; }

# --- cmocka: one file ---------------------------------------------------------
# The HAVE_* macros that cmocka's ConfigureChecks.cmake finds for mingw-w64
# (no sigsetjmp, no strsignal; clock_gettime would need winpthread, so test
# durations are not measured).
log "building cmocka $CMOCKA_DEB_VERSION"
"$CROSS-gcc" -std=gnu99 -O2 -g -Icmocka/include \
    -DHAVE_INTTYPES_H -DHAVE_MALLOC_H -DHAVE_SIGNAL_H -DHAVE_STRINGS_H \
    -DHAVE_STRUCT_TIMESPEC -DHAVE_GCC_THREAD_LOCAL_STORAGE \
    -DHAVE_SNPRINTF -DHAVE_VSNPRINTF \
    -c cmocka/src/cmocka.c -o cmocka.o
"$CROSS-ar" rcs libcmocka.a cmocka.o

# --- install -------------------------------------------------------------------
rm -rf "$OUT"
mkdir -p "$OUT/include" "$OUT/lib"
cp -R mbedtls/include/mbedtls "$OUT/include/"
if [ -d mbedtls/include/psa ]; then cp -R mbedtls/include/psa "$OUT/include/"; fi
cp mbedtls/library/libmbedtls.a mbedtls/library/libmbedx509.a mbedtls/library/libmbedcrypto.a "$OUT/lib/"
cp cmocka/include/cmocka.h "$OUT/include/"
if [ -f cmocka/include/cmocka_pbc.h ]; then cp cmocka/include/cmocka_pbc.h "$OUT/include/"; fi
cp libcmocka.a "$OUT/lib/"
printf '%s\n' "$STAMP" >"$OUT/VERSIONS"
cd "$ROOT"
rm -rf "$WORK"
log "built: $STAMP"
