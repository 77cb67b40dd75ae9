#!/usr/bin/env bash
# start.sh DIR [N] — start a static development cluster of N (default 3)
# parley nodes on free 127.0.0.1 ports, with their data under DIR/node<i>/.
#
# DEVELOPMENT BOOTSTRAP ONLY: `parley node init-cluster` writes ONE service
# key and ledger secret, sealed, into EVERY node directory. No TEE evidence
# is checked; this is not the attested join protocol (not built yet).
#
# It writes DIR/service_cert.pem, DIR/user0_cert.pem, DIR/user0_privk.pem
# and DIR/nodes.json ([{"id","endpoint","pid","dir","config"}]), and returns
# once every node names the same primary and the service is open. Each
# node logs to DIR/node<i>/node.log. Restart a node on its data with
#   parley node --config DIR/node<i>/config.json
# Stop the cluster with examples/cluster/stop.sh DIR.
#
# Environment: PARLEY (the parley binary, default: parley on PATH).
set -euo pipefail

dir=${1:?usage: start.sh DIR [N]}
n=${2:-3}
parley=${PARLEY:-parley}
command -v "$parley" >/dev/null || { echo "start.sh: $parley not found (set PARLEY)" >&2; exit 2; }
command -v jq >/dev/null || { echo "start.sh: jq is required" >&2; exit 2; }
command -v curl >/dev/null || { echo "start.sh: curl is required" >&2; exit 2; }

if [ ! -e "$dir/cluster.json" ]; then
	"$parley" node init-cluster --dir "$dir" --nodes "$n" >/dev/null
fi
dir=$(cd "$dir" && pwd)

nodes='[]'
count=$(jq length "$dir/cluster.json")
for ((i = 0; i < count; i++)); do
	node=$(jq ".[$i]" "$dir/cluster.json")
	ndir=$(jq -r .dir <<<"$node")
	config=$(jq -r .config <<<"$node")
	"$parley" node --config "$config" >>"$ndir/node.log" 2>&1 &
	pid=$!
	nodes=$(jq --argjson n "$node" --argjson pid "$pid" '. + [$n + {pid: $pid}]' <<<"$nodes")
done
jq . <<<"$nodes" >"$dir/nodes.json"

# Wait until every node names the same primary and the service is open.
for ((try = 0; try < 300; try++)); do
	primaries=$(for ep in $(jq -r '.[].endpoint' "$dir/nodes.json"); do
		curl -sf --max-time 2 --cacert "$dir/service_cert.pem" "https://$ep/node/network" |
			jq -r 'select(.service_status == "Open") | .primary_id // empty' || true
	done | sort | uniq -c)
	agreed=$(awk 'NF == 2 {print $1}' <<<"$primaries")
	if [ "$(wc -l <<<"$primaries")" -eq 1 ] && [ "${agreed:-0}" -eq "$count" ]; then
		echo "cluster of $count nodes open; primary $(awk '{print $2}' <<<"$primaries")"
		echo "nodes: $dir/nodes.json"
		exit 0
	fi
	sleep 0.1
done
echo "start.sh: no agreed primary after 30s; see $dir/node*/node.log" >&2
exit 1
