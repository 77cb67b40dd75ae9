#!/usr/bin/env bash
# stop.sh DIR — stop the nodes start.sh started (SIGINT, then wait).
set -euo pipefail
dir=${1:?usage: stop.sh DIR}
for pid in $(jq -r '.[].pid' "$dir/nodes.json"); do
	kill -INT "$pid" 2>/dev/null || true
done
for pid in $(jq -r '.[].pid' "$dir/nodes.json"); do
	while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
done
