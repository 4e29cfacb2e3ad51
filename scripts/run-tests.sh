#!/bin/sh
# Runs cmocka test programs, prints each one's output, and ends with one
# line "tests: N passed, N failed" counting individual tests.  Exit status 1
# if any test failed or any program crashed.
pass=0; fail=0; status=0
for t in "$@"; do
    out=$(mktemp)
    "$t" >"$out" 2>&1; rc=$?
    cat "$out"
    p=$(sed -n 's/^\[  PASSED  \] \([0-9][0-9]*\) test.*/\1/p' "$out" | tail -1)
    f=$(sed -n 's/^\[  FAILED  \] \([0-9][0-9]*\) test.*/\1/p' "$out" | tail -1)
    rm -f "$out"
    pass=$((pass + ${p:-0})); fail=$((fail + ${f:-0}))
    if [ "$rc" -ne 0 ]; then
        status=1
        [ -z "$f" ] && { echo "!! $t exited with status $rc"; fail=$((fail + 1)); }
    fi
done
echo "tests: $pass passed, $fail failed"
exit $status
