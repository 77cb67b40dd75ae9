#!/usr/bin/env bash
# failover.sh WORKDIR [RUNS] — measure write unavailability across a primary
# failover: for each run, start a three-node network (start.sh
# WORKDIR/f<i> 3), run `parley bench` with its clients spread over the three
# nodes (--nodes), SIGKILL the primary KILL_AFTER seconds (default 5) into
# the run, and report the longest time without a commit that the bench saw
# (the kill falls inside it), then stop the survivors. Default timeouts:
# raft tick 50 ms, election after 10–20 ticks without a heartbeat.
#
# Environment: PARLEY (the parley binary, default: parley on PATH),
# KILL_AFTER (seconds into the bench, default 5), BENCH_ARGS (default
# "--duration 10s --warmup 1s --clients 64").
set -euo pipefail
work=${1:?usage: failover.sh WORKDIR [RUNS]}
runs=${2:-5}
parley=${PARLEY:-parley}
kill_after=${KILL_AFTER:-5}
args=${BENCH_ARGS:---duration 10s --warmup 1s --clients 64}
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$work"
work=$(cd "$work" && pwd)

gaps=()
for ((r = 1; r <= runs; r++)); do
	d=$work/f$r
	PARLEY=$parley "$here/start.sh" "$d" 3 >/dev/null
	# shellcheck disable=SC2086
	"$parley" bench --profile "$d/profile.json" --nodes "$d/nodes.json" $args --json >"$d/bench.json" &
	bench=$!
	sleep "$kill_after"
	rid=$(curl -sf --max-time 2 --cacert "$d/service_cert.pem" "https://$(jq -r '.[1].endpoint' "$d/nodes.json")/node/network" | jq .primary_raft_id)
	pid=$(jq -r --argjson id "$rid" '.[] | select(.id == $id) | .pid' "$d/nodes.json")
	kill -KILL "$pid"
	killed=$(date +%s.%N)
	wait "$bench"
	# Who leads now, and since when the bench saw no commit.
	ep=$(jq -r --argjson id "$rid" '[.[] | select(.id != $id)][0].endpoint' "$d/nodes.json")
	now=$(curl -sf --max-time 2 --cacert "$d/service_cert.pem" "https://$ep/node/network" | jq .primary_raft_id)
	gap=$(jq '.ledger.maxCommitGapMs | floor' "$d/bench.json")
	gaps+=("$gap")
	echo "run $r: killed primary $rid (pid $pid) at $killed; new primary $now; longest time without a commit ${gap} ms (from $(jq '.ledger.maxCommitGapAtMs | floor' "$d/bench.json") ms into the window); committed $(jq '.ledger.committed.perSec | floor' "$d/bench.json")/s; errors $(jq .ledger.errors "$d/bench.json")"
	for p in $(jq -r --argjson id "$rid" '.[] | select(.id != $id) | .pid' "$d/nodes.json"); do kill -INT "$p" 2>/dev/null || true; done
	for p in $(jq -r --argjson id "$rid" '.[] | select(.id != $id) | .pid' "$d/nodes.json"); do
		while kill -0 "$p" 2>/dev/null; do sleep 0.1; done
	done
done
sorted=$(printf '%s\n' "${gaps[@]}" | sort -n)
echo "write unavailability over $runs runs: min $(head -1 <<<"$sorted") ms, median $(sed -n "$(((runs + 1) / 2))p" <<<"$sorted") ms, max $(tail -1 <<<"$sorted") ms"
