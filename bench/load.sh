#!/usr/bin/env bash
# Load test of the auth_agent plugin against a plain Caddy site, and of the
# agent_guard handler in front of a reverse-proxied upstream against the same
# reverse_proxy without it; see bench/README.md. Usage: bash bench/load.sh
#
# Environment:
#   DURATION          wrk duration of each run (default 10s)
#   CONNECTIONS       wrk connections (default 16; rounded down to a multiple of THREADS)
#   THREADS           wrk threads (default 2)
#   ACCESS_TOKEN_ALG  access_token_alg of the auth_agent block (RS256, ES256, EdDSA;
#                     default: unset, the plugin's default, RS256)
#   STORAGE           storage of the auth_agent block (default: <tmp>/db, badger;
#                     "memory" shows what the disk costs)
#   RATE_LIMIT        high (default): every rate_limit budget of the auth_agent
#                     block at 1000000000/s, so none trips but the limiter runs
#                     (memory store) and its cost is measured; off: budgets off
#   CADDY_CPUS, WRK_CPUS  optional taskset CPU lists to pin Caddy and wrk apart
#   UPSTREAM_CPUS     taskset CPU list of the upstream (default: CADDY_CPUS)
#   SCENARIOS         which of client_credentials refresh_token agent_auth proxy
#                     guarded to run (default: all; the baseline always runs).
#                     proxy and guarded run twice each, alternating (proxy,
#                     guarded, proxy, guarded); their rows are the means.
#   LIMITER_COMPARE=1 also measure guarded three ways, alternating twice (off,
#                     memory, redis, off, memory, redis): rate_limit api off;
#                     api 1000000000/s with store memory; the same with store
#                     redis at a redis-server this script starts on a free
#                     127.0.0.1 port. One Caddy, reloaded between variants
#                     (caddy reload via the admin API). Prints
#                     "limiter cost: memory/off = X.XX, redis/off = Y.YY".
#   REDIS_CPUS        taskset CPU list of that redis-server (default: CADDY_CPUS)
#   PROXY_TOKEN=1     proxy sends guarded's Authorization header too (the
#                     upstream ignores it), to tell the guard's own work from
#                     the cost of carrying the token
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
RATE_LIMIT=${RATE_LIMIT:-high}
SCENARIOS=${SCENARIOS:-client_credentials refresh_token agent_auth proxy guarded}
CADDY_CPUS=${CADDY_CPUS:-}
UPSTREAM_CPUS=${UPSTREAM_CPUS:-$CADDY_CPUS}
WRK_CPUS=${WRK_CPUS:-}
VERBOSE=${VERBOSE:-}
PROFILE=${PROFILE:-}
PROXY_TOKEN=${PROXY_TOKEN:-}
LIMITER_COMPARE=${LIMITER_COMPARE:-}
REDIS_CPUS=${REDIS_CPUS:-$CADDY_CPUS}
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
# The plugin's default budgets (api 1000/h per agent, refresh 60/h per
# client, registration 5/h per IP) would answer 429 within the first second.
case $RATE_LIMIT in
high) rate=1000000000/s ;;
off) rate=off ;;
*) die "RATE_LIMIT must be high or off" ;;
esac
case $LIMITER_COMPARE in
"" | 0) LIMITER_COMPARE="" ;;
1) ;;
*) die "LIMITER_COMPARE must be 1 or unset" ;;
esac
all_scenarios=(client_credentials refresh_token agent_auth proxy guarded)
for s in $SCENARIOS; do
	[[ $s == baseline || " ${all_scenarios[*]} " == *" $s "* ]] ||
		die "unknown scenario '$s' in SCENARIOS (known: ${all_scenarios[*]})"
done

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
if [[ -n $LIMITER_COMPARE ]]; then
	for tool in redis-server redis-cli; do
		command -v "$tool" >/dev/null 2>&1 || die "$tool is required by LIMITER_COMPARE=1 (apt-get install redis-server)"
	done
fi
wrk_pin=()
caddy_pin=()
upstream_pin=()
redis_pin=()
if [[ -n $WRK_CPUS ]]; then wrk_pin=(taskset -c "$WRK_CPUS"); fi
if [[ -n $CADDY_CPUS ]]; then caddy_pin=(taskset -c "$CADDY_CPUS"); fi
if [[ -n $UPSTREAM_CPUS ]]; then upstream_pin=(taskset -c "$UPSTREAM_CPUS"); fi
if [[ -n $REDIS_CPUS ]]; then redis_pin=(taskset -c "$REDIS_CPUS"); fi

# --- temp dir, cleanup -----------------------------------------------------

tmp=$(mktemp -d "${TMPDIR:-/tmp}/authagent-load.XXXXXX")
caddy_pid=""
upstream_pid=""
redis_pid=""
wrk_pid=""
cleanup() {
	local rc=$?
	if [[ -n $wrk_pid ]]; then
		kill "$wrk_pid" 2>/dev/null || true # timeout passes it on to wrk
		wait "$wrk_pid" 2>/dev/null || true
	fi
	if [[ -n $upstream_pid ]]; then
		kill "$upstream_pid" 2>/dev/null || true
		wait "$upstream_pid" 2>/dev/null || true
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
	# After Caddy, so that Caddy never sees its limiter store vanish.
	if [[ -n $redis_pid ]]; then
		kill "$redis_pid" 2>/dev/null || true
		wait "$redis_pid" 2>/dev/null || true
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

echo "building ./cmd/caddy and ./bench/upstream ..." >&2
(cd "$root" && go build -o "$tmp/caddy" ./cmd/caddy && go build -o "$tmp/upstream" ./bench/upstream)

read -r admin_port idp_port base_port proxy_port guarded_port upstream_port redis_port < <(python3 -c '
import socket
socks = [socket.socket() for _ in range(7)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in socks))
for s in socks:
    s.close()
')
idp=http://127.0.0.1:$idp_port
base=http://127.0.0.1:$base_port
proxy=http://127.0.0.1:$proxy_port
guarded=http://127.0.0.1:$guarded_port
upstream=127.0.0.1:$upstream_port
redis_url=redis://127.0.0.1:$redis_port/0

client_id=load-site
client_secret=0123456789abcdef0123456789abcdef
redirect_uri=http://127.0.0.1:9/callback
agent_id=load-agent
agent_secret='Test123456!'

alg_line=""
if [[ -n $ACCESS_TOKEN_ALG ]]; then alg_line=$'\n\t\taccess_token_alg '"$ACCESS_TOKEN_ALG"; fi
# write_caddyfile FILE API-RATE [STORE...]: the Caddyfile with the api budget
# API-RATE (the other budgets are $rate) and `store STORE...` (default: none,
# i.e. memory). Only the rate_limit block differs between the files.
write_caddyfile() {
	local file=$1 api=$2 store_line=""
	shift 2
	if (($#)); then store_line=$'\n\t\t\tstore '"$*"; fi
	cat >"$file" <<EOF
{
	admin 127.0.0.1:$admin_port
	auth_agent {
		issuer $idp
		storage ${STORAGE:-$tmp/db}
		default_permissions data:read$alg_line
		rate_limit {
			registration $rate
			authentication $rate
			refresh $rate
			api $api$store_line
		}
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

$proxy {
	reverse_proxy $upstream
}

$guarded {
	agent_guard {
		scopes data:read
	}
	reverse_proxy $upstream
}
EOF
}
write_caddyfile "$tmp/Caddyfile" "$rate"
if [[ -n $LIMITER_COMPARE ]]; then
	write_caddyfile "$tmp/Caddyfile.limiter-off" off memory
	write_caddyfile "$tmp/Caddyfile.limiter-memory" 1000000000/s memory
	write_caddyfile "$tmp/Caddyfile.limiter-redis" 1000000000/s redis "$redis_url"
fi

echo "starting upstream on $upstream ..." >&2
"${upstream_pin[@]}" "$tmp/upstream" "$upstream" >"$tmp/upstream.log" 2>&1 &
upstream_pid=$!

if [[ -n $LIMITER_COMPARE ]]; then
	# Only for the limiter-redis variant: nothing persisted, in the foreground
	# (so that its pid is ours and the EXIT trap stops it).
	echo "starting redis-server on 127.0.0.1:$redis_port ..." >&2
	"${redis_pin[@]}" redis-server --bind 127.0.0.1 --port "$redis_port" --save "" --appendonly no \
		--daemonize no --dir "$tmp" --logfile "$tmp/redis.log" >/dev/null 2>&1 &
	redis_pid=$!
	ready=""
	for _ in $(seq 100); do
		kill -0 "$redis_pid" 2>/dev/null || { cat "$tmp/redis.log" >&2; die "redis-server exited during startup"; }
		if [[ $(redis-cli -h 127.0.0.1 -p "$redis_port" ping 2>/dev/null) == PONG ]]; then
			ready=1
			break
		fi
		sleep 0.1
	done
	[[ -n $ready ]] || { cat "$tmp/redis.log" >&2; die "redis-server did not become ready in 10 s"; }
fi

echo "starting caddy (auth_agent on $idp, baseline on $base, proxy on $proxy, guarded on $guarded) ..." >&2
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
	kill -0 "$upstream_pid" 2>/dev/null || { cat "$tmp/upstream.log" >&2; die "upstream exited during startup"; }
	if curl -fsS -o /dev/null --max-time 2 "$base/" 2>/dev/null &&
		curl -fsS -o /dev/null --max-time 2 "$idp/.well-known/openid-configuration" 2>/dev/null &&
		curl -fsS -o /dev/null --max-time 2 "http://$upstream/" 2>/dev/null; then
		ready=1
		break
	fi
	sleep 0.1
done
[[ -n $ready ]] || { cat "$tmp/caddy.log" "$tmp/upstream.log" >&2; die "caddy or the upstream did not become ready in 30 s"; }

rss_mib() {
	awk '/^VmRSS:/ { printf "%.1f", $2 / 1024 }' "/proc/$caddy_pid/status"
}
hwm_mib() {
	awk '/^VmHWM:/ { printf "%.1f", $2 / 1024 }' "/proc/$caddy_pid/status"
}
# Caddy's CPU time (user + system) in microseconds.
clk_tck=$(getconf CLK_TCK)
cpu_us() { # [PID], default Caddy
	awk -v hz="$clk_tck" '{ sub(/^.*\) /, ""); printf "%.0f", ($12 + $13) * 1e6 / hz }' "/proc/${1:-$caddy_pid}/stat"
}
# CPU time of the whole machine, busy and all, in microseconds (all CPUs).
machine_us() {
	awk -v hz="$clk_tck" '$1 == "cpu" { t = 0; for (i = 2; i <= NF; i++) t += $i; b = t - $5 - $6; printf "%.0f %.0f\n", b * 1e6 / hz, t * 1e6 / hz; exit }' /proc/stat
}
rss_start=$(rss_mib)

# --- setup: agent, refresh-token chains, probes ----------------------------

echo "preparing: registering $agent_id, making $chains refresh-token chains ..." >&2
prep_msg=$(python3 "$here/prepare.py" "$idp" "$client_id" "$client_secret" "$redirect_uri" \
	"$agent_id" "$agent_secret" "$chains" "$tmp/refresh_tokens.txt")
echo "$prep_msg" >&2

basic="Authorization: Basic $(printf '%s:%s' "$client_id" "$client_secret" | base64 -w0)"
agent_json=$(printf '{"agent_id":"%s","agent_secret":"%s"}' "$agent_id" "$agent_secret")

# probe_code NAME STATUS CURL-ARGS...: one request; must answer STATUS.
probe_code() {
	local name=$1 want=$2 code
	shift 2
	code=$(curl -sS -o "$tmp/probe_$name.json" -w '%{http_code}' --max-time 10 "$@") || die "probe $name: curl failed"
	[[ $code == "$want" ]] || die "probe $name: HTTP $code, want $want: $(cat "$tmp/probe_$name.json")"
}
# probe NAME CURL-ARGS...: one request exactly like the scenario's; must be 200.
probe() { probe_code "$1" 200 "${@:2}"; }
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

# The guarded scenario's token: one agent-auth access token (the agent's
# default permissions, data:read), obtained once and sent on every request.
curl -fsS -o "$tmp/guard_token.json" --max-time 10 -X POST -H 'Content-Type: application/json' \
	-d "$agent_json" "$idp/api/agent-auth" || die "agent-auth for the guard token failed"
guard_token=$(python3 -c '
import json, sys
d = json.load(open(sys.argv[1]))
print(d.get("data", d)["access_token"])
' "$tmp/guard_token.json") || die "no access_token in $(cat "$tmp/guard_token.json")"
bearer="Authorization: Bearer $guard_token"
probe proxy "$proxy/"
[[ $(cat "$tmp/probe_proxy.json") == ok ]] || die "probe proxy: unexpected body (not the upstream's)"
probe guarded -H "$bearer" "$guarded/"
[[ $(cat "$tmp/probe_guarded.json") == ok ]] || die "probe guarded: unexpected body (not the upstream's)"
probe_code guarded_no_token 401 "$guarded/"

rss_idle=$(rss_mib)

# --- scenarios -------------------------------------------------------------

declare -A R # "<run or scenario>.<key>" -> value
selected() { [[ " $SCENARIOS " == *" $1 "* ]]; }
# Report order, which is also the run order. The proxy/guarded pair runs
# right after the baseline, before the IdP scenarios write to storage, so
# that no storage background work (badger compaction) lands on the pair.
scenarios=(baseline)
pair=()
for s in proxy guarded; do
	if selected "$s"; then pair+=("$s"); fi
done
scenarios+=(${pair[@]+"${pair[@]}"})
# LIMITER_COMPARE: guarded under three rate_limit configs, right after the
# pair for the same reason. Caddy is reloaded into each variant's Caddyfile
# and, after the six runs, back into the starting one for the IdP scenarios.
limiter_variants=(off memory redis)
if [[ -n $LIMITER_COMPARE ]]; then
	for v in "${limiter_variants[@]}"; do scenarios+=("limiter-$v"); done
fi
for s in client_credentials refresh_token agent_auth; do
	if selected "$s"; then scenarios+=("$s"); fi
done

# Commands redis-server has processed so far (each INFO counts itself).
redis_cmds() {
	redis-cli -h 127.0.0.1 -p "$redis_port" info stats | tr -d '\r' |
		awk -F: '$1 == "total_commands_processed" { print $2 }'
}

# reload_to VARIANT: reload Caddy (same process, same storage, so the signing
# keys and the guard token survive) into Caddyfile.limiter-VARIANT, or with
# "" back into the starting Caddyfile; then check that the token still
# passes the guard and that the api budget is the variant's: X-RateLimit-*
# headers with the memory or redis limiter, none with api off. (A Redis
# failure lets an API call through without headers, so this also checks
# that the limiter reaches Redis.)
reload_to() {
	local v=$1 file=$tmp/Caddyfile want limit
	if [[ -n $v ]]; then file=$tmp/Caddyfile.limiter-$v; fi
	echo "reloading caddy with $(basename "$file") ..." >&2
	(
		cd "$tmp"
		export HOME=$tmp/home XDG_DATA_HOME=$tmp/home XDG_CONFIG_HOME=$tmp/home
		"$tmp/caddy" reload --config "$file" --adapter caddyfile --address "127.0.0.1:$admin_port" --force
	) >>"$tmp/reload.log" 2>&1 || { tail -n 20 "$tmp/reload.log" >&2; die "caddy reload with $file failed"; }
	kill -0 "$caddy_pid" 2>/dev/null || { tail -n 30 "$tmp/caddy.log" >&2; die "caddy exited on reload"; }
	probe "guarded_${v:-start}" -D "$tmp/probe_guarded_${v:-start}.headers" -H "$bearer" "$guarded/"
	[[ $(cat "$tmp/probe_guarded_${v:-start}.json") == ok ]] || die "probe guarded after reload to ${v:-start}: unexpected body"
	limit=$(tr -d '\r' <"$tmp/probe_guarded_${v:-start}.headers" | awk -F': *' 'tolower($1) == "x-ratelimit-limit" { print $2 }')
	case $v in
	off) want="" ;;
	memory | redis) want=1000000000 ;;
	*) want=$([[ $rate == off ]] || echo 1000000000) ;;
	esac
	[[ $limit == "$want" ]] || die "after reload to ${v:-start}: X-RateLimit-Limit '$limit', want '$want' (config not applied, or the limiter store failed; see $tmp/caddy.log)"
}

# run NAME SCRIPT URL [wrk options...] [-- script args...]: one wrk run of
# lua/SCRIPT.lua, its results stored under NAME.
run() {
	local name=$1 script=$2 url=$3 line kv
	shift 3
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
	cat "$here/lua/common.lua" "$here/lua/$script.lua" >"$tmp/$script.lua"
	echo "running $name for $DURATION ($THREADS threads, $conns connections) ..." >&2
	local prof_pid=""
	if [[ -n $PROFILE ]] && (( dur_s >= 3 )); then
		curl -sS -o "$tmp/$name.pprof" --max-time $((dur_s + 10)) \
			"http://127.0.0.1:$admin_port/debug/pprof/profile?seconds=$((dur_s - 1))" &
		prof_pid=$!
	fi
	local cpu0 up0 busy0 total0 busy1 total1 rcpu0="" rcmd0=""
	cpu0=$(cpu_us)
	up0=$(cpu_us "$upstream_pid")
	if [[ -n $redis_pid ]]; then
		rcpu0=$(cpu_us "$redis_pid")
		rcmd0=$(redis_cmds)
	fi
	read -r busy0 total0 < <(machine_us)
	# wrk stops by itself after -d; timeout is only a backstop. wrk runs in
	# the background so that a signal to this script interrupts the wait and
	# the EXIT trap stops wrk and Caddy at once.
	timeout -k 5 $((dur_s + 30)) "${wrk_pin[@]}" wrk -t "$THREADS" -c "$conns" -d "$DURATION" --latency \
		-s "$tmp/$script.lua" ${opts[@]+"${opts[@]}"} "$url" ${args[@]+"${args[@]}"} >"$tmp/$name.out" 2>&1 &
	wrk_pid=$!
	if ! wait "$wrk_pid"; then
		wrk_pid=""
		cat "$tmp/$name.out" >&2
		die "wrk failed in scenario $name"
	fi
	wrk_pid=""
	kill -0 "$caddy_pid" 2>/dev/null || { tail -n 30 "$tmp/caddy.log" >&2; die "caddy died during $name"; }
	kill -0 "$upstream_pid" 2>/dev/null || { tail -n 30 "$tmp/upstream.log" >&2; die "the upstream died during $name"; }
	R[$name.cpu_us]=$(( $(cpu_us) - cpu0 ))
	R[$name.up_cpu_us]=$(( $(cpu_us "$upstream_pid") - up0 ))
	if [[ -n $redis_pid ]]; then
		kill -0 "$redis_pid" 2>/dev/null || { tail -n 30 "$tmp/redis.log" >&2; die "redis-server died during $name"; }
		R[$name.redis_cpu_us]=$(( $(cpu_us "$redis_pid") - rcpu0 ))
		R[$name.redis_cmds]=$(( $(redis_cmds) - rcmd0 ))
	fi
	read -r busy1 total1 < <(machine_us)
	R[$name.busy_us]=$(( busy1 - busy0 ))
	R[$name.total_us]=$(( total1 - total0 ))
	R[$name.rss]=$(rss_mib)
	if [[ -n $prof_pid ]]; then
		if wait "$prof_pid"; then
			echo "--- CPU profile of caddy during $name (top functions, cumulative)" >&2
			go tool pprof -top -cum -nodecount=25 "$tmp/caddy" "$tmp/$name.pprof" 2>/dev/null | sed -n '4,$p' >&2 || true
			if [[ $script == guarded ]]; then
				# What the guard itself spends: its callees, without the
				# reverse_proxy it hands the request to.
				echo "--- CPU profile of caddy during $name: agent_guard's own work (Guard.ServeHTTP minus reverse_proxy)" >&2
				go tool pprof -top -cum -nodecount=40 -focus='caddymodule\.\(\*Guard\)\.ServeHTTP' -ignore='reverseproxy' \
					"$tmp/caddy" "$tmp/$name.pprof" 2>/dev/null | sed -n '/^Showing nodes/,$p' |
					grep -v 'caddyhttp\.\|net/http\.' >&2 || true
			fi
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

# merge_counts "k:n,k:n" "k:n,..." -> the sums per key ("-" is empty)
merge_counts() {
	printf '%s\n' "$@" | tr ',' '\n' | awk -F: '
		$0 != "-" && $0 != "" { n[$1] += $2 }
		END { for (k in n) print k ":" n[k] }' | sort | paste -sd, - | sed 's/^$/-/'
}

# merge NAME RUN1 RUN2: NAME's results from its two runs. req/s, p50 and
# p99 are the means of the two runs; counts and CPU time are sums (so cpu
# us/req and cpu % are over both runs); RSS is after the second run.
merge() {
	local name=$1 a=$2 b=$3 k
	for k in requests duration_us non2xx connect read write timeout cpu_us up_cpu_us busy_us total_us; do
		R[$name.$k]=$(( ${R[$a.$k]} + ${R[$b.$k]} ))
	done
	for k in redis_cpu_us redis_cmds; do
		if [[ -n ${R[$a.$k]:-} ]]; then R[$name.$k]=$(( ${R[$a.$k]} + ${R[$b.$k]} )); fi
	done
	for k in p50_us p99_us; do
		R[$name.$k]=$(( (${R[$a.$k]} + ${R[$b.$k]}) / 2 ))
	done
	R[$name.rps]=$(awk -v x="$(rps_of "$a")" -v y="$(rps_of "$b")" 'BEGIN { printf "%.1f", (x + y) / 2 }')
	R[$name.statuses]=$(merge_counts "${R[$a.statuses]}" "${R[$b.statuses]}")
	R[$name.notes]=$(merge_counts "${R[$a.notes]}" "${R[$b.notes]}")
	R[$name.rss]=${R[$b.rss]}
}

# requests/s of a run or scenario: the mean of its runs when merged.
rps_of() {
	if [[ -n ${R[$1.rps]:-} ]]; then
		echo "${R[$1.rps]}"
		return
	fi
	awk -v n="${R[$1.requests]}" -v us="${R[$1.duration_us]}" 'BEGIN { printf "%.1f", n / (us / 1e6) }'
}

run_pair_member() {
	case $1 in
	proxy)
		if [[ -n $PROXY_TOKEN ]]; then
			run "proxy-$2" proxy "$proxy/" -H "$bearer"
		else
			run "proxy-$2" proxy "$proxy/"
		fi
		;;
	guarded) run "guarded-$2" guarded "$guarded/" -H "$bearer" ;;
	esac
}

for s in "${scenarios[@]}"; do
	case $s in
	baseline) run baseline baseline "$base/" ;;
	client_credentials) run client_credentials client_credentials "$idp/oauth2/token" -H "$basic" ;;
	refresh_token) run refresh_token refresh_token "$idp/oauth2/token" -H "$basic" -- "$tmp/refresh_tokens.txt" "$THREADS" ;;
	agent_auth) run agent_auth agent_auth "$idp/api/agent-auth" -- "$agent_id" "$agent_secret" ;;
	proxy | guarded)
		# The whole pair, twice, alternating: proxy-1 guarded-1 proxy-2 guarded-2.
		if [[ $s == "${pair[0]}" ]]; then
			for i in 1 2; do
				for p in "${pair[@]}"; do run_pair_member "$p" "$i"; done
			done
		fi
		merge "$s" "$s-1" "$s-2"
		;;
	limiter-*)
		# All three variants, twice, alternating: off-1 memory-1 redis-1
		# off-2 memory-2 redis-2, each after a reload into its Caddyfile.
		if [[ $s == "limiter-${limiter_variants[0]}" ]]; then
			for i in 1 2; do
				for v in "${limiter_variants[@]}"; do
					reload_to "$v"
					run "limiter-$v-$i" guarded "$guarded/" -H "$bearer"
				done
			done
			reload_to ""
		fi
		merge "$s" "$s-1" "$s-2"
		;;
	esac
done

# --- report ----------------------------------------------------------------

family_revocations=$(grep -c 'revoking its family' "$tmp/caddy.log" || true)
# "context canceled" is a request wrk dropped when its time was up.
server_errors=$(grep '"request failed"' "$tmp/caddy.log" | grep -vc 'context canceled' || true)
# A failing limiter store lets API calls through (on_store_error api open),
# which would make a broken Redis look cheap.
store_failures=$(grep -c 'rate limiter store failed' "$tmp/caddy.log" || true)

ms() { awk -v us="$1" 'BEGIN { printf "%.2f", us / 1000 }'; }

base_rps=$(rps_of baseline)
failed=0
echo
echo "auth_agent load test: $DURATION per run (proxy and guarded: 2 runs each$([[ -n $LIMITER_COMPARE ]] && echo "; guarded/limiter-off, -memory, -redis: 2 runs each")), $THREADS wrk threads, $conns connections, $(nproc) CPUs"
echo "caddy $("$tmp/caddy" version | awk '{print $1}'), $(go env GOVERSION); storage ${STORAGE:-badger}, rate_limit $rate, proxy $([[ -n $PROXY_TOKEN ]] && echo with || echo without) the bearer token, access_token_alg ${ACCESS_TOKEN_ALG:-default} (client_credentials token $cc_alg, agent-auth token $aa_alg)"
echo "$prep_msg"
if [[ -n $LIMITER_COMPARE ]]; then
	redis_version=$(redis-server --version | awk '{ sub(/^v=/, "", $3); print $3 }')
	echo "limiter compare (one Caddy, reloaded per variant): limiter-off = rate_limit api off; limiter-memory = api 1000000000/s, store memory; limiter-redis = api 1000000000/s, store redis $redis_url (redis-server $redis_version, no persistence)"
fi
echo
label_of() { # scenario -> its row label
	local l=$1
	if [[ $l == limiter-* ]]; then l=guarded/$l; fi
	if [[ -n ${R[$1.rps]:-} ]]; then l="$l (mean of 2)"; fi
	echo "$l"
}
w=20
for s in "${scenarios[@]}"; do
	l=$(label_of "$s")
	if (( ${#l} > w )); then w=${#l}; fi
done
fmt="%-${w}s %9s %10s %8s %8s %8s %8s %7s %10s %7s %8s\n"
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
	label=$(label_of "$s")
	printf "$fmt" "$label" "${R[$s.requests]}" "$rps" "$ratio" \
		"$(ms "${R[$s.p50_us]}")" "$(ms "${R[$s.p99_us]}")" "$non2xx" "$errs" "$cpu_req" "$cpu_pct" "${R[$s.rss]}"
	if (( non2xx > 0 || errs > 0 )) || [[ ${R[$s.notes]} != - ]]; then
		echo "  !! $s: statuses ${R[$s.statuses]}; events ${R[$s.notes]};" \
			"socket errors connect ${R[$s.connect]} read ${R[$s.read]} write ${R[$s.write]} timeout ${R[$s.timeout]}"
		failed=1
	fi
done
echo
cpu_per_req() { awk -v c="${R[$1.cpu_us]}" -v n="${R[$1.requests]}" 'BEGIN { printf "%.1f", c / n }'; }
for s in ${pair[@]+"${pair[@]}"}; do
	printf '%-7s runs (alternating): %s, %s req/s; mean %s req/s; upstream %s cpu us/req; machine %s cpu us/req, %s%% busy\n' \
		"$s" "$(rps_of "$s-1")" "$(rps_of "$s-2")" "$(rps_of "$s")" \
		"$(awk -v c="${R[$s.up_cpu_us]}" -v n="${R[$s.requests]}" 'BEGIN { printf "%.1f", c / n }')" \
		"$(awk -v c="${R[$s.busy_us]}" -v n="${R[$s.requests]}" 'BEGIN { printf "%.1f", c / n }')" \
		"$(awk -v b="${R[$s.busy_us]}" -v t="${R[$s.total_us]}" 'BEGIN { printf "%.0f", 100 * b / t }')"
done
if (( ${#pair[@]} == 2 )); then
	echo "guard CPU cost: $(awk -v g="$(cpu_per_req guarded)" -v p="$(cpu_per_req proxy)" 'BEGIN { printf "%+.1f", g - p }') us of Caddy CPU per request (guarded $(cpu_per_req guarded), proxy $(cpu_per_req proxy) cpu us/req)"
	echo "guard ratio: guarded/proxy = $(awk -v g="$(rps_of guarded)" -v p="$(rps_of proxy)" 'BEGIN { printf "%.2f", g / p }') (target >= 0.90)"
fi
if [[ -n $LIMITER_COMPARE ]]; then
	per_req() { awk -v c="${R[$1.$2]}" -v n="${R[$1.requests]}" 'BEGIN { printf "%.1f", c / n }'; }
	for v in "${limiter_variants[@]}"; do
		s=limiter-$v
		printf '%-22s runs (alternating): %s, %s req/s; mean %s req/s; caddy %s, redis-server %s, machine %s cpu us/req; redis commands/req %s\n' \
			"guarded/$s" "$(rps_of "$s-1")" "$(rps_of "$s-2")" "$(rps_of "$s")" \
			"$(cpu_per_req "$s")" "$(per_req "$s" redis_cpu_us)" "$(per_req "$s" busy_us)" \
			"$(awk -v c="${R[$s.redis_cmds]}" -v n="${R[$s.requests]}" 'BEGIN { printf "%.2f", c / n }')"
	done
	echo "limiter CPU cost: memory $(awk -v a="$(cpu_per_req limiter-memory)" -v b="$(cpu_per_req limiter-off)" 'BEGIN { printf "%+.1f", a - b }'), redis $(awk -v a="$(cpu_per_req limiter-redis)" -v b="$(cpu_per_req limiter-off)" 'BEGIN { printf "%+.1f", a - b }') us of Caddy CPU per request over limiter-off; plus redis-server's own $(per_req limiter-redis redis_cpu_us) us/req with redis"
	echo "limiter cost: memory/off = $(awk -v a="$(rps_of limiter-memory)" -v b="$(rps_of limiter-off)" 'BEGIN { printf "%.2f", a / b }'), redis/off = $(awk -v a="$(rps_of limiter-redis)" -v b="$(rps_of limiter-off)" 'BEGIN { printf "%.2f", a / b }')"
	# Every limiter-redis request must have reached Redis (at least one
	# command each); otherwise the variant did not measure Redis.
	if (( ${R[limiter-redis.redis_cmds]} < ${R[limiter-redis.requests]} )); then
		echo "  !! limiter-redis: ${R[limiter-redis.redis_cmds]} Redis commands for ${R[limiter-redis.requests]} requests"
		failed=1
	fi
fi
echo "peak RSS (VmHWM) $(hwm_mib) MiB; statuses: $(for s in "${scenarios[@]}"; do printf '%s %s; ' "$s" "${R[$s.statuses]}"; done)"
if [[ -n ${R[refresh_token.non2xx]:-} ]]; then
	echo "refresh_token: $chains chains over $conns connections; non-200 responses: ${R[refresh_token.non2xx]}"
fi
echo "refresh-token reuse detections in caddy log: $family_revocations; server errors logged: $server_errors; rate limiter store failures logged: $store_failures"
if (( family_revocations > 0 || server_errors > 0 || store_failures > 0 )); then failed=1; fi
if (( failed )); then
	echo "FAIL: some responses were not 2xx, or wrk saw socket errors, or the server logged errors (or the limiter's store failed)" >&2
	exit 1
fi
