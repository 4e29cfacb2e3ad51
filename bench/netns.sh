#!/bin/sh
# bench/netns.sh - a multi-host run on one machine: M network namespaces on
# one bridge, each with its own address (10.77.0.<i+1>) and one
# bench_multihost process holding K nodes; namespace 0 holds the seed.
# Every process must see all M*K nodes and M*K records (one per node).
#
#   sh bench/netns.sh [M] [K] [--fast]        (root; default M=4, K=25)
#
# Prints each host's join and completion times.  Needs root and iproute2
# (ip netns, veth, bridge); namespaces and links are removed on exit.
set -eu
M=${1:-4}
K=${2:-25}
FAST=${3:-}
BIN=${BIN:-build/bench_multihost}
PFX=pgns$$
BR=pgbr$$
STOP=$(mktemp -u /tmp/pgns-stop.XXXXXX)
OUT=$(mktemp -d /tmp/pgns-out.XXXXXX)

if [ "$(id -u)" != 0 ]; then echo "netns.sh: needs root (ip netns)"; exit 2; fi
[ -x "$BIN" ] || { echo "netns.sh: build $BIN first (make build/bench_multihost)"; exit 2; }

cleanup() {
    touch "$STOP" 2>/dev/null || true
    sleep 1
    i=0
    while [ $i -lt "$M" ]; do
        ip netns del "$PFX$i" 2>/dev/null || true
        ip link del "v$PFX$i" 2>/dev/null || true
        i=$((i + 1))
    done
    ip link del "$BR" 2>/dev/null || true
    rm -rf "$STOP" "$OUT"
}
trap cleanup EXIT INT TERM

ip link add "$BR" type bridge
ip link set "$BR" up
i=0
while [ $i -lt "$M" ]; do
    ns=$PFX$i
    ip netns add "$ns"
    ip link add "v$ns" type veth peer name eth0 netns "$ns"
    ip link set "v$ns" master "$BR" up
    ip -n "$ns" addr add "10.77.0.$((i + 1))/24" dev eth0
    ip -n "$ns" link set eth0 up
    ip -n "$ns" link set lo up
    i=$((i + 1))
done

N=$((M * K))
echo "multi-host run: $M namespaces x $K nodes = $N nodes ${FAST:+(fast profile)}"
ip netns exec "${PFX}0" "$BIN" --addr 10.77.0.1 --create 47100 --nodes "$K" --expect "$N" $FAST \
    --stop "$STOP" --name ns0 --db "build/tmp-netns0" --timeout 120 >"$OUT/0" 2>&1 &
sleep 0.5
i=1
while [ $i -lt "$M" ]; do
    ip netns exec "$PFX$i" "$BIN" --addr "10.77.0.$((i + 1))" --seed 10.77.0.1:47100 --nodes "$K" --expect "$N" $FAST \
        --stop "$STOP" --name "ns$i" --db "build/tmp-netns$i" --timeout 120 >"$OUT/$i" 2>&1 &
    i=$((i + 1))
done
# wait until every host printed "done" (or one failed), then release them all
rc=0
while :; do
    d=$(cat "$OUT"/* | grep -c ' done ' || true)
    t=$(cat "$OUT"/* | grep -c 'timeout\|failed' || true)
    [ "$d" -ge "$M" ] && break
    [ "$t" -gt 0 ] && { rc=1; break; }
    sleep 0.2
done
touch "$STOP"
wait || rc=1
cat "$OUT"/*
exit $rc
