#!/usr/bin/env bash
# bench.sh WORKDIR [ROUNDS] — compare a three-node cluster with one node on
# this machine, interleaved so that a noisy machine weighs on both alike.
#
# Each round starts a one-node network (start.sh WORKDIR/r<i>-one 1) and
# runs `parley bench` against it, stops it, then starts a three-node
# network (start.sh WORKDIR/r<i>-three 3) and runs the same bench against
# its primary and then spread over all three nodes (--nodes), and stops it.
# Every run has the same clients, duration and warmup. It prints one line
# per run and the ratios; each run's JSON report is kept in WORKDIR.
#
# Environment: PARLEY (the parley binary, default: parley on PATH),
# BENCH_ARGS (extra arguments for parley bench, default
# "--duration 10s --warmup 2s --clients 64"), CLUSTER_GOMAXPROCS (if set,
# the GOMAXPROCS of each node of the three-node network: three nodes on
# one small machine do better with 1 each, see docs/performance.md).
set -euo pipefail
work=${1:?usage: bench.sh WORKDIR [ROUNDS]}
rounds=${2:-3}
parley=${PARLEY:-parley}
args=${BENCH_ARGS:---duration 10s --warmup 2s --clients 64}
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$work"
work=$(cd "$work" && pwd)

# primary_profile DIR: a profile.json for DIR's primary, in DIR/primary.json.
primary_profile() {
	local d=$1 rid ep
	rid=$(curl -sf --max-time 2 --cacert "$d/service_cert.pem" "https://$(jq -r '.[0].endpoint' "$d/nodes.json")/node/network" | jq .primary_raft_id)
	ep=$(jq -r --argjson id "$rid" '.[] | select(.id == $id) | .endpoint' "$d/nodes.json")
	jq --arg ep "https://$ep" '.endpoint = $ep' "$d/profile.json" >"$d/primary.json"
}

# run NAME DIR [ARGS]: bench DIR's primary, print committed/s, keep the JSON.
run() {
	local name=$1 d=$2
	shift 2
	primary_profile "$d"
	# shellcheck disable=SC2086
	"$parley" bench --profile "$d/primary.json" $args --json "$@" >"$work/$name.json"
	jq -r --arg n "$name" '"\($n)\t\(.ledger.committed.perSec | floor)/s\tp50 \(.ledger.committed.p50Ms)ms\tp99 \(.ledger.committed.p99Ms)ms\terrors \(.ledger.errors)"' "$work/$name.json"
}

rate() { jq '.ledger.committed.perSec' "$work/$1.json"; }

for ((r = 1; r <= rounds; r++)); do
	one=$work/r$r-one three=$work/r$r-three
	PARLEY=$parley "$here/start.sh" "$one" 1 >/dev/null
	run "r$r-one" "$one"
	"$here/stop.sh" "$one"
	if [ -n "${CLUSTER_GOMAXPROCS:-}" ]; then
		GOMAXPROCS=$CLUSTER_GOMAXPROCS PARLEY=$parley "$here/start.sh" "$three" 3 >/dev/null
	else
		PARLEY=$parley "$here/start.sh" "$three" 3 >/dev/null
	fi
	run "r$r-three-primary" "$three"
	run "r$r-three-spread" "$three" --nodes "$three/nodes.json"
	"$here/stop.sh" "$three"
	echo "round $r: primary ÷ one = $(jq -n "$(rate "r$r-three-primary") / $(rate "r$r-one") * 1000 | round / 1000"), spread ÷ one = $(jq -n "$(rate "r$r-three-spread") / $(rate "r$r-one") * 1000 | round / 1000")"
done
