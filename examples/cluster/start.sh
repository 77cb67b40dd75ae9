#!/usr/bin/env bash
# start.sh DIR [N] — start a development network of N (default 3) parley
# nodes on free 127.0.0.1 ports, with their data under DIR/node<i>/.
#
# node0 starts a new service with auto-trust on (network.autoTrustNodes);
# the other nodes JOIN it through the attested join: each makes its own node
# key, presents virtual TEE evidence binding it (DEVELOPMENT ONLY: virtual
# evidence proves nothing), is admitted because its measurement (the parley
# binary's SHA-256) is the one node0 allowed, is trusted automatically, and
# only then receives its endorsed certificate and the service's secrets,
# encrypted to its key. No key or secret is copied between directories.
#
# It writes DIR/service_cert.pem, DIR/user0_cert.pem, DIR/user0_privk.pem
# (and member0's files) and DIR/profile.json as parley dev does, and DIR/nodes.json
# ([{"id","endpoint","pid","dir","config"}], id = raft id), and returns once
# every node is Trusted, a voter, and names the same primary. Each node logs
# to DIR/node<i>/node.log. Restart a node on its data with
#   parley node --config DIR/node<i>/config.json
# (a node that joined never joins again). Run start.sh DIR again to restart
# every node of an existing DIR. Stop with examples/cluster/stop.sh DIR.
#
# Environment: PARLEY (the parley binary, default: parley on PATH).
set -euo pipefail

dir=${1:?usage: start.sh DIR [N]}
n=${2:-3}
parley=${PARLEY:-parley}
command -v "$parley" >/dev/null || { echo "start.sh: $parley not found (set PARLEY)" >&2; exit 2; }
command -v jq >/dev/null || { echo "start.sh: jq is required" >&2; exit 2; }
command -v curl >/dev/null || { echo "start.sh: curl is required" >&2; exit 2; }

if [ ! -e "$dir/network.json" ]; then
	"$parley" node init-network --dir "$dir" --nodes "$n" --auto-trust >/dev/null
fi
dir=$(cd "$dir" && pwd)
count=$(jq length "$dir/network.json")
ep0=$(jq -r '.[0].endpoint' "$dir/network.json")

# wait_for TRIES CMD...: run CMD every 0.1 s until it succeeds.
wait_for() {
	local tries=$1
	shift
	for ((try = 0; try < tries; try++)); do
		if "$@" >/dev/null 2>&1; then return 0; fi
		sleep 0.1
	done
	return 1
}

start_node() { # start_node I: start node I in the background, print its pid
	local ndir config
	ndir=$(jq -r ".[$1].dir" "$dir/network.json")
	config=$(jq -r ".[$1].config" "$dir/network.json")
	"$parley" node --config "$config" >>"$ndir/node.log" 2>&1 &
	echo $!
}

pids=()
pids+=("$(start_node 0)")
# node0 is up once it answers with its service open.
node0_open() {
	curl -sf --max-time 2 -k "https://$ep0/node/network" | jq -e '.service_status == "Open"'
}
wait_for 300 test -e "$dir/node0/user0_cert.pem" && wait_for 300 node0_open || {
	echo "start.sh: node0 did not start; see $dir/node0/node.log" >&2
	exit 1
}
for f in service_cert.pem user0_cert.pem user0_privk.pem member0_cert.pem member0_privk.pem member0_enc_privk.pem member0_enc_pubk.pem; do
	if [ -e "$dir/node0/$f" ] && [ ! -e "$dir/$f" ]; then cp "$dir/node0/$f" "$dir/$f"; fi
done
# profile.json for the CLI (parley gov, parley ledger …), as parley dev
# writes it; member0's files are next to it.
jq -n --arg ep "https://$ep0" --arg d "$dir" \
	'{endpoint: $ep, cacert: ($d + "/service_cert.pem"), cert: ($d + "/user0_cert.pem"), key: ($d + "/user0_privk.pem")}' >"$dir/profile.json"
for ((i = 1; i < count; i++)); do
	pids+=("$(start_node "$i")")
done

# Wait until node0 lists every node Trusted and a voter, and every node
# names the same primary.
all_in() {
	curl -sf --max-time 2 --cacert "$dir/service_cert.pem" "https://$ep0/node/network/nodes" |
		jq -e --argjson n "$count" '[.nodes[] | select(.status == "Trusted" and .in_raft == "voter")] | length == $n'
}
agreed() {
	local primaries
	primaries=$(for ep in $(jq -r '.[].endpoint' "$dir/network.json"); do
		curl -sf --max-time 2 --cacert "$dir/service_cert.pem" "https://$ep/node/network" |
			jq -r 'select(.service_status == "Open") | .primary_id // empty' || true
	done | sort | uniq -c)
	[ "$(wc -l <<<"$primaries")" -eq 1 ] && [ "$(awk '{print $1}' <<<"$primaries")" -eq "$count" ]
}
if ! wait_for 600 all_in || ! wait_for 300 agreed; then
	echo "start.sh: not every node joined within 90 s; see $dir/node*/node.log" >&2
	exit 1
fi

# nodes.json, with each node's raft id as it reports it.
nodes='[]'
for ((i = 0; i < count; i++)); do
	node=$(jq ".[$i]" "$dir/network.json")
	ep=$(jq -r .endpoint <<<"$node")
	rid=$(curl -sf --max-time 2 --cacert "$dir/service_cert.pem" "https://$ep/node/state" | jq .raft_id)
	nodes=$(jq --argjson n "$node" --argjson pid "${pids[$i]}" --argjson id "$rid" '. + [$n + {id: $id, pid: $pid}]' <<<"$nodes")
done
jq . <<<"$nodes" >"$dir/nodes.json"
echo "network of $count nodes open, every node Trusted and a voter"
echo "nodes: $dir/nodes.json"
