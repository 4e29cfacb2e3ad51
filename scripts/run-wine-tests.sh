#!/bin/sh
# run-wine-tests.sh EXE... - run Windows test programs under wine and report.
#
# Each program's output goes to a file beside it (X.exe -> X.log), which is
# then printed: piping wine's output while a persistent wineserver runs can
# hang.  `wineserver -p` must come before any other wine command, so it is
# started first, then wineboot (the first run creates ~/.wine, ~700 MB).
# Ends with "win32 tests: N passed, N failed" counting cmocka's individual
# tests (a program that exits non-zero without a FAILED line counts as one
# failure).  Exit status: 0 when every program exited 0, 1 otherwise.
# WINE_TEST_TIMEOUT: seconds allowed per program (default 600).
set -u

if [ $# -eq 0 ]; then
    echo "run-wine-tests: no test programs given" >&2
    exit 2
fi
timeout_s=${WINE_TEST_TIMEOUT:-600}
export WINEDEBUG=-all

wineserver -p >/dev/null 2>&1
wineboot >/dev/null 2>&1

failed=
pass=0
fail=0
for exe in "$@"; do
    log=${exe%.exe}.log
    name=$(basename "$exe" .exe)
    echo "=== win32: $name"
    rm -f "$log"
    if [ -f "$exe" ]; then
        timeout -k 10 "$timeout_s" wine "$exe" >"$log" 2>&1
        rc=$?
        cat "$log"
    else
        echo "missing: $exe"
        rc=127
    fi
    p=$(sed -n 's/^\[  PASSED  \] \([0-9][0-9]*\) test.*/\1/p' "$log" 2>/dev/null | tail -n 1)
    f=$(sed -n 's/^\[  FAILED  \] \([0-9][0-9]*\) test.*/\1/p' "$log" 2>/dev/null | tail -n 1)
    pass=$((pass + ${p:-0}))
    fail=$((fail + ${f:-0}))
    if [ "$rc" -ne 0 ]; then
        echo "=== win32: $name FAILED (exit status $rc)"
        failed="$failed $name"
        [ -n "$f" ] || fail=$((fail + 1))
    fi
done

wineserver -k >/dev/null 2>&1

[ -z "$failed" ] || echo "win32: programs that failed:$failed"
echo "win32 tests: $pass passed, $fail failed"
[ -z "$failed" ]
