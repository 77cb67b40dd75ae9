#!/usr/bin/env bash
# run.sh [--rows N] [--seed N] [--dir DIR] — the anti-money-laundering clean
# room, end to end, with real processes, printing what happens at each step.
#
# Three banks each hold their own transactions; a regulator wants the
# customers who launder money across them (structuring below the cash
# reporting threshold, and round trips through the other two banks). No
# bank shows another bank, or the regulator, its data: each bank encrypts
# its dataset on its own machine, sets analysis rules on it, and approves
# the contracts (SQL) that may read it; an attested runner decrypts the
# datasets in memory only, runs the contracts, and seals the results to the
# regulator alone; every step is a ledger transaction with a receipt.
#
# The script builds `parley` and `amlgen`, generates the data (--rows rows
# per bank, default 30000; --rows 1000000 for a million), starts a `parley
# dev` service in DIR (default: a new temporary directory, removed at the
# end unless --dir is given), and walks the flow with the `parley room` CLI.
# To use a service that is already running instead, set PARLEY_PROFILE to
# its profile.json: the script then leaves its attestation policy alone (it
# must accept virtual evidence) and names the room aml_<unix time>.
#
# DEVELOPMENT ONLY: the runner presents `virtual` attestation evidence,
# signed by a software key. It is not a TEE and proves nothing about the
# code that runs; the script allows it in the policy of the service it starts.
#
# Needs: go, jq, curl.
set -euo pipefail

. "$(dirname "$0")/../lib.sh"
example_init 30000 "$@"

build_tools ./examples/aml/cmd/amlgen

step "generate three banks' transactions ($rows rows per bank, seed $seed)"
"$dir/bin/amlgen" -out "$data" -rows "$rows" -seed "$seed" | indent
say "planted (what the contracts must find, and nothing else):"
for c in structuring round-trips; do
	say "  $c: $(($(wc -l <"$data/expected-$c.csv") - 1)) rows"
done

start_service

step "each party makes its keys: a P-384 signing key (its identity) and an X25519 result key"
declare -A id
for p in bank1 bank2 bank3 regulator; do
	id[$p]=$("$parley" room keys new "$keys/$p" | jq -r .party)
	say "$p: party ${id[$p]}"
done
room=$(room_name aml)

step "bank1 creates room '$room'; it invites bank2, bank3 and the regulator, who join"
as bank1 create $room --name bank1 | jq -c . | indent
for p in bank2 bank3 regulator; do
	as bank1 invite $room $p --public-key "$keys/$p.party.pub.pem" >/dev/null
	as $p join $room | jq -c '{name, state, id}' | indent
done

step "each bank encrypts its transactions on its own machine, uploads the ciphertext and sets its rules"
say "rules (every bank): $(cat "$data/rules.json")"
for b in bank1 bank2 bank3; do
	t=$(now)
	as $b dataset upload $room $b "$data/$b.csv" --schema "$data/schema.json" --rules "$data/rules.json" --blob-dir "$blobs" |
		jq -c '{name, owner, digest, size}' | indent
	say "($(since "$t"))"
done
say "the blob store holds ciphertext only:"
find "$blobs" -type f | sed "s|$blobs/||" | indent

measurement=$(sha256sum "$parley" | cut -c1-64)

step "bank2 tries to propose a query that lists customers' names: refused with the rule named"
if out=$(as bank2 contract propose $room --name peek --sql "SELECT holder_name, count(*) AS n FROM bank1 GROUP BY 1" \
	--dataset bank1 --recipient "${id[bank2]}=$keys/bank2.hpke.pub.pem" --measurement "$measurement" 2>&1); then
	echo "run.sh: the rule-breaking query was accepted: $out" >&2
	exit 1
fi
say "$(sed "s/^ *//" <<<"$out")"

first=1
for contract in structuring round-trips; do
	sqlfile=$data/${contract//-/_}.sql
	step "bank1 proposes contract '$contract' ($sqlfile): reads all three banks, result to the regulator only, runner measurement ${measurement:0:16}…"
	cid=$(as bank1 contract propose $room --name "$contract" --sql-file "$sqlfile" \
		--dataset bank1 --dataset bank2 --dataset bank3 \
		--recipient "${id[regulator]}=$keys/regulator.hpke.pub.pem" --measurement "$measurement" | jq -r .id)
	say "contract $cid"

	step "bank1 and bank2 approve '$contract'"
	for b in bank1 bank2; do
		as $b approve $room "$cid" | jq -c '{state, approvals}' | indent
	done
	if [ $first = 1 ]; then
		step "a runner starts before bank3 approved: no data key is released"
		if out=$("$parley" room run $room "$cid" --platform virtual --measurement "$measurement" --blob-dir "$blobs" --work-dir "$work" 2>&1); then
			echo "run.sh: the runner ran an unapproved contract" >&2
			exit 1
		fi
		echo "$out" | tail -n 2 | indent
	fi
	step "bank3 approves '$contract'"
	as bank3 approve $room "$cid" | jq -c '{state, approvals}' | indent

	if [ $first = 1 ]; then
		step "a runner whose measurement the contract does not allow: no data key"
		if out=$("$parley" room run $room "$cid" --platform virtual --measurement "$(printf 'f%.0s' {1..64})" --blob-dir "$blobs" --work-dir "$work" 2>&1); then
			echo "run.sh: a runner with another measurement got the keys" >&2
			exit 1
		fi
		echo "$out" | tail -n 2 | indent
	fi

	step "the runner attests, gets the data keys, decrypts in memory, runs '$contract', seals the result to the regulator"
	t=$(now)
	job=$("$parley" room run $room "$cid" --platform virtual --measurement "$measurement" --blob-dir "$blobs" --work-dir "$work" 2>"$dir/runner-$contract.log")
	say "($(since "$t"); runner log $dir/runner-$contract.log)"
	jq -c . <<<"$job" | indent
	jobid=$(jq -r .id <<<"$job")

	step "the regulator fetches and opens the result"
	as regulator result fetch $room "$jobid" --hpke-key "$keys/regulator.hpke.pem" --blob-dir "$blobs" >"$results/$contract.csv"
	column -s, -t <"$results/$contract.csv" | indent
	if cmp -s "$results/$contract.csv" "$data/expected-$contract.csv"; then
		say "= exactly the planted $contract patterns, nothing else"
	else
		say "!= the planted patterns:"
		diff "$data/expected-$contract.csv" "$results/$contract.csv" | indent
		exit 1
	fi
	if [ $first = 1 ]; then
		step "bank1 tries to open the result with its own key: it is not a recipient"
		if out=$(as bank1 result fetch $room "$jobid" --hpke-key "$keys/bank1.hpke.pem" --blob-dir "$blobs" 2>&1); then
			echo "run.sh: bank1 opened the regulator's result" >&2
			exit 1
		fi
		echo "$out" | tail -n 1 | indent
	fi
	first=0
done

step "parley room audit: every step of the room, each with a receipt that verifies"
"$parley" room audit $room | indent

printf '\nDone.'
if [ "$keep" = 1 ]; then
	printf ' Everything is in %s.' "$dir"
fi
printf '\n'
