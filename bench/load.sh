#!/usr/bin/env bash
# Load test of the auth_agent plugin against a plain Caddy site; see
# bench/README.md. Usage: bash bench/load.sh
#
# Environment:
#   DURATION          wrk duration of each scenario (default 10s)
#   CONNECTIONS       wrk connections (default 16; rounded down to a multiple of THREADS)
#   THREADS           wrk threads (default 2)
#   ACCESS_TOKEN_ALG  access_token_alg of the auth_agent block (RS256, ES256, EdDSA;
#                     default: unset, the plugin's default, RS256)
#   STORAGE           storage of the auth_agent block (default: <tmp>/db, badger;
#                     "memory" shows what the disk costs)
#   CADDY_CPUS, WRK_CPUS  optional taskset CPU lists to pin Caddy and wrk apart
#   SCENARIOS         which of client_credentials refresh_token agent_auth to run
#                     (default: all; the baseline always runs)
#   PROFILE=1         also take a CPU profile of Caddy during every scenario
#                     (admin /debug/pprof) and print its top functions
#   VERBOSE=1         also print wrk's own report of every scenario
#   KEEP_TMP=1        keep the temp dir (binary, Caddyfile, caddy.log, wrk output)
set -euo pipefail

DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-16}
THREADS=${THREADS:-2}
ACCESS_TOKEN_ALG=${ACCESS_TOKEN_ALG:-}
STORAGE=${STORAGE:-}
SCENARIOS=${SCENARIOS:-client_credentials refresh_token agent_auth}
CADDY_CPUS=${CADDY_CPUS:-}
WRK_CPUS=${WRK_CPUS:-}
VERBOSE=${VERBOSE:-}
PROFILE=${PROFILE:-}
KEEP_TMP=${KEEP_TMP:-}

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/.." && pwd)

die() { echo "load.sh: $*" >&2; exit 1; }

# --- arguments -------------------------------------------------------------

[[ $DURATION =~ ^[1-9][0-9]*[smh]?$ ]] || die "DURATION must look like 10, 10s, 2m or 1h (got '$DURATION')"
case $DURATION in
	*h) dur_s=$(( ${DURATION%h} * 3600 )) ;;
	*m) dur_s=$(( ${DURATION%m} * 60 )) ;;
	*s) dur_s=${DURATION%s} ;;
	*) dur_s=$DURATION ;;
esac
[[ $THREADS =~ ^[1-9][0-9]*$ ]] || die "THREADS must be a positive integer"
[[ $CONNECTIONS =~ ^[1-9][0-9]*$ ]] || die "CONNECTIONS must be a positive integer"
(( CONNECTIONS >= THREADS )) || die "CONNECTIONS ($CONNECTIONS) must be at least THREADS ($THREADS)"
# wrk gives each thread CONNECTIONS/THREADS connections (integer division);
# use exactly that many everywhere. refresh_token needs one chain per
# connection plus one spare per thread (see lua/refresh_token.lua).
conns=$(( CONNECTIONS / THREADS * THREADS ))
chains=$(( conns + THREADS ))
(( conns == CONNECTIONS )) || echo "load.sh: using $conns connections ($CONNECTIONS is not a multiple of $THREADS threads)" >&2
case $ACCESS_TOKEN_ALG in "" | RS256 | ES256 | EdDSA) ;; *) die "ACCESS_TOKEN_ALG must be RS256, ES256 or EdDSA" ;; esac

# --- tools -----------------------------------------------------------------

if ! command -v wrk >/dev/null 2>&1; then
	echo "load.sh: installing wrk from Debian" >&2
	sudo=""
	if (( EUID != 0 )); then sudo=sudo; fi
	$sudo apt-get update -qq && $sudo apt-get install -y wrk
fi
for tool in go curl python3 timeout; do
	command -v "$tool" >/dev/null 2>&1 || die "$tool is required"
done
wrk_pin=()
caddy_pin=()
if [[ -n $WRK_CPUS ]]; then wrk_pin=(taskset -c "$WRK_CPUS"); fi
if [[ -n $CADDY_CPUS ]]; then caddy_pin=(taskset -c "$CADDY_CPUS"); fi

# --- temp dir, cleanup -----------------------------------------------------

tmp=$(mktemp -d "${TMPDIR:-/tmp}/authagent-load.XXXXXX")
caddy_pid=""
wrk_pid=""
cleanup() {
	local rc=$?
	if [[ -n $wrk_pid ]]; then
		kill "$wrk_pid" 2>/dev/null || true # timeout passes it on to wrk
		wait "$wrk_pid" 2>/dev/null || true
	fi
	if [[ -n $caddy_pid ]] && kill -0 "$caddy_pid" 2>/dev/null; then
		kill "$caddy_pid" 2>/dev/null || true
		for _ in $(seq 50); do
			kill -0 "$caddy_pid" 2>/dev/null || break
			sleep 0.1
		done
		kill -9 "$caddy_pid" 2>/dev/null || true
		wait "$caddy_pid" 2>/dev/null || true
	fi
	if [[ -n $KEEP_TMP ]]; then
		echo "load.sh: kept $tmp" >&2
	else
		rm -rf "$tmp"
	fi
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- build and start -------------------------------------------------------

echo "building ./cmd/caddy ..." >&2
(cd "$root" && go build -o "$tmp/caddy" ./cmd/caddy)

read -r admin_port idp_port base_port < <(python3 -c '
import socket
socks = [socket.socket() for _ in range(3)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in socks))
for s in socks:
    s.close()
')
idp=http://127.0.0.1:$idp_port
base=http://127.0.0.1:$base_port

client_id=load-site
client_secret=0123456789abcdef0123456789abcdef
redirect_uri=http://127.0.0.1:9/callback
agent_id=load-agent
agent_secret='Test123456!'

alg_line=""
if [[ -n $ACCESS_TOKEN_ALG ]]; then alg_line=$'\n\t\taccess_token_alg '"$ACCESS_TOKEN_ALG"; fi
cat >"$tmp/Caddyfile" <<EOF
{
	admin 127.0.0.1:$admin_port
	auth_agent {
		issuer $idp
		storage ${STORAGE:-$tmp/db}
		default_permissions data:read$alg_line
		client $client_id {
			secret $client_secret
			redirect_uri $redirect_uri
			scopes openid profile data:read
		}
	}
}

$idp {
	auth_agent
}

$base {
	respond "ok" 200
}
EOF

echo "starting caddy (auth_agent on $idp, baseline on $base) ..." >&2
(
	cd "$tmp"
	# Caddy keeps its data under $XDG_DATA_HOME/caddy, which must not be the binary.
	mkdir -p "$tmp/home"
	export HOME=$tmp/home XDG_DATA_HOME=$tmp/home XDG_CONFIG_HOME=$tmp/home
	exec "${caddy_pin[@]}" "$tmp/caddy" run --config "$tmp/Caddyfile" --adapter caddyfile
) >"$tmp/caddy.log" 2>&1 &
caddy_pid=$!

ready=""
for _ in $(seq 300); do
	kill -0 "$caddy_pid" 2>/dev/null || { cat "$tmp/caddy.log" >&2; die "caddy exited during startup"; }
	if curl -fsS -o /dev/null --max-time 2 "$base/" 2>/dev/null &&
		curl -fsS -o /dev/null --max-time 2 "$idp/.well-known/openid-configuration" 2>/dev/null; then
		ready=1
		break
	fi
	sleep 0.1
done
[[ -n $ready ]] || { cat "$tmp/caddy.log" >&2; die "caddy did not become ready in 30 s"; }

rss_mib() {
	awk '/^VmRSS:/ { printf "%.1f", $2 / 1024 }' "/proc/$caddy_pid/status"
}
hwm_mib() {
	awk '/^VmHWM:/ { printf "%.1f", $2 / 1024 }' "/proc/$caddy_pid/status"
}
# Caddy's CPU time (user + system) in microseconds.
clk_tck=$(getconf CLK_TCK)
cpu_us() {
	awk -v hz="$clk_tck" '{ sub(/^.*\) /, ""); printf "%d", ($12 + $13) * 1e6 / hz }' "/proc/$caddy_pid/stat"
}
rss_start=$(rss_mib)

# --- setup: agent, refresh-token chains, probes ----------------------------

echo "preparing: registering $agent_id, making $chains refresh-token chains ..." >&2
prep_msg=$(python3 "$here/prepare.py" "$idp" "$client_id" "$client_secret" "$redirect_uri" \
	"$agent_id" "$agent_secret" "$chains" "$tmp/refresh_tokens.txt")
echo "$prep_msg" >&2

basic="Authorization: Basic $(printf '%s:%s' "$client_id" "$client_secret" | base64 -w0)"
agent_json=$(printf '{"agent_id":"%s","agent_secret":"%s"}' "$agent_id" "$agent_secret")

# probe NAME CURL-ARGS...: one request exactly like the scenario's; must be 200.
probe() {
	local name=$1 code
	shift
	code=$(curl -sS -o "$tmp/probe_$name.json" -w '%{http_code}' --max-time 10 "$@") || die "probe $name: curl failed"
	[[ $code == 200 ]] || die "probe $name: HTTP $code: $(cat "$tmp/probe_$name.json")"
}
jwt_alg_of() { # JSON file -> alg of the access token in it (top level or under data)
	python3 -c '
import base64, json, sys
d = json.load(open(sys.argv[1]))
d = d.get("data", d)
h = d["access_token"].split(".")[0]
print(json.loads(base64.urlsafe_b64decode(h + "=" * (-len(h) % 4)))["alg"])
' "$1"
}
probe baseline "$base/"
[[ $(cat "$tmp/probe_baseline.json") == ok ]] || die "probe baseline: unexpected body"
probe client_credentials -X POST -H "$basic" -d 'grant_type=client_credentials&scope=data:read' "$idp/oauth2/token"
probe agent_auth -X POST -H 'Content-Type: application/json' -d "$agent_json" "$idp/api/agent-auth"
cc_alg=$(jwt_alg_of "$tmp/probe_client_credentials.json")
aa_alg=$(jwt_alg_of "$tmp/probe_agent_auth.json")

rss_idle=$(rss_mib)

# --- scenarios -------------------------------------------------------------

declare -A R # "<scenario>.<key>" -> value
scenarios=(baseline)
for s in client_credentials refresh_token agent_auth; do
	if [[ " $SCENARIOS " == *" $s "* ]]; then scenarios+=("$s"); fi
done

# run NAME URL [wrk options...] [-- script args...]
run() {
	local name=$1 url=$2 line kv
	shift 2
	local opts=() args=()
	while (($#)); do
		if [[ $1 == -- ]]; then
			shift
			args=("$@")
			break
		fi
		opts+=("$1")
		shift
	done
	cat "$here/lua/common.lua" "$here/lua/$name.lua" >"$tmp/$name.lua"
	echo "running $name for $DURATION ($THREADS threads, $conns connections) ..." >&2
	local prof_pid=""
	if [[ -n $PROFILE ]] && (( dur_s >= 3 )); then
		curl -sS -o "$tmp/$name.pprof" --max-time $((dur_s + 10)) \
			"http://127.0.0.1:$admin_port/debug/pprof/profile?seconds=$((dur_s - 1))" &
		prof_pid=$!
	fi
	local cpu0
	cpu0=$(cpu_us)
	# wrk stops by itself after -d; timeout is only a backstop. wrk runs in
	# the background so that a signal to this script interrupts the wait and
	# the EXIT trap stops wrk and Caddy at once.
	timeout -k 5 $((dur_s + 30)) "${wrk_pin[@]}" wrk -t "$THREADS" -c "$conns" -d "$DURATION" --latency \
		-s "$tmp/$name.lua" "${opts[@]}" "$url" ${args[@]+"${args[@]}"} >"$tmp/$name.out" 2>&1 &
	wrk_pid=$!
	if ! wait "$wrk_pid"; then
		wrk_pid=""
		cat "$tmp/$name.out" >&2
		die "wrk failed in scenario $name"
	fi
	wrk_pid=""
	kill -0 "$caddy_pid" 2>/dev/null || { tail -n 30 "$tmp/caddy.log" >&2; die "caddy died during $name"; }
	R[$name.cpu_us]=$(( $(cpu_us) - cpu0 ))
	R[$name.rss]=$(rss_mib)
	if [[ -n $prof_pid ]]; then
		if wait "$prof_pid"; then
			echo "--- CPU profile of caddy during $name (top functions, cumulative)" >&2
			go tool pprof -top -cum -nodecount=25 "$tmp/caddy" "$tmp/$name.pprof" 2>/dev/null | sed -n '4,$p' >&2 || true
		fi
	fi
	grep '^lua: ' "$tmp/$name.out" >&2 || true # diagnostics from the scenario script
	if [[ -n $VERBOSE ]]; then
		echo "--- wrk: $name" >&2
		grep -v '^RESULT ' "$tmp/$name.out" >&2
	fi
	line=$(grep '^RESULT ' "$tmp/$name.out") || { cat "$tmp/$name.out" >&2; die "no RESULT line from $name"; }
	for kv in ${line#RESULT }; do
		R[$name.${kv%%=*}]=${kv#*=}
	done
	sleep 1
}

for s in "${scenarios[@]}"; do
	case $s in
	baseline) run baseline "$base/" ;;
	client_credentials) run client_credentials "$idp/oauth2/token" -H "$basic" ;;
	refresh_token) run refresh_token "$idp/oauth2/token" -H "$basic" -- "$tmp/refresh_tokens.txt" "$THREADS" ;;
	agent_auth) run agent_auth "$idp/api/agent-auth" -- "$agent_id" "$agent_secret" ;;
	esac
done

# --- report ----------------------------------------------------------------

family_revocations=$(grep -c 'revoking its family' "$tmp/caddy.log" || true)
# "context canceled" is a request wrk dropped when its time was up.
server_errors=$(grep '"request failed"' "$tmp/caddy.log" | grep -vc 'context canceled' || true)

rps_of() { awk -v n="${R[$1.requests]}" -v us="${R[$1.duration_us]}" 'BEGIN { printf "%.1f", n / (us / 1e6) }'; }
ms() { awk -v us="$1" 'BEGIN { printf "%.2f", us / 1000 }'; }

base_rps=$(rps_of baseline)
failed=0
echo
echo "auth_agent load test: $DURATION per scenario, $THREADS wrk threads, $conns connections, $(nproc) CPUs"
echo "caddy $("$tmp/caddy" version | awk '{print $1}'), $(go env GOVERSION); storage ${STORAGE:-badger}, access_token_alg ${ACCESS_TOKEN_ALG:-default} (client_credentials token $cc_alg, agent-auth token $aa_alg)"
echo "$prep_msg"
echo
fmt='%-20s %9s %10s %8s %8s %8s %8s %7s %10s %7s %8s\n'
printf "$fmt" scenario requests 'req/s' 'x base' 'p50 ms' 'p99 ms' non-2xx errors 'cpu us/req' 'cpu %' 'RSS MiB'
printf "$fmt" 'idle (started)' - - - - - - - - - "$rss_start"
printf "$fmt" 'idle (before runs)' - - - - - - - - - "$rss_idle"
for s in "${scenarios[@]}"; do
	rps=$(rps_of "$s")
	ratio=$(awk -v a="$rps" -v b="$base_rps" 'BEGIN { printf "%.3f", a / b }')
	errs=$(( ${R[$s.connect]} + ${R[$s.read]} + ${R[$s.write]} + ${R[$s.timeout]} ))
	non2xx=${R[$s.non2xx]}
	cpu_req=$(awk -v c="${R[$s.cpu_us]}" -v n="${R[$s.requests]}" 'BEGIN { printf "%.0f", c / n }')
	cpu_pct=$(awk -v c="${R[$s.cpu_us]}" -v d="${R[$s.duration_us]}" 'BEGIN { printf "%.0f", 100 * c / d }')
	printf "$fmt" "$s" "${R[$s.requests]}" "$rps" "$ratio" \
		"$(ms "${R[$s.p50_us]}")" "$(ms "${R[$s.p99_us]}")" "$non2xx" "$errs" "$cpu_req" "$cpu_pct" "${R[$s.rss]}"
	if (( non2xx > 0 || errs > 0 )) || [[ ${R[$s.notes]} != - ]]; then
		echo "  !! $s: statuses ${R[$s.statuses]}; events ${R[$s.notes]};" \
			"socket errors connect ${R[$s.connect]} read ${R[$s.read]} write ${R[$s.write]} timeout ${R[$s.timeout]}"
		failed=1
	fi
done
echo
echo "peak RSS (VmHWM) $(hwm_mib) MiB; statuses: $(for s in "${scenarios[@]}"; do printf '%s %s; ' "$s" "${R[$s.statuses]}"; done)"
if [[ -n ${R[refresh_token.non2xx]:-} ]]; then
	echo "refresh_token: $chains chains over $conns connections; non-200 responses: ${R[refresh_token.non2xx]}"
fi
echo "refresh-token reuse detections in caddy log: $family_revocations; server errors logged: $server_errors"
if (( family_revocations > 0 || server_errors > 0 )); then failed=1; fi
if (( failed )); then
	echo "FAIL: some responses were not 2xx, or wrk saw socket errors, or the server logged errors" >&2
	exit 1
fi
