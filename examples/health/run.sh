#!/usr/bin/env bash
# run.sh [--rows N] [--seed N] [--dir DIR] — the health clean room, end to
# end, with real processes, printing what happens at each step.
#
# Three hospitals pool statistics on their admissions (patients per
# diagnosis and age band, de-duplicated across hospitals, admissions, mean
# length of stay, deaths) without giving each other a single record. Each
# hospital encrypts its dataset on its own machine and requires at least 10
# of its own distinct patients behind every row of any result (min-entities);
# the runner suppresses the cells below. The result goes to the three
# hospitals.
#
# The script builds `parley` and `healthgen`, generates the data (--rows
# admissions per hospital, default 20000), starts a `parley dev` service in
# DIR (default: a new temporary directory, removed at the end unless --dir
# is given), and walks the flow with the `parley room` CLI. To use a service
# that is already running instead, set PARLEY_PROFILE to its profile.json:
# the script then leaves its attestation policy alone (it must accept
# virtual evidence) and names the room health_<unix time>.
#
# DEVELOPMENT ONLY: the runner presents `virtual` attestation evidence,
# signed by a software key. It is not a TEE and proves nothing about the
# code that runs; the script allows it in the policy of the service it starts.
#
# Needs: go, jq, curl.
set -euo pipefail

. "$(dirname "$0")/../lib.sh"
example_init 20000 "$@"

build_tools ./examples/health/cmd/healthgen

step "generate three hospitals' admissions ($rows per hospital, seed $seed)"
"$dir/bin/healthgen" -out "$data" -rows "$rows" -seed "$seed" | indent

start_service

step "each hospital makes its keys: a P-384 signing key (its identity) and an X25519 result key"
declare -A id
hospitals=(hospital1 hospital2 hospital3)
for p in "${hospitals[@]}"; do
	id[$p]=$("$parley" room keys new "$keys/$p" | jq -r .party)
	say "$p: party ${id[$p]}"
done
room=$(room_name health)

step "hospital1 creates room '$room'; it invites hospital2 and hospital3, who join"
as hospital1 create $room --name hospital1 | jq -c '{name}' | indent
for p in hospital2 hospital3; do
	as hospital1 invite $room $p --public-key "$keys/$p.party.pub.pem" >/dev/null
	as $p join $room | jq -c '{name, state, id}' | indent
done

step "each hospital encrypts its admissions on its own machine, uploads the ciphertext and sets its rules"
say "rules (every hospital): $(cat "$data/rules.json")"
for h in "${hospitals[@]}"; do
	as $h dataset upload $room $h "$data/$h.csv" --schema "$data/schema.json" --rules "$data/rules.json" --blob-dir "$blobs" |
		jq -c '{name, owner, digest, size}' | indent
done

measurement=$(sha256sum "$parley" | cut -c1-64)
recipients=()
for h in "${hospitals[@]}"; do
	recipients+=(--recipient "${id[$h]}=$keys/$h.hpke.pub.pem")
done

step "queries that break a rule are refused with the rule named"
for q in "SELECT postcode, count(*) AS n FROM hospital1 GROUP BY 1" \
	"SELECT diagnosis, age_band, sex FROM hospital2" \
	"SELECT count(*) AS n FROM hospital1 a JOIN hospital2 b ON a.patient_ref = b.patient_ref"; do
	say "$q"
	if out=$(as hospital2 contract propose $room --name peek --sql "$q" --dataset hospital1 --dataset hospital2 \
		"${recipients[@]}" --measurement "$measurement" 2>&1); then
		echo "run.sh: the rule-breaking query was accepted: $out" >&2
		exit 1
	fi
	say "  -> $(sed "s/^ *//" <<<"$out")"
done

step "hospital1 proposes the contract '$data/cohort.sql': reads all three hospitals, result to all three"
cid=$(as hospital1 contract propose $room --name cohort-statistics --sql-file "$data/cohort.sql" \
	--dataset hospital1 --dataset hospital2 --dataset hospital3 \
	"${recipients[@]}" --measurement "$measurement" | jq -r .id)
say "contract $cid"

step "every hospital approves"
for h in "${hospitals[@]}"; do
	as $h approve $room "$cid" | jq -c '{state}' | indent
done

step "the runner attests, gets the data keys, decrypts in memory, runs the contract, suppresses small cells, seals the result"
t=$(now)
job=$("$parley" room run $room "$cid" --platform virtual --measurement "$measurement" --blob-dir "$blobs" --work-dir "$work" 2>"$dir/runner.log")
say "($(since "$t"); runner log $dir/runner.log)"
jq -c . <<<"$job" | indent
say "$(jq -r .rows <<<"$job") cells released, $(jq -r .suppressed <<<"$job") suppressed (fewer than 10 of some hospital's patients)"
jobid=$(jq -r .id <<<"$job")

step "each hospital fetches and opens the result"
for h in "${hospitals[@]}"; do
	as $h result fetch $room "$jobid" --hpke-key "$keys/$h.hpke.pem" --blob-dir "$blobs" >"$results/$h.csv"
done
column -s, -t <"$results/hospital1.csv" | indent
for h in "${hospitals[@]}"; do
	if ! cmp -s "$results/$h.csv" "$data/expected.csv"; then
		say "$h's result differs from the plain computation over the data:"
		diff "$data/expected.csv" "$results/$h.csv" | indent
		exit 1
	fi
done
say "= for all three hospitals, the same as a plain computation over the pooled data"

step "parley room audit: every step of the room, each with a receipt that verifies"
"$parley" room audit $room | indent

printf '\nDone.'
if [ "$keep" = 1 ]; then
	printf ' Everything is in %s.' "$dir"
fi
printf '\n'
