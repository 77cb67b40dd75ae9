# lib.sh — what the clean-room examples' run.sh scripts share: arguments,
# directories, step printing, and starting a development service. Sourced,
# not run: `. "$(dirname "$0")/../lib.sh"; example_init ROWS "$@"`.

# example_init DEFAULT_ROWS ARGS...: parse --rows/--seed/--dir/--help, check
# the tools, and set repo, dir (kept only if given), data, keys, blobs, work,
# results; removes a temporary dir and stops the service on exit.
example_init() {
	rows=$1
	shift
	seed=1
	dir=""
	while [ $# -gt 0 ]; do
		case $1 in
		--rows) rows=${2:?--rows N}; shift 2 ;;
		--seed) seed=${2:?--seed N}; shift 2 ;;
		--dir) dir=${2:?--dir DIR}; shift 2 ;;
		-h | --help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
		*) echo "run.sh: unknown argument $1 (try --help)" >&2; exit 2 ;;
		esac
	done
	for tool in go jq curl; do
		command -v $tool >/dev/null || { echo "run.sh: $tool is required" >&2; exit 2; }
	done

	repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
	keep=1
	if [ -z "$dir" ]; then
		dir=$(mktemp -d)
		keep=0
	fi
	mkdir -p "$dir"
	dir=$(cd "$dir" && pwd)
	data=$dir/data         # the parties' own machines: plaintext CSVs
	keys=$dir/parties      # each party's signing and result keys
	blobs=$dir/blobs       # the blob store: ciphertext only
	work=$dir/runner-work  # the runner's working directory
	results=$dir/results   # what the recipients opened
	mkdir -p "$data" "$keys" "$blobs" "$work" "$results"
	devpid=""
	trap example_cleanup EXIT
	n=0
}

example_cleanup() {
	if [ -n "$devpid" ]; then
		kill "$devpid" 2>/dev/null || true
		wait "$devpid" 2>/dev/null || true
	fi
	if [ "$keep" = 0 ]; then
		rm -rf "$dir"
	fi
}

step() { n=$((n + 1)); printf '\n\033[1m[%d] %s\033[0m\n' "$n" "$*"; }
say() { printf '    %s\n' "$*"; }
indent() { sed 's/^/    /'; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.2f s", b - a }'; }

# build_tools GENERATOR_PACKAGE: build parley and the example's generator
# into $dir/bin; sets parley.
build_tools() {
	step "build parley and $(basename "$1")"
	(cd "$repo" && go build -o "$dir/bin/parley" ./cmd/parley && go build -o "$dir/bin/$(basename "$1")" "$1")
	parley=$dir/bin/parley
	say "$parley"
}

# start_service: use the service of $PARLEY_PROFILE, or start a parley dev
# service in $dir/service and allow virtual evidence in its policy
# (DEVELOPMENT ONLY). Sets devpid when it started one.
start_service() {
	if [ -n "${PARLEY_PROFILE:-}" ]; then
		step "use the running service of $PARLEY_PROFILE"
	else
		step "start a parley dev service"
		local port
		port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])' 2>/dev/null || echo $((20000 + RANDOM % 20000)))
		"$parley" dev --dir "$dir/service" --addr "127.0.0.1:$port" >"$dir/service.log" 2>&1 &
		devpid=$!
		export PARLEY_PROFILE=$dir/service/profile.json
		for ((try = 0; try < 300; try++)); do
			if [ -e "$PARLEY_PROFILE" ] && curl -sf --max-time 2 --cacert "$dir/service/service_cert.pem" "https://127.0.0.1:$port/node/network" >/dev/null 2>&1; then
				break
			fi
			kill -0 "$devpid" 2>/dev/null || { cat "$dir/service.log" >&2; exit 1; }
			sleep 0.1
		done
		say "https://127.0.0.1:$port (pid $devpid, log $dir/service.log)"
	fi

	if [ -n "$devpid" ]; then
		step "allow virtual attestation evidence in the service's policy (DEVELOPMENT ONLY: not a TEE)"
		echo '{"allowVirtual":true,"allowDebug":true,"virtual":{"measurements":["*"]}}' >"$dir/policy.json"
		"$parley" attest policy set "$dir/policy.json" | jq -c . | indent
	else
		step "the service's attestation policy (left as it is; it must accept virtual evidence, DEVELOPMENT ONLY)"
		"$parley" attest policy get | jq -c . | indent
	fi
}

# as PARTY ARGS...: run `parley room ARGS...` signed by PARTY.
as() {
	local p=$1
	shift
	"$parley" room "$@" --party-key "$keys/$p.party.pem" 2> >(indent >&2)
}

# room_name BASE: BASE for a service this script started, BASE_<unix time>
# on one that is already running (it may have a room of that name).
room_name() {
	if [ -z "$devpid" ]; then
		echo "$1_$(date +%s)"
	else
		echo "$1"
	fi
}
