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
#                     default: unset, the plugin's default)
#   STORAGE           storage of the auth_agent block (default: <tmp>/db, badger;
#                     "memory" shows what the disk costs)
#   RATE_LIMIT        high (default): every rate_limit budget of the auth_agent
#                     block at 1000000000/s, so none trips but the limiter runs
#                     (memory store) and its cost is measured; off: budgets off
#   CADDY_CPUS, WRK_CPUS  optional taskset CPU lists to pin Caddy and wrk apart
#   UPSTREAM_CPUS     taskset CPU list of the upstream (default: CADDY_CPUS)
#   SCENARIOS         which of client_credentials client_credentials_pkjwt
#                     client_credentials_pkjwt_dpop refresh_token agent_auth
#                     proxy guarded guarded_dpop to run (default: all; the
#                     baseline always runs). client_credentials_pkjwt is
#                     client_credentials by a client that authenticates with
#                     private_key_jwt (ES256 assertions, signed before the run
#                     by bench/assertions, each sent once);
#                     client_credentials_pkjwt_dpop the same with a DPoP proof
#                     per request (ES256, signed before the run, each sent
#                     once): DPoP-bound tokens. guarded_dpop is guarded with a
#                     DPoP-bound token and a proof per request. proxy, guarded
#                     and guarded_dpop run twice each, alternating (proxy,
#                     guarded, guarded_dpop, proxy, ...); so do the selected
#                     client_credentials scenarios when two or more are; their
#                     rows are the means. DURATION is at most 40s with the
#                     DPoP scenarios: their proofs must be used within the
#                     60 s dpop_leeway of when they were signed.
#   LIMITER_COMPARE=1 also measure guarded three ways, alternating twice (off,
#                     memory, redis, off, memory, redis): rate_limit api off;
#                     api 1000000000/s with store memory; the same with store
#                     redis at a redis-server this script starts on a free
#                     127.0.0.1 port. One Caddy, reloaded between variants
#                     (caddy reload via the admin API). Prints
#                     "limiter cost: memory/off = X.XX, redis/off = Y.YY".
#   REDIS_CPUS        taskset CPU list of that redis-server (default: CADDY_CPUS)
#   POSTGRES_COMPARE=1  measure the PostgreSQL storage, in two parts, every
#                     pair alternating twice: client_credentials and
#                     refresh_token on this Caddy (Badger) vs a second Caddy
#                     with `storage postgres` at a PostgreSQL server this
#                     script starts (fsync on; own temp data dir, free
#                     127.0.0.1 port); then the same two scenarios through a
#                     third Caddy balancing round-robin over two instances on
#                     one database with rate limits in Redis (a redis-server
#                     this script starts) vs over one of them. Prints
#                     "postgres/badger <scenario> = X.XX (goal >= 0.50)",
#                     "refresh_token p99: badger A ms, postgres B ms (goal
#                     < 50 ms)" and "two/one instances <scenario> = X.XX".
#                     SCENARIOS defaults to none in this mode (the baseline
#                     still runs); STORAGE must be unset.
#   POSTGRES_CPUS     taskset CPU list of that PostgreSQL server (default: CADDY_CPUS)
#   PEER_COMPARE=1    measure each scenario beside its baseline, PEER_RUNS
#                     runs each (default 3), the two sides alternating, and
#                     print a table of medians with each run's req/s and the
#                     ratio: guarded vs proxy with the same bearer token;
#                     client_credentials, introspection and refresh_token vs
#                     node oidc-provider (bench/oidc-provider: installed with
#                     npm ci into the temp dir, started by this script on
#                     127.0.0.1, ES256 JWT access tokens); RSS idle and under
#                     load vs a plain Caddy (the same binary, a Caddyfile with
#                     only a respond site: no auth_agent app). Sets
#                     access_token_alg ES256 and PROXY_TOKEN=1; DURATION
#                     defaults to 8s and CONNECTIONS to 32 in this mode, and
#                     SCENARIOS to none (the baseline still runs). Needs node
#                     and npm.
#   WEBHOOK_COMPARE=1 measure registration (POST /api/register-agent, a new
#                     agent per request) without webhooks vs with one
#                     webhook subscribed to agent.registered whose receiver
#                     (a python3 server this script starts on a free
#                     127.0.0.1 port) accepts every connection and never
#                     answers, alternating twice (off, on, off, on). One
#                     Caddy, reloaded between variants; after each reload
#                     to off the run waits until the listed deliveries are
#                     no longer pending (the off config fails them: their
#                     webhook is gone). Prints the two side by side and
#                     "webhook cost: on/off req/s = X.XX, p99 A ms vs B ms
#                     (on/off = Y.YY)". SCENARIOS defaults to none in this
#                     mode (the baseline still runs); not with
#                     POSTGRES_COMPARE or PEER_COMPARE.
#   PEER_RUNS         runs per side in PEER_COMPARE (default 3)
#   PEER_WARMUP       wrk duration of PEER_COMPARE's warm-up run of each side
#                     of each scenario, not counted (default 3s; 0: none)
#   PEER_SCENARIOS    which of guard client_credentials introspection
#                     refresh_token rss PEER_COMPARE measures (default: all)
#   REV               build Caddy and the upstream from `git archive REV`
#                     instead of the working tree (the scripts under bench/
#                     still come from the working tree); the report names
#                     the commit either way
#   PROXY_TOKEN=1     proxy sends guarded's Authorization header too (the
#                     upstream ignores it), to tell the guard's own work from
#                     the cost of carrying the token
#   PROFILE=1         also take a CPU profile of Caddy during every scenario
#                     (admin /debug/pprof) and print its top functions
#   VERBOSE=1         also print wrk's own report of every scenario
#   KEEP_TMP=1        keep the temp dir (binary, Caddyfile, caddy.log, wrk output)
set -euo pipefail

PEER_COMPARE=${PEER_COMPARE:-}
case $PEER_COMPARE in
"" | 0)
	PEER_COMPARE=""
	DURATION=${DURATION:-10s}
	CONNECTIONS=${CONNECTIONS:-16}
	;;
*) # the issue's figures: wrk -t2 -c32, 8-second runs
	DURATION=${DURATION:-8s}
	CONNECTIONS=${CONNECTIONS:-32}
	;;
esac
PEER_RUNS=${PEER_RUNS:-3}
PEER_WARMUP=${PEER_WARMUP:-3s}
PEER_SCENARIOS=${PEER_SCENARIOS:-guard client_credentials introspection refresh_token rss}
REV=${REV:-}
THREADS=${THREADS:-2}
ACCESS_TOKEN_ALG=${ACCESS_TOKEN_ALG:-}
STORAGE=${STORAGE:-}
RATE_LIMIT=${RATE_LIMIT:-high}
WEBHOOK_COMPARE=${WEBHOOK_COMPARE:-}
scenarios_env=${SCENARIOS-unset} # WEBHOOK_COMPARE's default needs to know
POSTGRES_COMPARE=${POSTGRES_COMPARE:-}
case $POSTGRES_COMPARE in
"" | 0)
	POSTGRES_COMPARE=""
	if [[ -n $PEER_COMPARE ]]; then
		SCENARIOS=${SCENARIOS:-} # none by default: the comparison is the point
	else
		SCENARIOS=${SCENARIOS:-client_credentials client_credentials_pkjwt client_credentials_pkjwt_dpop refresh_token agent_auth proxy guarded guarded_dpop}
	fi
	;;
*) SCENARIOS=${SCENARIOS:-} ;; # none by default: the comparison is the point
esac
case $WEBHOOK_COMPARE in
"" | 0) WEBHOOK_COMPARE="" ;;
1)
	# none by default: the comparison is the point
	if [[ $scenarios_env == unset ]]; then SCENARIOS=""; fi
	;;
esac
CADDY_CPUS=${CADDY_CPUS:-}
UPSTREAM_CPUS=${UPSTREAM_CPUS:-$CADDY_CPUS}
WRK_CPUS=${WRK_CPUS:-}
VERBOSE=${VERBOSE:-}
PROFILE=${PROFILE:-}
PROXY_TOKEN=${PROXY_TOKEN:-}
LIMITER_COMPARE=${LIMITER_COMPARE:-}
REDIS_CPUS=${REDIS_CPUS:-$CADDY_CPUS}
POSTGRES_CPUS=${POSTGRES_CPUS:-$CADDY_CPUS}
KEEP_TMP=${KEEP_TMP:-}

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/.." && pwd)

die() { echo "load.sh: $*" >&2; exit 1; }

# --- arguments -------------------------------------------------------------

seconds_of() { # a wrk duration (N, Ns, Nm, Nh) -> seconds
	case $1 in
	*h) echo $(( ${1%h} * 3600 )) ;;
	*m) echo $(( ${1%m} * 60 )) ;;
	*s) echo "${1%s}" ;;
	*) echo "$1" ;;
	esac
}
[[ $DURATION =~ ^[1-9][0-9]*[smh]?$ ]] || die "DURATION must look like 10, 10s, 2m or 1h (got '$DURATION')"
[[ $PEER_WARMUP =~ ^(0|[1-9][0-9]*[smh]?)$ ]] || die "PEER_WARMUP must look like 0, 3s or 1m (got '$PEER_WARMUP')"
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
case $POSTGRES_COMPARE in
"" | 1) ;;
*) die "POSTGRES_COMPARE must be 1 or unset" ;;
esac
case $PEER_COMPARE in
"" | 1) ;;
*) die "PEER_COMPARE must be 1 or unset" ;;
esac
case $WEBHOOK_COMPARE in
"" | 1) ;;
*) die "WEBHOOK_COMPARE must be 1 or unset" ;;
esac
if [[ -n $WEBHOOK_COMPARE ]]; then
	[[ -z $POSTGRES_COMPARE && -z $PEER_COMPARE ]] || die "WEBHOOK_COMPARE=1 is a separate invocation from POSTGRES_COMPARE=1 and PEER_COMPARE=1"
fi
if [[ -n $PEER_COMPARE ]]; then
	[[ -z $POSTGRES_COMPARE ]] || die "PEER_COMPARE=1 and POSTGRES_COMPARE=1 are separate invocations"
	# ES256 on both sides, whatever the plugin's default.
	[[ -z $ACCESS_TOKEN_ALG || $ACCESS_TOKEN_ALG == ES256 ]] ||
		die "PEER_COMPARE=1 compares ES256 with ES256: leave ACCESS_TOKEN_ALG unset or ES256"
	ACCESS_TOKEN_ALG=ES256
	# guarded and proxy carry the same bearer token.
	PROXY_TOKEN=1
	[[ $PEER_RUNS =~ ^[1-9][0-9]*$ ]] || die "PEER_RUNS must be a positive integer"
	for s in $PEER_SCENARIOS; do
		[[ " guard client_credentials introspection refresh_token rss " == *" $s "* ]] ||
			die "unknown scenario '$s' in PEER_SCENARIOS (known: guard client_credentials introspection refresh_token rss)"
	done
fi
# The comparison's reference is this Caddy's Badger database.
[[ -z $POSTGRES_COMPARE || -z $STORAGE ]] || die "POSTGRES_COMPARE=1 compares Badger (<tmp>/db) with PostgreSQL: leave STORAGE unset"
all_scenarios=(client_credentials client_credentials_pkjwt client_credentials_pkjwt_dpop refresh_token agent_auth proxy guarded guarded_dpop)
for s in $SCENARIOS; do
	[[ $s == baseline || " ${all_scenarios[*]} " == *" $s "* ]] ||
		die "unknown scenario '$s' in SCENARIOS (known: ${all_scenarios[*]})"
done
# A DPoP proof is good for dpop_leeway (60 s, the default the generated
# Caddyfile keeps) from its iat, when it was signed: every proof of a run
# is signed right before it, and the run must end within that window.
dpop_leeway_s=60
# How many assertions and proofs are signed per second of a run that sends
# them: more than it can send (a thread that runs out fails the run).
assertions_per_s=20000
proofs_per_s=12000
if [[ " $SCENARIOS " == *" guarded_dpop "* || " $SCENARIOS " == *" client_credentials_pkjwt_dpop "* ]]; then
	(( $(seconds_of "$DURATION") <= 40 )) ||
		die "DURATION $DURATION is too long for guarded_dpop and client_credentials_pkjwt_dpop: their proofs, signed before the run, must be used within the ${dpop_leeway_s} s dpop_leeway (at most 40s)"
fi

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
if [[ -n $PEER_COMPARE ]]; then
	for tool in node npm; do
		command -v "$tool" >/dev/null 2>&1 || die "$tool is required by PEER_COMPARE=1 (oidc-provider runs on Node.js)"
	done
fi
if [[ -n $REV ]]; then
	command -v git >/dev/null 2>&1 || die "git is required by REV"
	git -C "$root" rev-parse --verify -q "$REV^{commit}" >/dev/null || die "REV '$REV' names no commit"
fi
if [[ -n $LIMITER_COMPARE || -n $POSTGRES_COMPARE ]]; then
	for tool in redis-server redis-cli; do
		command -v "$tool" >/dev/null 2>&1 ||
			die "$tool is required by $([[ -n $LIMITER_COMPARE ]] && echo LIMITER_COMPARE || echo POSTGRES_COMPARE)=1 (apt-get install redis-server)"
	done
fi
pg_bin=""
pg_as=() # runs a command as the user PostgreSQL runs as
if [[ -n $POSTGRES_COMPARE ]]; then
	# Debian keeps the server's programs under /usr/lib/postgresql/<version>/bin
	# (the newest is taken); elsewhere they are on PATH.
	for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -t/ -k4,4nr); do
		if [[ -x $d/initdb && -x $d/postgres ]]; then
			pg_bin=$d
			break
		fi
	done
	if [[ -z $pg_bin ]] && command -v initdb >/dev/null 2>&1; then pg_bin=$(dirname "$(command -v initdb)"); fi
	[[ -n $pg_bin ]] || die "PostgreSQL is required by POSTGRES_COMPARE=1 (apt-get install postgresql)"
	for tool in initdb postgres pg_isready createdb psql; do
		[[ -x $pg_bin/$tool ]] || die "$pg_bin/$tool is missing"
	done
	command -v pgrep >/dev/null 2>&1 || die "pgrep is required by POSTGRES_COMPARE=1 (apt-get install procps)"
	# PostgreSQL refuses to run as root: then it runs as the postgres user
	# (setpriv execs, so the pid this script holds is the postmaster's).
	if (( EUID == 0 )); then
		id -u postgres >/dev/null 2>&1 || die "running as root and there is no postgres user to run PostgreSQL as"
		command -v setpriv >/dev/null 2>&1 || die "setpriv is required to run PostgreSQL as the postgres user (apt-get install util-linux)"
		pg_as=(setpriv --reuid=postgres --regid=postgres --init-groups --)
	fi
fi
wrk_pin=()
caddy_pin=()
upstream_pin=()
redis_pin=()
pg_pin=()
if [[ -n $WRK_CPUS ]]; then wrk_pin=(taskset -c "$WRK_CPUS"); fi
if [[ -n $CADDY_CPUS ]]; then caddy_pin=(taskset -c "$CADDY_CPUS"); fi
if [[ -n $UPSTREAM_CPUS ]]; then upstream_pin=(taskset -c "$UPSTREAM_CPUS"); fi
if [[ -n $REDIS_CPUS ]]; then redis_pin=(taskset -c "$REDIS_CPUS"); fi
if [[ -n $POSTGRES_CPUS ]]; then pg_pin=(taskset -c "$POSTGRES_CPUS"); fi

# --- temp dir, cleanup -----------------------------------------------------

tmp=$(mktemp -d "${TMPDIR:-/tmp}/authagent-load.XXXXXX")
caddy_pid="" # the main Caddy (the one every mode starts)
declare -A caddy_pid_of=() admin_of=() # Caddy instance name -> pid, admin port
caddy_order=()                         # instance names, in start order
upstream_pid=""
redis_pid=""
pg_pid=""
pg_dir=""
peer_pid="" # PEER_COMPARE's oidc-provider (node)
hook_pid="" # WEBHOOK_COMPARE's hanging receiver (python3)
wrk_pid=""
# stop_caddy NAME: stop Caddy instance NAME (TERM, then KILL after 5 s).
stop_caddy() {
	local pid=${caddy_pid_of[$1]:-}
	[[ -n $pid ]] || return 0
	stop_pid "$pid"
	unset "caddy_pid_of[$1]"
}
# stop_pid PID: stop a child process (TERM, then KILL after 5 s) and reap it.
stop_pid() {
	if kill -0 "$1" 2>/dev/null; then
		kill "$1" 2>/dev/null || true
		for _ in $(seq 50); do
			kill -0 "$1" 2>/dev/null || break
			sleep 0.1
		done
		kill -9 "$1" 2>/dev/null || true
	fi
	wait "$1" 2>/dev/null || true
}
cleanup() {
	local rc=$? i
	if [[ -n $wrk_pid ]]; then
		kill "$wrk_pid" 2>/dev/null || true # timeout passes it on to wrk
		wait "$wrk_pid" 2>/dev/null || true
	fi
	if [[ -n $upstream_pid ]]; then
		kill "$upstream_pid" 2>/dev/null || true
		wait "$upstream_pid" 2>/dev/null || true
	fi
	if [[ -n $peer_pid ]]; then
		stop_pid "$peer_pid"
	fi
	if [[ -n $hook_pid ]]; then
		stop_pid "$hook_pid"
	fi
	# The last started first: a balancer before the instances behind it.
	for (( i = ${#caddy_order[@]} - 1; i >= 0; i-- )); do
		stop_caddy "${caddy_order[i]}"
	done
	# After Caddy, so that Caddy never sees its limiter store vanish.
	if [[ -n $redis_pid ]]; then
		kill "$redis_pid" 2>/dev/null || true
		wait "$redis_pid" 2>/dev/null || true
	fi
	# The same for the database: fast shutdown (INT), QUIT after 30 s.
	if [[ -n $pg_pid ]]; then
		if kill -0 "$pg_pid" 2>/dev/null; then
			kill -INT "$pg_pid" 2>/dev/null || true
			for _ in $(seq 300); do
				kill -0 "$pg_pid" 2>/dev/null || break
				sleep 0.1
			done
			kill -QUIT "$pg_pid" 2>/dev/null || true
			for _ in $(seq 50); do
				kill -0 "$pg_pid" 2>/dev/null || break
				sleep 0.1
			done
			kill -9 "$pg_pid" 2>/dev/null || true
		fi
		wait "$pg_pid" 2>/dev/null || true
	fi
	if [[ -n $KEEP_TMP ]]; then
		echo "load.sh: kept $tmp" >&2
		if [[ -n $pg_dir ]]; then echo "load.sh: kept $pg_dir (PostgreSQL's data dir)" >&2; fi
	else
		rm -rf "$tmp"
		if [[ -n $pg_dir ]]; then rm -rf "$pg_dir"; fi
	fi
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- build and start -------------------------------------------------------

# What is measured: the working tree, or with REV a commit exported into the
# temp dir (other work in progress in the tree is then left out).
src=$root
if [[ -n $REV ]]; then
	rev_short=$(git -C "$root" rev-parse --short "$REV^{commit}")
	src=$tmp/src
	mkdir -p "$src"
	git -C "$root" archive --format=tar "$rev_short" | tar -x -C "$src"
	build_from="commit $rev_short (git archive of REV=$REV)"
elif rev_short=$(git -C "$root" rev-parse --short HEAD 2>/dev/null); then
	dirty=$(git -C "$root" --no-optional-locks status --porcelain --untracked-files=no 2>/dev/null | grep -c . || true)
	build_from="working tree at $rev_short$( (( dirty == 0 )) || echo " with $dirty changed files")"
else
	build_from="working tree (no git)"
fi
echo "building ./cmd/caddy and ./bench/upstream from the $build_from ..." >&2
(cd "$src" && go build -o "$tmp/caddy" ./cmd/caddy && go build -o "$tmp/upstream" ./bench/upstream &&
	go build -o "$tmp/assertions" ./bench/assertions)
# The private_key_jwt client's key (client_credentials_pkjwt), and the key
# the DPoP proofs are signed with (guarded_dpop, client_credentials_pkjwt_dpop;
# its JWK Set is not used: a proof carries its public key).
"$tmp/assertions" -new -key "$tmp/key_client.pem" -jwks "$tmp/key_client.jwks" || die "making the key client's key"
"$tmp/assertions" -new -key "$tmp/key_dpop.pem" -jwks "$tmp/key_dpop.jwks" || die "making the DPoP key"
if [[ -n $PEER_COMPARE ]]; then
	# The versions package-lock.json pins, into the temp dir (nothing is
	# installed in the tree).
	echo "installing oidc-provider (npm ci, bench/oidc-provider/package-lock.json) ..." >&2
	mkdir -p "$tmp/oidc-provider"
	cp "$here/oidc-provider/package.json" "$here/oidc-provider/package-lock.json" "$here/oidc-provider/server.js" "$tmp/oidc-provider/"
	(cd "$tmp/oidc-provider" && timeout -k 5 300 npm ci --no-audit --no-fund --loglevel=error) >"$tmp/npm.log" 2>&1 ||
		{ cat "$tmp/npm.log" >&2; die "npm ci of bench/oidc-provider failed"; }
	peer_version=$(node -p 'require(process.argv[1]).version' "$tmp/oidc-provider/node_modules/oidc-provider/package.json")
fi

# Seven ports for the main Caddy, its upstream and Redis; nine more for
# POSTGRES_COMPARE (PostgreSQL, its Caddy, the balancer and two instances);
# four for PEER_COMPARE (oidc-provider and its control port, the plain Caddy
# and its admin).
read -r admin_port idp_port base_port proxy_port guarded_port upstream_port redis_port \
	pg_port pgs_admin_port pgs_port lb_admin_port lb_port \
	node_a_admin_port node_a_port node_b_admin_port node_b_port \
	peer_port peer_control_port plain_admin_port plain_port hook_port < <(python3 -c '
import socket
socks = [socket.socket() for _ in range(21)]
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
# POSTGRES_COMPARE: the Caddy with PostgreSQL storage, the balancer (the
# issuer of both instances behind it) and the two instances.
pgs=http://127.0.0.1:$pgs_port
lb=http://127.0.0.1:$lb_port
node_a=http://127.0.0.1:$node_a_port
node_b=http://127.0.0.1:$node_b_port
pg_dsn() { echo "postgres://postgres@127.0.0.1:$pg_port/$1?sslmode=disable"; }
# PEER_COMPARE: oidc-provider (its issuer is its URL; the control port mints
# refresh-token chains) and the plain Caddy.
peer=http://127.0.0.1:$peer_port
peer_control=http://127.0.0.1:$peer_control_port
plain=http://127.0.0.1:$plain_port

client_id=load-site
client_secret=0123456789abcdef0123456789abcdef
key_client_id=load-key-client # private_key_jwt: no secret
redirect_uri=http://127.0.0.1:9/callback
agent_id=load-agent
agent_secret='Test123456!'

alg_line=""
if [[ -n $ACCESS_TOKEN_ALG ]]; then alg_line=$'\n\t\taccess_token_alg '"$ACCESS_TOKEN_ALG"; fi
# idp_caddyfile ADMIN-PORT ISSUER SITE STORAGE API-RATE [STORE...]: on
# stdout, the global options (admin endpoint on ADMIN-PORT, an auth_agent
# block with ISSUER and `storage STORAGE`) and the auth_agent site SITE.
# The api budget is API-RATE, the other budgets are $rate, and the
# rate_limit block has `store STORE...` (default: none, i.e. memory).
idp_caddyfile() {
	local admin=$1 issuer=$2 site=$3 storage=$4 api=$5 store_line=""
	shift 5
	if (($#)); then store_line=$'\n\t\t\tstore '"$*"; fi
	cat <<EOF
{
	admin 127.0.0.1:$admin
	auth_agent {
		issuer $issuer
		storage $storage
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
		client $key_client_id {
			jwks_file $tmp/key_client.jwks
			grant_types client_credentials
			scopes data:read
		}${webhook_lines:-}
	}
}

$site {
	auth_agent
}
EOF
}
# write_caddyfile FILE API-RATE [STORE...]: the main Caddy's Caddyfile
# (idp_caddyfile plus the baseline, proxy and guarded sites) with the api
# budget API-RATE and `store STORE...`. Only the rate_limit block differs
# between the files.
write_caddyfile() {
	local file=$1 api=$2
	shift 2
	{
		idp_caddyfile "$admin_port" "$idp" "$idp" "${STORAGE:-$tmp/db}" "$api" "$@"
		cat <<EOF

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
	} >"$file"
}
# lb_caddyfile FILE UPSTREAM...: the balancer's Caddyfile: the site $lb
# balancing round-robin over the UPSTREAMs (host:port).
lb_caddyfile() {
	local file=$1
	shift
	cat >"$file" <<EOF
{
	admin 127.0.0.1:$lb_admin_port
}

$lb {
	reverse_proxy $* {
		lb_policy round_robin
	}
}
EOF
}
write_caddyfile "$tmp/Caddyfile" "$rate"
# WEBHOOK_COMPARE: the same file plus one webhook to the hanging receiver.
if [[ -n $WEBHOOK_COMPARE ]]; then
	hook_secret=whsec_$(python3 -c 'import base64, os; print(base64.b64encode(os.urandom(32)).decode())')
	webhook_lines=$'\n\t\twebhook http://127.0.0.1:'"$hook_port"$'/hook {\n\t\t\tevents agent.registered\n\t\t\tsecret '"$hook_secret"$'\n\t\t}'
	write_caddyfile "$tmp/Caddyfile.webhook-on" "$rate"
	webhook_lines=""
fi
if [[ -n $LIMITER_COMPARE ]]; then
	write_caddyfile "$tmp/Caddyfile.limiter-off" off memory
	write_caddyfile "$tmp/Caddyfile.limiter-memory" 1000000000/s memory
	write_caddyfile "$tmp/Caddyfile.limiter-redis" 1000000000/s redis "$redis_url"
fi
if [[ -n $POSTGRES_COMPARE ]]; then
	# The main Caddy's auth_agent block but for the storage (and the
	# issuer: the site's own URL).
	idp_caddyfile "$pgs_admin_port" "$pgs" "$pgs" "postgres $(pg_dsn authagent_single)" "$rate" >"$tmp/Caddyfile.postgres"
	# The two instances: the same file but for the ports; the balancer's URL
	# as the issuer, one database, rate limits in Redis.
	idp_caddyfile "$node_a_admin_port" "$lb" "$node_a" "postgres $(pg_dsn authagent_cluster)" "$rate" redis "$redis_url" >"$tmp/Caddyfile.node-a"
	idp_caddyfile "$node_b_admin_port" "$lb" "$node_b" "postgres $(pg_dsn authagent_cluster)" "$rate" redis "$redis_url" >"$tmp/Caddyfile.node-b"
	lb_caddyfile "$tmp/Caddyfile.lb-two" "127.0.0.1:$node_a_port" "127.0.0.1:$node_b_port"
	lb_caddyfile "$tmp/Caddyfile.lb-one" "127.0.0.1:$node_a_port"
fi

if [[ -n $PEER_COMPARE ]]; then
	# The plain Caddy: the same binary, no auth_agent app, one respond site.
	cat >"$tmp/Caddyfile.plain" <<EOF
{
	admin 127.0.0.1:$plain_admin_port
}

$plain {
	respond "ok" 200
}
EOF
fi

# The processes run() measures are named like Caddy instances; PEER_COMPARE's
# oidc-provider (node) is one of those names, though no Caddy.
caddy_log() { # instance name -> its log file
	case $1 in
	main) echo "$tmp/caddy.log" ;;
	oidc-provider) echo "$tmp/oidc-provider.log" ;;
	*) echo "$tmp/caddy-$1.log" ;;
	esac
}
caddy_home() { # instance name -> its HOME (Caddy's own data: autosave.json, ...)
	if [[ $1 == main ]]; then echo "$tmp/home"; else echo "$tmp/home-$1"; fi
}
caddy_label() { # instance name -> how messages name it
	case $1 in
	main) echo caddy ;;
	oidc-provider) echo oidc-provider ;;
	*) echo "caddy $1" ;;
	esac
}
# start_caddy NAME CADDYFILE ADMIN-PORT: start a Caddy instance in the
# background (then wait_ready); its log is caddy_log NAME.
start_caddy() {
	local name=$1 file=$2 home
	home=$(caddy_home "$name")
	(
		cd "$tmp"
		# Caddy keeps its data under $XDG_DATA_HOME/caddy, which must not be the binary.
		mkdir -p "$home"
		export HOME=$home XDG_DATA_HOME=$home XDG_CONFIG_HOME=$home
		exec "${caddy_pin[@]}" "$tmp/caddy" run --config "$file" --adapter caddyfile
	) >"$(caddy_log "$name")" 2>&1 &
	caddy_pid_of[$name]=$!
	admin_of[$name]=$3
	caddy_order+=("$name")
}
# wait_ready NAME URL...: wait until every URL answers 2xx (30 s); die with
# the instance's log if it exits or does not get there. The main instance
# also needs the upstream.
wait_ready() {
	local name=$1 pid=${caddy_pid_of[$1]} url ok log
	log=$(caddy_log "$1")
	shift
	for _ in $(seq 300); do
		kill -0 "$pid" 2>/dev/null || { cat "$log" >&2; die "$(caddy_label "$name") exited during startup"; }
		if [[ $name == main ]]; then
			kill -0 "$upstream_pid" 2>/dev/null || { cat "$tmp/upstream.log" >&2; die "upstream exited during startup"; }
		fi
		ok=1
		for url in "$@"; do
			curl -fsS -o /dev/null --max-time 2 "$url" 2>/dev/null || { ok=""; break; }
		done
		if [[ -n $ok ]]; then return 0; fi
		sleep 0.1
	done
	if [[ $name == main ]]; then
		cat "$log" "$tmp/upstream.log" >&2
		die "caddy or the upstream did not become ready in 30 s"
	fi
	cat "$log" >&2
	die "$(caddy_label "$name") did not become ready in 30 s"
}

if [[ -n $WEBHOOK_COMPARE ]]; then
	# The webhook receiver that hangs: it accepts every connection, reads
	# what comes and never answers (Caddy gives up after its 10 s attempt
	# timeout). One line per connection in hook.log.
	echo "starting the hanging webhook receiver on 127.0.0.1:$hook_port ..." >&2
	python3 -u -c '
import asyncio, sys
async def hang(reader, writer):
    print("accepted", flush=True)
    while await reader.read(65536):
        pass
    writer.close()
async def main():
    server = await asyncio.start_server(hang, "127.0.0.1", int(sys.argv[1]), backlog=1024)
    print("listening", flush=True)
    await server.serve_forever()
asyncio.run(main())
' "$hook_port" >"$tmp/hook.log" 2>&1 &
	hook_pid=$!
	for _ in $(seq 100); do
		grep -q listening "$tmp/hook.log" && break
		kill -0 "$hook_pid" 2>/dev/null || { cat "$tmp/hook.log" >&2; die "the webhook receiver exited during startup"; }
		sleep 0.1
	done
	grep -q listening "$tmp/hook.log" || die "the webhook receiver did not start in 10 s"
fi

echo "starting upstream on $upstream ..." >&2
"${upstream_pin[@]}" "$tmp/upstream" "$upstream" >"$tmp/upstream.log" 2>&1 &
upstream_pid=$!

if [[ -n $LIMITER_COMPARE || -n $POSTGRES_COMPARE ]]; then
	# For the limiter-redis variant and POSTGRES_COMPARE's two instances:
	# nothing persisted, in the foreground (so that its pid is ours and the
	# EXIT trap stops it).
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

if [[ -n $POSTGRES_COMPARE ]]; then
	# A server of its own: a fresh cluster in a temp dir (outside $tmp, which
	# only its owner may enter), trust auth, TCP on 127.0.0.1 only, the unix
	# socket in that dir, everything else (fsync, synchronous_commit) at
	# PostgreSQL's defaults. In the foreground, so that its pid is ours and
	# the EXIT trap stops it.
	pg_dir=$(mktemp -d "${TMPDIR:-/tmp}/authagent-load-pg.XXXXXX")
	if (( EUID == 0 )); then chown postgres: "$pg_dir"; fi
	pg_version=$("$pg_bin/postgres" --version | awk '{ print $3 }')
	echo "initialising PostgreSQL $pg_version in $pg_dir/data ..." >&2
	"${pg_as[@]}" "$pg_bin/initdb" -D "$pg_dir/data" -U postgres --auth=trust -E UTF8 --locale=C >"$tmp/initdb.log" 2>&1 ||
		{ cat "$tmp/initdb.log" >&2; die "initdb failed"; }
	echo "starting PostgreSQL on 127.0.0.1:$pg_port ..." >&2
	"${pg_pin[@]}" "${pg_as[@]}" "$pg_bin/postgres" -D "$pg_dir/data" -p "$pg_port" \
		-c listen_addresses=127.0.0.1 -c unix_socket_directories="$pg_dir" >"$tmp/postgres.log" 2>&1 &
	pg_pid=$!
	ready=""
	for _ in $(seq 300); do
		kill -0 "$pg_pid" 2>/dev/null || { cat "$tmp/postgres.log" >&2; die "postgres exited during startup"; }
		if "$pg_bin/pg_isready" -q -h 127.0.0.1 -p "$pg_port" -U postgres; then
			ready=1
			break
		fi
		sleep 0.1
	done
	[[ -n $ready ]] || { cat "$tmp/postgres.log" >&2; die "postgres did not accept connections in 30 s"; }
	for db in authagent_single authagent_cluster; do
		"$pg_bin/createdb" -h 127.0.0.1 -p "$pg_port" -U postgres "$db" >>"$tmp/initdb.log" 2>&1 ||
			{ cat "$tmp/initdb.log" >&2; die "createdb $db failed"; }
	done
	pg_show() { # SETTING -> the server's value
		"$pg_bin/psql" -h 127.0.0.1 -p "$pg_port" -U postgres -d authagent_single -Atc "show $1" 2>/dev/null || echo '?'
	}
	pg_settings="fsync $(pg_show fsync), synchronous_commit $(pg_show synchronous_commit), shared_buffers $(pg_show shared_buffers)"
fi

echo "starting caddy (auth_agent on $idp, baseline on $base, proxy on $proxy, guarded on $guarded) ..." >&2
start_caddy main "$tmp/Caddyfile" "$admin_port"
caddy_pid=${caddy_pid_of[main]}
wait_ready main "$base/" "$idp/.well-known/openid-configuration" "http://$upstream/"

rss_mib() { # [PID], default Caddy
	awk '/^VmRSS:/ { printf "%.1f", $2 / 1024 }' "/proc/${1:-$caddy_pid}/status"
}
hwm_mib() {
	awk '/^VmHWM:/ { printf "%.1f", $2 / 1024 }' "/proc/$caddy_pid/status"
}
# Caddy's CPU time (user + system) in microseconds.
clk_tck=$(getconf CLK_TCK)
cpu_us() { # [PID], default Caddy
	awk -v hz="$clk_tck" '{ sub(/^.*\) /, ""); printf "%.0f", ($12 + $13) * 1e6 / hz }' "/proc/${1:-$caddy_pid}/stat"
}
# PostgreSQL's CPU time in microseconds: the postmaster and its live
# children (backends, background workers), each with the children it has
# reaped (so a backend that exited still counts).
pg_cpu_us() {
	local p
	for p in "$pg_pid" $(pgrep -P "$pg_pid" || true); do
		cat "/proc/$p/stat" 2>/dev/null || true
	done | awk -v hz="$clk_tck" '{ sub(/^.*\) /, ""); t += $12 + $13 + $14 + $15 } END { printf "%.0f", t * 1e6 / hz }'
}
# CPU time of the whole machine, busy and all, in microseconds (all CPUs).
machine_us() {
	awk -v hz="$clk_tck" '$1 == "cpu" { t = 0; for (i = 2; i <= NF; i++) t += $i; b = t - $5 - $6; printf "%.0f %.0f\n", b * 1e6 / hz, t * 1e6 / hz; exit }' /proc/stat
}
rss_start=$(rss_mib)

if [[ -n $PEER_COMPARE ]]; then
	# oidc-provider on the CPUs Caddy gets, in the foreground (its pid is
	# ours; the EXIT trap stops it).
	echo "starting oidc-provider $peer_version (node $(node --version)) on $peer ..." >&2
	(
		cd "$tmp/oidc-provider"
		export NODE_ENV=production
		exec "${caddy_pin[@]}" node server.js "$peer_port" "$peer_control_port" "$client_id" "$client_secret"
	) >"$tmp/oidc-provider.log" 2>&1 &
	peer_pid=$!
	caddy_pid_of[oidc-provider]=$peer_pid # measured by run() like a Caddy instance
	for _ in $(seq 300); do
		kill -0 "$peer_pid" 2>/dev/null || { cat "$tmp/oidc-provider.log" >&2; die "oidc-provider exited during startup"; }
		if grep -q '^listening on' "$tmp/oidc-provider.log" &&
			curl -fsS -o /dev/null --max-time 2 "$peer/.well-known/openid-configuration" 2>/dev/null; then break; fi
		sleep 0.1
	done
	curl -fsS -o /dev/null --max-time 2 "$peer/.well-known/openid-configuration" ||
		{ cat "$tmp/oidc-provider.log" >&2; die "oidc-provider did not become ready in 30 s"; }
	peer_rss_start=$(rss_mib "$peer_pid")
fi
# peer_chains N FILE: N fresh refresh-token chains from oidc-provider, one per
# line into FILE (its memory adapter is an LRU of 1000 entries: chains made
# long before their run would be gone).
peer_chains() {
	curl -fsS --max-time 30 -o "$2" "$peer_control/chains?n=$1" || die "oidc-provider minted no refresh-token chains"
	(( $(grep -c . "$2") == $1 )) || die "oidc-provider minted too few refresh-token chains"
}

# --- setup: agent, refresh-token chains, probes ----------------------------

# prepare_chains URL FILE...: register the agent at the IdP URL and make
# $chains refresh-token chains per FILE (one set per refresh_token run: a
# run leaves its chains' last tokens unknown), written one set per FILE.
# Leaves prepare.py's message in prep_last.
prepare_chains() {
	local url=$1 all i=0 f
	shift
	all=$1
	if (($# > 1)); then all=$1.all; fi
	echo "preparing at $url: registering $agent_id, making $(( chains * $# )) refresh-token chains ..." >&2
	prep_last=$(python3 "$here/prepare.py" "$url" "$client_id" "$client_secret" "$redirect_uri" \
		"$agent_id" "$agent_secret" "$(( chains * $# ))" "$all")
	echo "$prep_last" >&2
	if (($# > 1)); then
		for f in "$@"; do
			sed -n "$(( i * chains + 1 )),$(( (i + 1) * chains ))p" "$all" >"$f"
			(( $(grep -c . "$f") == chains )) || die "prepare: $f has not $chains chains"
			i=$(( i + 1 ))
		done
	fi
}
# POSTGRES_COMPARE's badger runs go to this Caddy, whose agent can be
# registered only once: their chains are made now.
# So are PEER_COMPARE's, one set per run of ours (set 0: the warm-up's).
if [[ -n $POSTGRES_COMPARE ]]; then
	prepare_chains "$idp" "$tmp/refresh_tokens.txt" "$tmp/refresh_tokens.badger-1.txt" "$tmp/refresh_tokens.badger-2.txt"
elif [[ -n $PEER_COMPARE ]]; then
	files=("$tmp/refresh_tokens.txt")
	for (( i = 0; i <= PEER_RUNS; i++ )); do files+=("$tmp/refresh_tokens.ours-$i.txt"); done
	prepare_chains "$idp" "${files[@]}"
else
	prepare_chains "$idp" "$tmp/refresh_tokens.txt"
fi
prep_msg=$prep_last

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
# sign_assertions FILE N: N client assertions of the private_key_jwt client
# for the token endpoint, one per line into FILE.
sign_assertions() {
	"$tmp/assertions" -key "$tmp/key_client.pem" -client "$key_client_id" -aud "$idp/oauth2/token" -n "$2" -out "$1" ||
		die "signing the client assertions"
}
# sign_proofs FILE N HTM HTU [TOKEN-FILE]: N DPoP proofs by the DPoP key for
# HTM HTU (with the ath of the token in TOKEN-FILE), one per line into FILE.
# Sets proofs_signed_at, when their iat window began.
sign_proofs() {
	proofs_signed_at=$(date +%s)
	"$tmp/assertions" -key "$tmp/key_dpop.pem" -dpop -htm "$3" -htu "$4" ${5:+-token "$5"} -n "$2" -out "$1" ||
		die "signing the DPoP proofs"
}
# check_proof_window NAME: the proofs just signed must still be good at the
# end of the run NAME is about to make (the server takes them dpop_leeway
# from their iat).
check_proof_window() {
	local left
	left=$(( proofs_signed_at + dpop_leeway_s - $(date +%s) - $(seconds_of "$DURATION") ))
	(( left >= 5 )) || die "$1: the DPoP proofs took too long to sign: they would be older than the ${dpop_leeway_s} s dpop_leeway before the run ends (use a shorter DURATION)"
}
probe baseline "$base/"
[[ $(cat "$tmp/probe_baseline.json") == ok ]] || die "probe baseline: unexpected body"
probe client_credentials -X POST -H "$basic" -d 'grant_type=client_credentials&scope=data:read' "$idp/oauth2/token"
sign_assertions "$tmp/probe_assertion.txt" 1
probe client_credentials_pkjwt -X POST -d "grant_type=client_credentials&scope=data:read&client_assertion_type=urn%3Aietf%3Aparams%3Aoauth%3Aclient-assertion-type%3Ajwt-bearer&client_assertion=$(cat "$tmp/probe_assertion.txt")" "$idp/oauth2/token"
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

# The guarded_dpop scenario's token: an agent-auth access token bound to
# the DPoP key (the request carries a proof by it), obtained once and sent
# with the DPoP scheme on every request, each time with a new proof.
sign_proofs "$tmp/probe_proof_agent_auth.txt" 1 POST "$idp/api/agent-auth"
curl -fsS -o "$tmp/dpop_token.json" --max-time 10 -X POST -H 'Content-Type: application/json' \
	-H "DPoP: $(cat "$tmp/probe_proof_agent_auth.txt")" -d "$agent_json" "$idp/api/agent-auth" ||
	die "agent-auth with a DPoP proof for the guarded_dpop token failed"
read -r dpop_token_type dpop_token < <(python3 -c '
import json, sys
d = json.load(open(sys.argv[1]))
d = d.get("data", d)
print(d["token_type"], d["access_token"])
' "$tmp/dpop_token.json") || die "no access_token in $(cat "$tmp/dpop_token.json")"
[[ $dpop_token_type == DPoP ]] || die "agent-auth with a DPoP proof answered token_type $dpop_token_type, want DPoP"
echo "$dpop_token" >"$tmp/dpop_token.txt"
dpop_auth="Authorization: DPoP $dpop_token"
# A proof works once; a bound token needs one, and never passes as Bearer.
sign_proofs "$tmp/probe_proof_guarded.txt" 1 GET "$guarded/" "$tmp/dpop_token.txt"
probe guarded_dpop -H "$dpop_auth" -H "DPoP: $(cat "$tmp/probe_proof_guarded.txt")" "$guarded/"
[[ $(cat "$tmp/probe_guarded_dpop.json") == ok ]] || die "probe guarded_dpop: unexpected body (not the upstream's)"
probe_code guarded_dpop_replayed 401 -H "$dpop_auth" -H "DPoP: $(cat "$tmp/probe_proof_guarded.txt")" "$guarded/"
probe_code guarded_dpop_no_proof 401 -H "$dpop_auth" "$guarded/"
probe_code guarded_dpop_as_bearer 401 -H "Authorization: Bearer $dpop_token" "$guarded/"
for p in replayed:invalid_dpop_proof no_proof:invalid_dpop_proof as_bearer:invalid_token; do
	grep -q "\"error\":\"${p#*:}\"" "$tmp/probe_guarded_dpop_${p%%:*}.json" ||
		die "probe guarded_dpop_${p%%:*}: want error ${p#*:}, got $(cat "$tmp/probe_guarded_dpop_${p%%:*}.json")"
done
sign_assertions "$tmp/probe_assertion.txt" 1
sign_proofs "$tmp/probe_proof_token.txt" 1 POST "$idp/oauth2/token"
probe client_credentials_pkjwt_dpop -X POST -H "DPoP: $(cat "$tmp/probe_proof_token.txt")" -d "grant_type=client_credentials&scope=data:read&client_assertion_type=urn%3Aietf%3Aparams%3Aoauth%3Aclient-assertion-type%3Ajwt-bearer&client_assertion=$(cat "$tmp/probe_assertion.txt")" "$idp/oauth2/token"
[[ $(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["token_type"])' "$tmp/probe_client_credentials_pkjwt_dpop.json") == DPoP ]] ||
	die "probe client_credentials_pkjwt_dpop: not a DPoP-bound token: $(cat "$tmp/probe_client_credentials_pkjwt_dpop.json")"

if [[ -n $PEER_COMPARE ]]; then
	json_field() { # FILE FIELD -> the field of the JSON object in FILE
		python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$1" "$2" ||
			die "no $2 in $(cat "$1")"
	}
	jwt_alg() { # JWT -> the alg of its header
		python3 -c '
import base64, json, sys
h = sys.argv[1].split(".")[0]
print(json.loads(base64.urlsafe_b64decode(h + "=" * (-len(h) % 4)))["alg"])
' "$1"
	}
	# The same client_credentials request as ours, answered with an ES256 JWT.
	probe peer_client_credentials -X POST -H "$basic" -d 'grant_type=client_credentials&scope=data:read' "$peer/token"
	peer_cc_alg=$(jwt_alg_of "$tmp/probe_peer_client_credentials.json")
	[[ $cc_alg == ES256 && $peer_cc_alg == ES256 ]] ||
		die "client_credentials access tokens are $cc_alg (auth_agent) and $peer_cc_alg (oidc-provider), want ES256 on both"
	# The tokens introspected: ours a client_credentials access token (an
	# ES256 JWT); oidc-provider's an opaque one, since it refuses to
	# introspect JWTs.
	ours_introspect_token=$(json_field "$tmp/probe_client_credentials.json" access_token)
	probe peer_opaque_token -X POST -H "$basic" -d 'grant_type=client_credentials&scope=data:read&resource=urn:bench:opaque' "$peer/token"
	peer_introspect_token=$(json_field "$tmp/probe_peer_opaque_token.json" access_token)
	echo "$ours_introspect_token" >"$tmp/introspect_token.ours"
	echo "$peer_introspect_token" >"$tmp/introspect_token.peer"
	probe introspection -X POST -H "$basic" -d "token=$ours_introspect_token" "$idp/oauth2/introspect"
	probe peer_introspection -X POST -H "$basic" -d "token=$peer_introspect_token" "$peer/token/introspection"
	for f in introspection peer_introspection; do
		[[ $(json_field "$tmp/probe_$f.json" active) == True ]] || die "probe $f: not active: $(cat "$tmp/probe_$f.json")"
	done
	# One rotation on a chain of its own: the token kinds oidc-provider signs.
	peer_chains 1 "$tmp/peer_refresh_tokens.probe"
	probe peer_refresh_token -X POST -H "$basic" -d "grant_type=refresh_token&refresh_token=$(cat "$tmp/peer_refresh_tokens.probe")" "$peer/token"
	peer_refresh_algs="access_token $(jwt_alg "$(json_field "$tmp/probe_peer_refresh_token.json" access_token)"), id_token $(jwt_alg "$(json_field "$tmp/probe_peer_refresh_token.json" id_token)")"
	json_field "$tmp/probe_peer_refresh_token.json" refresh_token >/dev/null
fi

rss_idle=$(rss_mib)
load_before=$(cut -d' ' -f1-3 /proc/loadavg)

# --- scenarios -------------------------------------------------------------

declare -A R # "<run or scenario>.<key>" -> value
selected() { [[ " $SCENARIOS " == *" $1 "* ]]; }
# Report order, which is also the run order. The proxy/guarded pair runs
# right after the baseline, before the IdP scenarios write to storage, so
# that no storage background work (badger compaction) lands on the pair.
scenarios=(baseline)
pair=()
for s in proxy guarded guarded_dpop; do
	if selected "$s"; then pair+=("$s"); fi
done
scenarios+=(${pair[@]+"${pair[@]}"})
in_pair() { [[ " ${pair[*]-} " == *" $1 "* ]]; }
# LIMITER_COMPARE: guarded under three rate_limit configs, right after the
# pair for the same reason. Caddy is reloaded into each variant's Caddyfile
# and, after the six runs, back into the starting one for the IdP scenarios.
limiter_variants=(off memory redis)
if [[ -n $LIMITER_COMPARE ]]; then
	for v in "${limiter_variants[@]}"; do scenarios+=("limiter-$v"); done
fi
# The client_credentials scenarios, like the pair, run alternating, twice
# each, when two or more are selected: their ratios are the point.
cc_group=()
for s in client_credentials client_credentials_pkjwt client_credentials_pkjwt_dpop; do
	if selected "$s"; then cc_group+=("$s"); fi
done
scenarios+=(${cc_group[@]+"${cc_group[@]}"})
for s in refresh_token agent_auth; do
	if selected "$s"; then scenarios+=("$s"); fi
done
# WEBHOOK_COMPARE: registration without and with the hanging webhook,
# after everything else (its registrations write storage).
webhook_variants=(off on)
if [[ -n $WEBHOOK_COMPARE ]]; then
	for v in "${webhook_variants[@]}"; do scenarios+=("webhook-$v"); done
fi

# Commands redis-server has processed so far (each INFO counts itself).
redis_cmds() {
	redis-cli -h 127.0.0.1 -p "$redis_port" info stats | tr -d '\r' |
		awk -F: '$1 == "total_commands_processed" { print $2 }'
}

# caddy_reload NAME FILE: reload Caddy instance NAME (caddy reload through
# its admin endpoint, --force) into FILE; the process and its listeners stay.
caddy_reload() {
	local name=$1 file=$2 home
	home=$(caddy_home "$name")
	echo "reloading $(caddy_label "$name") with $(basename "$file") ..." >&2
	(
		cd "$tmp"
		export HOME=$home XDG_DATA_HOME=$home XDG_CONFIG_HOME=$home
		"$tmp/caddy" reload --config "$file" --adapter caddyfile --address "127.0.0.1:${admin_of[$name]}" --force
	) >>"$tmp/reload.log" 2>&1 || { tail -n 20 "$tmp/reload.log" >&2; die "$(caddy_label "$name") reload with $file failed"; }
	kill -0 "${caddy_pid_of[$name]}" 2>/dev/null || { tail -n 30 "$(caddy_log "$name")" >&2; die "$(caddy_label "$name") exited on reload"; }
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
	caddy_reload main "$file"
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

# admin_json PATH: GET the main Caddy's admin PATH (JSON on stdout).
admin_json() { curl -fsS --max-time 10 "http://127.0.0.1:$admin_port$1"; }
# webhook_to VARIANT: reload Caddy into the webhook variant (off: the
# starting Caddyfile; on: with the hanging webhook) and check that the
# admin API lists the webhooks the variant has; off then waits (60 s at
# most) until no listed delivery is pending, so that failing the on runs'
# leftovers (their webhook is gone) is not measured.
webhook_to() {
	local v=$1 file=$tmp/Caddyfile want=0 n pending
	if [[ $v == on ]]; then file=$tmp/Caddyfile.webhook-on want=1; fi
	caddy_reload main "$file"
	n=$(admin_json /auth_agent/webhooks | python3 -c 'import json, sys; print(len(json.load(sys.stdin)["webhooks"]))') ||
		die "GET /auth_agent/webhooks failed after reload to webhook-$v"
	(( n == want )) || die "after reload to webhook-$v: $n webhooks listed, want $want"
	if [[ $v == off ]]; then
		for _ in $(seq 600); do
			pending=$(admin_json '/auth_agent/webhooks/deliveries?limit=1000' |
				python3 -c 'import json, sys; print(sum(d["state"] == "pending" for d in json.load(sys.stdin)["deliveries"]))') || pending=-1
			(( pending == 0 )) && break
			sleep 0.1
		done
		(( pending == 0 )) || die "after reload to webhook-off: $pending deliveries still pending after 60 s"
	fi
}
# webhook_counts: "delivered pending failed" of the listed deliveries.
webhook_counts() {
	admin_json '/auth_agent/webhooks/deliveries?limit=1000' | python3 -c '
import collections, json, sys
c = collections.Counter(d["state"] for d in json.load(sys.stdin)["deliveries"])
print(c["delivered"], c["pending"], c["failed"])'
}

# The Caddy instances a run measures (CPU time, RSS; the first one is
# profiled with PROFILE=1): the main Caddy, except in POSTGRES_COMPARE's
# runs of the other instances.
measured=(main)

# run NAME SCRIPT URL [wrk options...] [-- script args...]: one wrk run of
# lua/SCRIPT.lua, its results stored under NAME. cpu_us is the CPU time of
# the measured Caddy instances together (cpu_us@INSTANCE each), rss their
# RSS together.
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
	# run_duration, if set, overrides DURATION (PEER_COMPARE's warm-up runs).
	local duration=${run_duration:-$DURATION} dur_s
	dur_s=$(seconds_of "$duration")
	echo "running $name for $duration ($THREADS threads, $conns connections) ..." >&2
	local prof_pid=""
	# (Caddy's admin endpoint; oidc-provider has none.)
	if [[ -n $PROFILE && -n ${admin_of[${measured[0]}]:-} ]] && (( dur_s >= 3 )); then
		curl -sS -o "$tmp/$name.pprof" --max-time $((dur_s + 10)) \
			"http://127.0.0.1:${admin_of[${measured[0]}]}/debug/pprof/profile?seconds=$((dur_s - 1))" &
		prof_pid=$!
	fi
	local n up0 busy0 total0 busy1 total1 rcpu0="" rcmd0="" pcpu0="" sum rss
	local -A cpu0=()
	for n in "${measured[@]}"; do cpu0[$n]=$(cpu_us "${caddy_pid_of[$n]}"); done
	up0=$(cpu_us "$upstream_pid")
	if [[ -n $pg_pid ]]; then pcpu0=$(pg_cpu_us); fi
	if [[ -n $redis_pid ]]; then
		rcpu0=$(cpu_us "$redis_pid")
		rcmd0=$(redis_cmds)
	fi
	read -r busy0 total0 < <(machine_us)
	# wrk stops by itself after -d; timeout is only a backstop. wrk runs in
	# the background so that a signal to this script interrupts the wait and
	# the EXIT trap stops wrk and Caddy at once.
	timeout -k 5 $((dur_s + 30)) "${wrk_pin[@]}" wrk -t "$THREADS" -c "$conns" -d "$duration" --latency \
		-s "$tmp/$script.lua" ${opts[@]+"${opts[@]}"} "$url" ${args[@]+"${args[@]}"} >"$tmp/$name.out" 2>&1 &
	wrk_pid=$!
	if ! wait "$wrk_pid"; then
		wrk_pid=""
		cat "$tmp/$name.out" >&2
		die "wrk failed in scenario $name"
	fi
	wrk_pid=""
	for n in "${measured[@]}"; do
		kill -0 "${caddy_pid_of[$n]}" 2>/dev/null || { tail -n 30 "$(caddy_log "$n")" >&2; die "$(caddy_label "$n") died during $name"; }
	done
	kill -0 "$upstream_pid" 2>/dev/null || { tail -n 30 "$tmp/upstream.log" >&2; die "the upstream died during $name"; }
	sum=0
	for n in "${measured[@]}"; do
		R[$name.cpu_us@$n]=$(( $(cpu_us "${caddy_pid_of[$n]}") - ${cpu0[$n]} ))
		sum=$(( sum + ${R[$name.cpu_us@$n]} ))
	done
	R[$name.cpu_us]=$sum
	R[$name.up_cpu_us]=$(( $(cpu_us "$upstream_pid") - up0 ))
	if [[ -n $pg_pid ]]; then
		kill -0 "$pg_pid" 2>/dev/null || { tail -n 30 "$tmp/postgres.log" >&2; die "postgres died during $name"; }
		R[$name.pg_cpu_us]=$(( $(pg_cpu_us) - pcpu0 ))
	fi
	if [[ -n $redis_pid ]]; then
		kill -0 "$redis_pid" 2>/dev/null || { tail -n 30 "$tmp/redis.log" >&2; die "redis-server died during $name"; }
		R[$name.redis_cpu_us]=$(( $(cpu_us "$redis_pid") - rcpu0 ))
		R[$name.redis_cmds]=$(( $(redis_cmds) - rcmd0 ))
	fi
	read -r busy1 total1 < <(machine_us)
	R[$name.busy_us]=$(( busy1 - busy0 ))
	R[$name.total_us]=$(( total1 - total0 ))
	rss=()
	for n in "${measured[@]}"; do rss+=("$(rss_mib "${caddy_pid_of[$n]}")"); done
	R[$name.rss]=$(printf '%s\n' "${rss[@]}" | awk '{ t += $1 } END { printf "%.1f", t }')
	if [[ -n $prof_pid ]]; then
		if wait "$prof_pid"; then
			echo "--- CPU profile of caddy during $name (top functions, cumulative)" >&2
			go tool pprof -top -cum -nodecount=25 "$tmp/caddy" "$tmp/$name.pprof" 2>/dev/null | sed -n '4,$p' >&2 || true
			if [[ $script == guarded || $script == guarded_dpop ]]; then
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
	for k in redis_cpu_us redis_cmds pg_cpu_us "${measured[@]/#/cpu_us@}"; do
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

# median: the median of the numbers on stdin, one per line.
median() {
	sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
# merge_median NAME RUN...: NAME's results from its runs (PEER_COMPARE):
# req/s, p50 and p99 are the medians of the runs' (each on its own); counts
# and CPU time are sums, as in merge; RSS is the largest after any run. The
# runs' req/s, in run order, are kept in NAME.runs_rps.
merge_median() {
	local name=$1 r k
	shift
	for k in requests duration_us non2xx connect read write timeout cpu_us up_cpu_us busy_us total_us; do
		R[$name.$k]=0
		for r in "$@"; do R[$name.$k]=$(( ${R[$name.$k]} + ${R[$r.$k]} )); done
	done
	for k in p50_us p99_us; do
		R[$name.$k]=$(for r in "$@"; do echo "${R[$r.$k]}"; done | median | awk '{ printf "%.0f", $1 }')
	done
	R[$name.runs_rps]=$(for r in "$@"; do rps_of "$r"; echo; done | paste -sd' ' -)
	R[$name.rps]=$(tr ' ' '\n' <<<"${R[$name.runs_rps]}" | median | awk '{ printf "%.1f", $1 }')
	R[$name.rss]=$(for r in "$@"; do echo "${R[$r.rss]}"; done | sort -g | tail -n 1)
	R[$name.statuses]=$(merge_counts $(for r in "$@"; do echo "${R[$r.statuses]}"; done))
	R[$name.notes]=$(merge_counts $(for r in "$@"; do echo "${R[$r.notes]}"; done))
	R[$name.how]="median of $#"
}

# requests/s of a run or scenario: the mean of its runs when merged.
rps_of() {
	if [[ -n ${R[$1.rps]:-} ]]; then
		echo "${R[$1.rps]}"
		return
	fi
	awk -v n="${R[$1.requests]}" -v us="${R[$1.duration_us]}" 'BEGIN { printf "%.1f", n / (us / 1e6) }'
}

# run_idp NAME SCENARIO IDP-URL [CHAIN-FILE]: one run of client_credentials
# or refresh_token (with CHAIN-FILE's chains) against the IdP at IDP-URL.
run_idp() {
	case $2 in
	client_credentials) run "$1" client_credentials "$3/oauth2/token" -H "$basic" ;;
	refresh_token) run "$1" refresh_token "$3/oauth2/token" -H "$basic" -- "$4" "$THREADS" ;;
	esac
}
# access_token_of FILE: the access token in an agent-auth answer.
access_token_of() {
	python3 -c '
import json, sys
d = json.load(open(sys.argv[1]))
print(d.get("data", d)["access_token"])
' "$1" || die "no access_token in $(cat "$1")"
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
	guarded_dpop)
		# Signed just before the run: proofs_per_s per second of it, more
		# than a run can send.
		echo "signing $((proofs_per_s * $(seconds_of "$DURATION"))) DPoP proofs for GET $guarded/ ..." >&2
		sign_proofs "$tmp/proofs.txt" $((proofs_per_s * $(seconds_of "$DURATION"))) GET "$guarded/" "$tmp/dpop_token.txt"
		check_proof_window "guarded_dpop-$2"
		run "guarded_dpop-$2" guarded_dpop "$guarded/" -H "$dpop_auth" -- "$tmp/proofs.txt" "$THREADS"
		;;
	esac
}

# run_cc_member SCENARIO NAME: one run of a client_credentials scenario,
# stored as NAME. The assertions and proofs are signed just before the run
# (assertions are good for five minutes, proofs for dpop_leeway):
# assertions_per_s and proofs_per_s per second of it, more than a run can
# send.
run_cc_member() {
	local n_a=$((assertions_per_s * $(seconds_of "$DURATION"))) n_p=$((proofs_per_s * $(seconds_of "$DURATION")))
	case $1 in
	client_credentials) run_idp "$2" client_credentials "$idp" ;;
	client_credentials_pkjwt)
		echo "signing $n_a client assertions ..." >&2
		sign_assertions "$tmp/assertions.txt" "$n_a"
		run "$2" client_credentials_pkjwt "$idp/oauth2/token" -- "$tmp/assertions.txt" "$THREADS"
		;;
	client_credentials_pkjwt_dpop)
		echo "signing $n_p client assertions and $n_p DPoP proofs for POST $idp/oauth2/token ..." >&2
		sign_assertions "$tmp/assertions.txt" "$n_p"
		sign_proofs "$tmp/proofs.txt" "$n_p" POST "$idp/oauth2/token"
		check_proof_window "$2"
		run "$2" client_credentials_pkjwt_dpop "$idp/oauth2/token" -- "$tmp/assertions.txt" "$tmp/proofs.txt" "$THREADS"
		;;
	esac
}

for s in "${scenarios[@]}"; do
	case $s in
	baseline) run baseline baseline "$base/" ;;
	client_credentials | client_credentials_pkjwt | client_credentials_pkjwt_dpop)
		if (( ${#cc_group[@]} == 1 )); then
			run_cc_member "$s" "$s"
		else
			# The selected ones, twice, alternating: client_credentials-1
			# client_credentials_pkjwt-1 client_credentials_pkjwt_dpop-1
			# client_credentials-2 ...
			if [[ $s == "${cc_group[0]}" ]]; then
				for i in 1 2; do
					for c in "${cc_group[@]}"; do run_cc_member "$c" "$c-$i"; done
				done
			fi
			merge "$s" "$s-1" "$s-2"
		fi
		;;
	refresh_token) run_idp refresh_token refresh_token "$idp" "$tmp/refresh_tokens.txt" ;;
	agent_auth) run agent_auth agent_auth "$idp/api/agent-auth" -- "$agent_id" "$agent_secret" ;;
	proxy | guarded | guarded_dpop)
		# The whole pair (with guarded_dpop, the trio), twice, alternating:
		# proxy-1 guarded-1 guarded_dpop-1 proxy-2 guarded-2 guarded_dpop-2.
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
	webhook-*)
		# Both variants, twice, alternating: off-1 on-1 off-2 on-2, each
		# after a reload into its Caddyfile; agent ids unique per run.
		if [[ $s == "webhook-${webhook_variants[0]}" ]]; then
			for i in 1 2; do
				for v in "${webhook_variants[@]}"; do
					webhook_to "$v"
					run "webhook-$v-$i" registration "$idp/api/register-agent" -- "wh$v$i"
					if [[ $v == on ]]; then read -r wh_delivered wh_pending wh_failed < <(webhook_counts); fi
				done
			done
			webhook_to off
			hook_connections=$(grep -c accepted "$tmp/hook.log" || true)
		fi
		merge "$s" "$s-1" "$s-2"
		;;
	esac
done

# --- PEER_COMPARE ----------------------------------------------------------

# cmp_run SCENARIO SIDE I: run I of SIDE (ours, or base: the baseline) of a
# PEER_COMPARE scenario, stored as cmp-SCENARIO-SIDE-I (the plain Caddy's
# runs as cmp-plain-I).
cmp_run() {
	local s=$1 side=$2 i=$3 name=cmp-$1-$2-$3
	measured=(main)
	case $s/$side in
	guard/ours) run "$name" guarded "$guarded/" -H "$bearer" ;;
	guard/base) run "$name" proxy "$proxy/" -H "$bearer" ;;
	client_credentials/ours) run "$name" client_credentials "$idp/oauth2/token" -H "$basic" ;;
	introspection/ours) run "$name" introspection "$idp/oauth2/introspect" -H "$basic" -- "$tmp/introspect_token.ours" ;;
	refresh_token/ours) run "$name" refresh_token "$idp/oauth2/token" -H "$basic" -- "$tmp/refresh_tokens.ours-$i.txt" "$THREADS" ;;
	client_credentials/base)
		measured=(oidc-provider)
		run "$name" client_credentials "$peer/token" -H "$basic"
		;;
	introspection/base)
		measured=(oidc-provider)
		run "$name" introspection "$peer/token/introspection" -H "$basic" -- "$tmp/introspect_token.peer"
		;;
	refresh_token/base)
		peer_chains "$chains" "$tmp/peer_refresh_tokens.$i.txt"
		measured=(oidc-provider)
		run "$name" refresh_token "$peer/token" -H "$basic" -- "$tmp/peer_refresh_tokens.$i.txt" "$THREADS"
		;;
	rss/plain)
		measured=(plain)
		run "cmp-plain-$i" baseline "$plain/"
		;;
	esac
	measured=(main)
}
peer_selected() { [[ " $PEER_SCENARIOS " == *" $1 "* ]]; }
cmp_scenarios=() # the PEER_COMPARE scenarios measured side by side, in run order
cmp_rows=()      # their rows in the table
if [[ -n $PEER_COMPARE ]]; then
	# The guard pair first, before the IdP scenarios write to storage (as
	# for proxy and guarded). Per scenario the sides alternate, the first
	# side changing every round (ours, base; base, ours; ours, base; ...)
	# so that drift in the machine's speed falls on both alike.
	for s in guard client_credentials introspection refresh_token; do
		if peer_selected "$s"; then cmp_scenarios+=("$s"); fi
	done
	for s in ${cmp_scenarios[@]+"${cmp_scenarios[@]}"}; do
		# Run 0, PEER_WARMUP long and not counted, warms both sides up
		# (node's JIT above all: a cold oidc-provider answers half as fast).
		if [[ $PEER_WARMUP != 0 ]]; then
			for side in ours base; do
				run_duration=$PEER_WARMUP cmp_run "$s" "$side" 0
				r=cmp-$s-$side-0
				(( ${R[$r.non2xx]} == 0 )) && [[ ${R[$r.notes]} == - ]] ||
					die "warm-up $r: statuses ${R[$r.statuses]}, events ${R[$r.notes]}"
			done
		fi
		for (( i = 1; i <= PEER_RUNS; i++ )); do
			if (( i % 2 )); then sides=(ours base); else sides=(base ours); fi
			for side in "${sides[@]}"; do cmp_run "$s" "$side" "$i"; done
		done
		for side in ours base; do
			runs=()
			for (( i = 1; i <= PEER_RUNS; i++ )); do runs+=("cmp-$s-$side-$i"); done
			merge_median "cmp-$s-$side" "${runs[@]}"
			cmp_rows+=("cmp-$s-$side")
		done
	done
	if peer_selected rss; then
		# Last, so that it shares the machine with nothing but the idle
		# main Caddy and oidc-provider: its idle RSS right after it is ready
		# (as rss_start is ours), then under the same wrk load on its
		# respond site.
		echo "starting the plain caddy ($plain: respond only, no auth_agent app) ..." >&2
		start_caddy plain "$tmp/Caddyfile.plain" "$plain_admin_port"
		wait_ready plain "$plain/"
		plain_rss_start=$(rss_mib "${caddy_pid_of[plain]}")
		runs=()
		for (( i = 1; i <= PEER_RUNS; i++ )); do
			cmp_run rss plain "$i"
			runs+=("cmp-plain-$i")
		done
		merge_median cmp-plain "${runs[@]}"
		cmp_rows+=(cmp-plain)
	fi
fi

# --- POSTGRES_COMPARE ------------------------------------------------------

pg_scenarios=(client_credentials refresh_token)
pg_sides=(badger postgres)  # part 1: the storage, one Caddy each
pg_counts=(one two)         # part 2: instances behind the balancer
pg_rows=()
if [[ -n $POSTGRES_COMPARE ]]; then
	# Part 1: this (main) Caddy with Badger vs a Caddy with the same
	# auth_agent block on PostgreSQL. Both run throughout; each run measures
	# the one it loads.
	echo "starting caddy postgres (auth_agent on $pgs, storage postgres $(pg_dsn authagent_single)) ..." >&2
	start_caddy postgres "$tmp/Caddyfile.postgres" "$pgs_admin_port"
	wait_ready postgres "$pgs/.well-known/openid-configuration"
	grep -q 'migrated the database schema' "$(caddy_log postgres)" ||
		echo "load.sh: caddy postgres did not log 'migrated the database schema'" >&2
	prepare_chains "$pgs" "$tmp/refresh_tokens.postgres-1.txt" "$tmp/refresh_tokens.postgres-2.txt"
	prep_postgres=$prep_last
	probe postgres_client_credentials -X POST -H "$basic" -d 'grant_type=client_credentials&scope=data:read' "$pgs/oauth2/token"
	# Each scenario: badger-1 postgres-1 badger-2 postgres-2.
	for s in "${pg_scenarios[@]}"; do
		for i in 1 2; do
			for side in "${pg_sides[@]}"; do
				if [[ $side == badger ]]; then
					measured=(main)
					url=$idp
				else
					measured=(postgres)
					url=$pgs
				fi
				run_idp "$s-$side-$i" "$s" "$url" "$tmp/refresh_tokens.$side-$i.txt"
			done
		done
		for side in "${pg_sides[@]}"; do
			merge "$s-$side" "$s-$side-1" "$s-$side-2"
			pg_rows+=("$s-$side")
		done
	done
	stop_caddy postgres # its log stays for the report

	# Part 2: two instances on one database (and one Redis), both with the
	# balancer's URL as issuer, behind a balancer; it is reloaded between
	# the runs to balance over both (two) or over node-a alone (one, node-b
	# idle). The proxy hop is in both.
	echo "starting caddy node-a ($node_a) and node-b ($node_b): storage postgres $(pg_dsn authagent_cluster), rate_limit store redis $redis_url, issuer $lb ..." >&2
	# At once, as a deploy would: one of them creates the schema under the
	# migration lock while the other waits.
	start_caddy node-a "$tmp/Caddyfile.node-a" "$node_a_admin_port"
	start_caddy node-b "$tmp/Caddyfile.node-b" "$node_b_admin_port"
	wait_ready node-a "$node_a/.well-known/openid-configuration"
	wait_ready node-b "$node_b/.well-known/openid-configuration"
	echo "starting caddy lb ($lb: reverse_proxy round_robin over node-a and node-b) ..." >&2
	start_caddy lb "$tmp/Caddyfile.lb-two" "$lb_admin_port"
	wait_ready lb "$lb/.well-known/openid-configuration"
	# Through the balancer, so that every chain's steps (authorize,
	# agent-auth, code exchange, first rotation) alternate between the
	# instances.
	prepare_chains "$lb" "$tmp/refresh_tokens.one-1.txt" "$tmp/refresh_tokens.two-1.txt" \
		"$tmp/refresh_tokens.one-2.txt" "$tmp/refresh_tokens.two-2.txt"
	prep_cluster=$prep_last
	# A token one instance issues is good at the other (shared keys, same
	# issuer), both ways.
	for hop in "$node_a $node_b" "$node_b $node_a"; do
		read -r from to <<<"$hop"
		probe "cross_auth_${from##*:}" -X POST -H 'Content-Type: application/json' -d "$agent_json" "$from/api/agent-auth"
		tok=$(access_token_of "$tmp/probe_cross_auth_${from##*:}.json")
		probe "cross_profile_${to##*:}" -H "Authorization: Bearer $tok" "$to/api/agents/profile"
	done
	# Each scenario: one-1 two-1 one-2 two-2, the balancer reloaded into
	# lb-<count> before each run and probed once through.
	for s in "${pg_scenarios[@]}"; do
		for i in 1 2; do
			for c in "${pg_counts[@]}"; do
				caddy_reload lb "$tmp/Caddyfile.lb-$c"
				probe "lb_$c" -X POST -H "$basic" -d 'grant_type=client_credentials&scope=data:read' "$lb/oauth2/token"
				measured=(node-a node-b lb)
				run_idp "$s-$c-$i" "$s" "$lb" "$tmp/refresh_tokens.$c-$i.txt"
			done
		done
		for c in "${pg_counts[@]}"; do
			merge "$s-$c" "$s-$c-1" "$s-$c-2"
			pg_rows+=("$s-$c")
		done
	done
	measured=(main)
fi

# --- report ----------------------------------------------------------------

# Every Caddy's log: caddy.log (the main one) and caddy-<instance>.log.
family_revocations=$(cat "$tmp"/caddy*.log | grep -c 'revoking its family' || true)
# "context canceled" is a request wrk dropped when its time was up.
# A registration wrk dropped is cancelled inside argon2id's queue, which
# answers "the server is busy" (503): counted apart too, and no more than
# one per connection and run may be.
busy_dropped='"path":"/api/register-agent","error":"temporarily_unavailable: the server is busy; retry"'
server_errors=$(cat "$tmp"/caddy*.log | grep '"request failed"' | grep -v 'context canceled' | grep -vcF "$busy_dropped" || true)
register_dropped=$(cat "$tmp"/caddy*.log | grep '"request failed"' | grep -cF "$busy_dropped" || true)
if [[ -z $WEBHOOK_COMPARE ]] || (( register_dropped > 4 * conns )); then
	server_errors=$(( server_errors + register_dropped ))
fi
# A failing limiter store lets API calls through (on_store_error api open),
# which would make a broken Redis look cheap. "context canceled" is again a
# request wrk dropped (Redis is only reached with POSTGRES_COMPARE or
# LIMITER_COMPARE): counted apart.
store_failures=$(cat "$tmp"/caddy*.log | grep 'rate limiter store failed' | grep -vc 'context canceled' || true)
store_canceled=$(cat "$tmp"/caddy*.log | grep 'rate limiter store failed' | grep -c 'context canceled' || true)

ms() { awk -v us="$1" 'BEGIN { printf "%.2f", us / 1000 }'; }

base_rps=$(rps_of baseline)
failed=0
echo
runs_note=()
if (( ${#pair[@]} > 0 )); then runs_note+=("$(printf '%s, ' "${pair[@]}" | sed 's/, $//'): 2 runs each"); fi
if (( ${#cc_group[@]} > 1 )); then runs_note+=("$(printf '%s, ' "${cc_group[@]}" | sed 's/, $//'): 2 runs each"); fi
if [[ -n $LIMITER_COMPARE ]]; then runs_note+=("guarded/limiter-off, -memory, -redis: 2 runs each"); fi
if [[ -n $POSTGRES_COMPARE ]]; then runs_note+=("postgres compare: 2 runs per row"); fi
if [[ -n $PEER_COMPARE ]]; then runs_note+=("peer compare: $PEER_RUNS runs per side"); fi
if [[ -n $WEBHOOK_COMPARE ]]; then runs_note+=("registration/webhook-off, -on: 2 runs each"); fi
runs_text=$( (( ${#runs_note[@]} == 0 )) || printf '%s; ' "${runs_note[@]}")
echo "auth_agent load test: $DURATION per run${runs_text:+ (${runs_text%; })}, $THREADS wrk threads, $conns connections, $(nproc) CPUs, load average before the runs $load_before"
echo "built from the $build_from; $(date -u '+%Y-%m-%d %H:%M UTC')"
echo "caddy $("$tmp/caddy" version | awk '{print $1}'), $(go env GOVERSION); storage ${STORAGE:-badger}, rate_limit $rate, proxy $([[ -n $PROXY_TOKEN ]] && echo with || echo without) the bearer token, access_token_alg ${ACCESS_TOKEN_ALG:-default} (client_credentials token $cc_alg, agent-auth token $aa_alg)"
echo "$prep_msg"
if selected guarded_dpop || selected client_credentials_pkjwt_dpop; then
	# Badger and memory storage are this process's alone: the proofs' jti
	# are recorded in memory; a shared store records them there as well.
	replays_where="in Caddy's memory (LocalReplays: storage ${STORAGE:-badger} is not shared)"
	if [[ $STORAGE == postgres* ]]; then replays_where="in Caddy's memory and in PostgreSQL (SharedReplays: the storage is shared)"; fi
	echo "dpop: ES256 proofs (one key, made for this invocation) signed right before each run that sends them, each sent once; dpop_leeway ${dpop_leeway_s}s (the default); proof jti records $replays_where; guarded_dpop token: agent-auth with a proof, token_type DPoP, sent as Authorization: DPoP"
fi
if [[ -n $LIMITER_COMPARE ]]; then
	redis_version=$(redis-server --version | awk '{ sub(/^v=/, "", $3); print $3 }')
	echo "limiter compare (one Caddy, reloaded per variant): limiter-off = rate_limit api off; limiter-memory = api 1000000000/s, store memory; limiter-redis = api 1000000000/s, store redis $redis_url (redis-server $redis_version, no persistence)"
fi
if [[ -n $POSTGRES_COMPARE ]]; then
	echo "postgres compare, storage (runs per scenario: badger, postgres, badger, postgres): badger = this Caddy, storage $tmp/db; postgres = a second Caddy with the same auth_agent block but storage postgres $(pg_dsn authagent_single) (PostgreSQL $pg_version on 127.0.0.1, $pg_settings); rate_limit store memory in both; $prep_postgres"
	echo "postgres compare, instances (runs per scenario: one, two, one, two): node-a and node-b = storage postgres $(pg_dsn authagent_cluster), rate_limit store redis $redis_url, issuer $lb; lb = a third Caddy at $lb, reverse_proxy lb_policy round_robin over node-a and node-b (2 instances) or node-a alone (1 instance; node-b idle), reloaded before each run; cpu us/req and RSS are of the three together; $prep_cluster"
fi
if [[ -n $WEBHOOK_COMPARE ]]; then
	echo "webhook compare (one Caddy, reloaded per variant): registration = POST /api/register-agent, a new agent per request; webhook-off = no webhook; webhook-on = one webhook (agent.registered) to http://127.0.0.1:$hook_port/hook, a receiver that accepts and never answers (attempt timeout 10 s, 4 attempts at once)"
fi
if [[ -n $PEER_COMPARE ]]; then
	echo "peer compare: oidc-provider $peer_version on node $(node --version) (NODE_ENV=production; one process, JavaScript on one thread; its memory adapter), one confidential client, HTTP Basic; client_credentials tokens: auth_agent $cc_alg, oidc-provider $peer_cc_alg (JWT, resource urn:bench:jwt by default); refresh (rotating): auth_agent signs the $(sed -n 's/.*refresh response signs //p' <<<"$prep_msg"), oidc-provider the $peer_refresh_algs; introspection: auth_agent of a client_credentials JWT, oidc-provider of an opaque client_credentials token (it refuses to introspect JWTs); guarded and proxy both with the guard's bearer token; plain caddy = the same binary with a Caddyfile of one respond site (no auth_agent app)"
fi
echo
label_of() { # scenario -> its row label
	local l=$1
	case $l in
	cmp-guard-ours) l=guarded ;;
	cmp-guard-base) l="proxy (same token)" ;;
	cmp-plain) l="plain caddy: respond" ;;
	cmp-*-ours)
		l=${l#cmp-}
		l=${l%-ours}/auth_agent
		;;
	cmp-*-base)
		l=${l#cmp-}
		l=${l%-base}/oidc-provider
		;;
	limiter-*) l=guarded/$l ;;
	webhook-*) l=registration/$l ;;
	*-badger | *-postgres) l=${l%-*}/${l##*-} ;;
	*-one) l="${l%-one}/1 instance" ;;
	*-two) l="${l%-two}/2 instances" ;;
	esac
	if [[ -n ${R[$1.rps]:-} ]]; then l="$l (${R[$1.how]:-mean of 2})"; fi
	echo "$l"
}
# The table's rows: the scenarios, then POSTGRES_COMPARE's and PEER_COMPARE's.
rows=("${scenarios[@]}" ${pg_rows[@]+"${pg_rows[@]}"} ${cmp_rows[@]+"${cmp_rows[@]}"})
w=20
for s in "${rows[@]}"; do
	l=$(label_of "$s")
	if (( ${#l} > w )); then w=${#l}; fi
done
fmt="%-${w}s %9s %10s %8s %8s %8s %8s %7s %10s %7s %8s\n"
printf "$fmt" scenario requests 'req/s' 'x base' 'p50 ms' 'p99 ms' non-2xx errors 'cpu us/req' 'cpu %' 'RSS MiB'
printf "$fmt" 'idle (started)' - - - - - - - - - "$rss_start"
printf "$fmt" 'idle (before runs)' - - - - - - - - - "$rss_idle"
if [[ -n $PEER_COMPARE ]]; then
	printf "$fmt" 'idle: oidc-provider' - - - - - - - - - "$peer_rss_start"
	if [[ -n ${plain_rss_start:-} ]]; then printf "$fmt" 'idle: plain caddy' - - - - - - - - - "$plain_rss_start"; fi
fi
for s in "${rows[@]}"; do
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
	printf '%-12s runs (alternating): %s, %s req/s; mean %s req/s; upstream %s cpu us/req; machine %s cpu us/req, %s%% busy\n' \
		"$s" "$(rps_of "$s-1")" "$(rps_of "$s-2")" "$(rps_of "$s")" \
		"$(awk -v c="${R[$s.up_cpu_us]}" -v n="${R[$s.requests]}" 'BEGIN { printf "%.1f", c / n }')" \
		"$(awk -v c="${R[$s.busy_us]}" -v n="${R[$s.requests]}" 'BEGIN { printf "%.1f", c / n }')" \
		"$(awk -v b="${R[$s.busy_us]}" -v t="${R[$s.total_us]}" 'BEGIN { printf "%.0f", 100 * b / t }')"
done
if (( ${#cc_group[@]} > 1 )); then
	for s in "${cc_group[@]}"; do
		printf '%-29s runs (alternating): %s, %s req/s; mean %s req/s; caddy %s cpu us/req; machine %s cpu us/req, %s%% busy\n' \
			"$s" "$(rps_of "$s-1")" "$(rps_of "$s-2")" "$(rps_of "$s")" "$(cpu_per_req "$s")" \
			"$(awk -v c="${R[$s.busy_us]}" -v n="${R[$s.requests]}" 'BEGIN { printf "%.1f", c / n }')" \
			"$(awk -v b="${R[$s.busy_us]}" -v t="${R[$s.total_us]}" 'BEGIN { printf "%.0f", 100 * b / t }')"
	done
fi
if selected client_credentials && selected client_credentials_pkjwt; then
	echo "private_key_jwt ratio: client_credentials_pkjwt/client_credentials = $(awk -v k="$(rps_of client_credentials_pkjwt)" -v s="$(rps_of client_credentials)" 'BEGIN { printf "%.2f", k / s }') (ES256 assertions against a generated secret; issue 17's target, with DPoP, >= 0.70)"
fi
if selected client_credentials && selected client_credentials_pkjwt_dpop; then
	echo "pkjwt+dpop CPU cost: $(awk -v a="$(cpu_per_req client_credentials_pkjwt_dpop)" -v b="$(cpu_per_req client_credentials)" 'BEGIN { printf "%+.1f", a - b }') us of Caddy CPU per request over client_credentials (client_credentials_pkjwt_dpop $(cpu_per_req client_credentials_pkjwt_dpop), client_credentials $(cpu_per_req client_credentials) cpu us/req)"
	echo "pkjwt+dpop ratio: client_credentials_pkjwt_dpop/client_credentials = $(awk -v k="$(rps_of client_credentials_pkjwt_dpop)" -v s="$(rps_of client_credentials)" 'BEGIN { printf "%.2f", k / s }') (target >= 0.70)"
fi
if in_pair proxy && in_pair guarded; then
	echo "guard CPU cost: $(awk -v g="$(cpu_per_req guarded)" -v p="$(cpu_per_req proxy)" 'BEGIN { printf "%+.1f", g - p }') us of Caddy CPU per request (guarded $(cpu_per_req guarded), proxy $(cpu_per_req proxy) cpu us/req)"
	echo "guard ratio: guarded/proxy = $(awk -v g="$(rps_of guarded)" -v p="$(rps_of proxy)" 'BEGIN { printf "%.2f", g / p }') (target >= 0.95)"
fi
if in_pair guarded && in_pair guarded_dpop; then
	echo "dpop guard CPU cost: $(awk -v d="$(cpu_per_req guarded_dpop)" -v g="$(cpu_per_req guarded)" 'BEGIN { printf "%+.1f", d - g }') us of Caddy CPU per request over guarded (guarded_dpop $(cpu_per_req guarded_dpop), guarded $(cpu_per_req guarded) cpu us/req)"
	echo "dpop guard ratio: guarded_dpop/guarded = $(awk -v d="$(rps_of guarded_dpop)" -v g="$(rps_of guarded)" 'BEGIN { printf "%.2f", d / g }') (target >= 0.80)"
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
if [[ -n $WEBHOOK_COMPARE ]]; then
	printf '%-28s %12s %10s %8s %8s %10s\n' '' 'req/s runs' 'req/s' 'p50 ms' 'p99 ms' 'cpu us/req'
	for v in "${webhook_variants[@]}"; do
		s=webhook-$v
		printf '%-28s %12s %10s %8s %8s %10s\n' "registration/$s" "$(rps_of "$s-1"),$(rps_of "$s-2")" "$(rps_of "$s")" \
			"$(ms "${R[$s.p50_us]}")" "$(ms "${R[$s.p99_us]}")" "$(cpu_per_req "$s")"
	done
	echo "webhook cost: on/off req/s = $(awk -v a="$(rps_of webhook-on)" -v b="$(rps_of webhook-off)" 'BEGIN { printf "%.2f", a / b }'), p99 $(ms "${R[webhook-off.p99_us]}") ms vs $(ms "${R[webhook-on.p99_us]}") ms (on/off = $(awk -v a="${R[webhook-on.p99_us]}" -v b="${R[webhook-off.p99_us]}" 'BEGIN { printf "%.2f", a / b }'))"
	echo "registrations wrk dropped at the end of a run (logged 503 busy, at most $conns per run): $register_dropped"
	echo "webhook deliveries after the last on run (of the newest 1000 listed): delivered $wh_delivered, pending $wh_pending, failed $wh_failed; connections the hanging receiver accepted: $hook_connections"
	# Every registration of an on run queued a delivery; none can have
	# been delivered to a receiver that never answers.
	if (( wh_delivered > 0 || hook_connections == 0 )); then
		echo "  !! webhook-on: $wh_delivered deliveries delivered to a receiver that never answers, $hook_connections connections"
		failed=1
	fi
fi
if [[ -n $POSTGRES_COMPARE ]]; then
	per_req() { awk -v c="${R[$1.$2]}" -v n="${R[$1.requests]}" 'BEGIN { printf "%.1f", c / n }'; }
	ratio_of() { awk -v a="$(rps_of "$1")" -v b="$(rps_of "$2")" 'BEGIN { printf "%.2f", a / b }'; }
	p99_of() { ms "${R[$1.p99_us]}"; }
	goal() { # VALUE OP LIMIT -> "met" or "NOT met"
		awk -v v="$1" -v l="$3" -v op="$2" 'BEGIN { ok = (op == ">=") ? v >= l : v < l; print ok ? "met" : "NOT met" }'
	}
	for s in "${pg_scenarios[@]}"; do
		for side in "${pg_sides[@]}"; do
			r=$s-$side
			printf '%-27s runs (alternating): %s, %s req/s; mean %s req/s; caddy %s, postgres %s, machine %s cpu us/req\n' \
				"$(label_of "$r" | sed 's/ (mean of 2)//')" "$(rps_of "$r-1")" "$(rps_of "$r-2")" "$(rps_of "$r")" \
				"$(cpu_per_req "$r")" "$(per_req "$r" pg_cpu_us)" "$(per_req "$r" busy_us)"
		done
	done
	for s in "${pg_scenarios[@]}"; do
		for c in "${pg_counts[@]}"; do
			r=$s-$c
			printf '%-27s runs (alternating): %s, %s req/s; mean %s req/s; caddy node-a %s, node-b %s, lb %s, postgres %s, redis-server %s, machine %s cpu us/req; redis commands/req %s\n' \
				"$(label_of "$r" | sed 's/ (mean of 2)//')" "$(rps_of "$r-1")" "$(rps_of "$r-2")" "$(rps_of "$r")" \
				"$(per_req "$r" cpu_us@node-a)" "$(per_req "$r" cpu_us@node-b)" "$(per_req "$r" cpu_us@lb)" \
				"$(per_req "$r" pg_cpu_us)" "$(per_req "$r" redis_cpu_us)" "$(per_req "$r" busy_us)" \
				"$(awk -v c="${R[$r.redis_cmds]}" -v n="${R[$r.requests]}" 'BEGIN { printf "%.2f", c / n }')"
			# The balancer must have spread the two-instance runs over both
			# and sent the one-instance runs to node-a alone (node-b's CPU
			# then is its idle background work).
			share=$(awk -v a="${R[$r.cpu_us@node-a]}" -v b="${R[$r.cpu_us@node-b]}" 'BEGIN { printf "%.2f", ((a + b) > 0 ? b / (a + b) : 0) }')
			if [[ $c == two ]] && awk -v x="$share" 'BEGIN { exit !(x < 0.2) }'; then
				echo "  !! $r: node-b did only $share of the instances' CPU work: the balancer did not spread the load"
				failed=1
			fi
			if [[ $c == one ]] && awk -v x="$share" 'BEGIN { exit !(x > 0.05) }'; then
				echo "  !! $r: node-b did $share of the instances' CPU work though the balancer had node-a alone"
				failed=1
			fi
			# With store redis every refresh checks and charges the client's
			# refresh budget in Redis.
			if [[ $s == refresh_token && $rate != off ]] && (( ${R[$r.redis_cmds]} < ${R[$r.requests]} )); then
				echo "  !! $r: ${R[$r.redis_cmds]} Redis commands for ${R[$r.requests]} requests: the refresh budget did not reach Redis"
				failed=1
			fi
		done
	done
	for s in "${pg_scenarios[@]}"; do
		x=$(ratio_of "$s-postgres" "$s-badger")
		echo "postgres/badger $s = $x (goal >= 0.50: $(goal "$x" '>=' 0.50))"
	done
	echo "client_credentials p99: badger $(p99_of client_credentials-badger) ms, postgres $(p99_of client_credentials-postgres) ms"
	x=$(p99_of refresh_token-postgres)
	echo "refresh_token p99: badger $(p99_of refresh_token-badger) ms, postgres $x ms (goal < 50 ms: $(goal "$x" '<' 50))"
	for s in "${pg_scenarios[@]}"; do
		echo "two/one instances $s = $(ratio_of "$s-two" "$s-one") (p99: 1 instance $(p99_of "$s-one") ms, 2 instances $(p99_of "$s-two") ms)"
	done
	# What the PostgreSQL instances logged at error level, and what the
	# server did (a failing storage call shows up here as well as in the
	# statuses).
	pg_caddy_errors=$(cat "$tmp"/caddy-*.log | grep '"level":"error"' | grep -v 'context canceled' || true)
	pg_server_errors=$(grep -E ' (ERROR|FATAL|PANIC): ' "$tmp/postgres.log" | grep -v 'terminating connection due to administrator command' || true)
	echo "postgres compare: error-level lines in the logs of caddy postgres, node-a, node-b, lb: $(grep -c . <<<"$pg_caddy_errors" || true); ERROR/FATAL/PANIC lines in postgres.log: $(grep -c . <<<"$pg_server_errors" || true)"
	if [[ -n $pg_caddy_errors ]]; then
		head -n 5 <<<"$pg_caddy_errors" | sed 's/^/  !! /'
		failed=1
	fi
	if [[ -n $pg_server_errors ]]; then head -n 5 <<<"$pg_server_errors" | sed 's/^/  postgres.log: /'; fi
fi
if [[ -n $PEER_COMPARE ]]; then
	ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
	goal_of() { # VALUE OP LIMIT -> "met" or "NOT met"
		awk -v v="$1" -v l="$3" -v op="$2" 'BEGIN { ok = (op == ">=") ? v >= l : v <= l; print ok ? "met" : "NOT met" }'
	}
	lat() { echo "$(ms "${R[$1.p50_us]}")/$(ms "${R[$1.p99_us]}")"; }
	base_label() {
		case $1 in
		guard) echo "proxy, same token" ;;
		*) echo "oidc-provider $peer_version" ;;
		esac
	}
	echo
	warmup_text="after a warm-up run of $PEER_WARMUP per side and scenario"
	if [[ $PEER_WARMUP == 0 ]]; then warmup_text="no warm-up"; fi
	echo "peer compare: medians of $PEER_RUNS runs per side ($DURATION each, wrk -t$THREADS -c$conns; $warmup_text), the sides alternating; ratio = ours / baseline"
	cfmt="%-19s %-22s %11s %11s %6s %15s %15s %10s %10s\n"
	printf "$cfmt" scenario baseline 'ours req/s' 'base req/s' ratio 'ours p50/p99' 'base p50/p99' 'ours cpu' 'base cpu'
	printf "$cfmt" '' '' '' '' '' ms ms 'us/req' 'us/req'
	for s in ${cmp_scenarios[@]+"${cmp_scenarios[@]}"}; do
		o=cmp-$s-ours b=cmp-$s-base
		printf "$cfmt" "$s" "$(base_label "$s")" "$(rps_of "$o")" "$(rps_of "$b")" "$(ratio "$(rps_of "$o")" "$(rps_of "$b")")" \
			"$(lat "$o")" "$(lat "$b")" "$(cpu_per_req "$o")" "$(cpu_per_req "$b")"
	done
	for s in ${cmp_scenarios[@]+"${cmp_scenarios[@]}"}; do
		o=cmp-$s-ours b=cmp-$s-base
		per_round=$(paste -d' ' <(tr ' ' '\n' <<<"${R[$o.runs_rps]}") <(tr ' ' '\n' <<<"${R[$b.runs_rps]}") |
			awk '{ printf "%s%.2f", (NR > 1 ? " " : ""), $1 / $2 }')
		echo "$s runs, req/s: ours ${R[$o.runs_rps]}; baseline ${R[$b.runs_rps]}; ratio per round $per_round"
	done
	# RSS: ours idle right after start (rss_start) and after its
	# client_credentials runs (the largest), beside the plain Caddy idle right
	# after start and after its respond runs; oidc-provider the same way.
	if [[ -n ${plain_rss_start:-} ]]; then
		echo "RSS idle (right after start): auth_agent $rss_start MiB, plain caddy $plain_rss_start MiB: +$(awk -v a="$rss_start" -v b="$plain_rss_start" 'BEGIN { printf "%.1f", a - b }') MiB; oidc-provider $peer_rss_start MiB"
		if [[ -n ${R[cmp-client_credentials-ours.rss]:-} ]]; then
			echo "RSS under load (largest after a run): auth_agent ${R[cmp-client_credentials-ours.rss]} MiB after client_credentials, plain caddy ${R[cmp-plain.rss]} MiB after respond ($(rps_of cmp-plain) req/s), oidc-provider ${R[cmp-client_credentials-base.rss]} MiB after client_credentials"
		fi
	fi
	goals=()
	for s in ${cmp_scenarios[@]+"${cmp_scenarios[@]}"}; do
		x=$(ratio "$(rps_of "cmp-$s-ours")" "$(rps_of "cmp-$s-base")")
		case $s in
		guard) goals+=("guarded/proxy $x >= 0.95: $(goal_of "$x" '>=' 0.95)") ;;
		client_credentials | introspection) goals+=("$s $x >= 2.00: $(goal_of "$x" '>=' 2)") ;;
		esac
	done
	if [[ -n ${plain_rss_start:-} ]]; then
		x=$(awk -v a="$rss_start" -v b="$plain_rss_start" 'BEGIN { printf "%.1f", a - b }')
		goals+=("idle RSS plain +$x <= +30 MiB: $(goal_of "$x" '<=' 30)")
	fi
	if [[ -n ${R[cmp-client_credentials-ours.rss]:-} ]]; then
		goals+=("RSS under the token load ${R[cmp-client_credentials-ours.rss]} <= 200 MiB: $(goal_of "${R[cmp-client_credentials-ours.rss]}" '<=' 200)")
	fi
	if (( ${#goals[@]} > 0 )); then echo "goals (issue 11; measured, not asserted): $(printf '%s; ' "${goals[@]}" | sed 's/; $//')"; fi
fi
echo "peak RSS (VmHWM) $(hwm_mib) MiB; statuses: $(for s in "${rows[@]}"; do printf '%s %s; ' "$s" "${R[$s.statuses]}"; done)"
if [[ -n ${R[refresh_token.non2xx]:-} ]]; then
	echo "refresh_token: $chains chains over $conns connections; non-200 responses: ${R[refresh_token.non2xx]}"
fi
echo "refresh-token reuse detections in caddy log: $family_revocations; server errors logged: $server_errors; rate limiter store failures logged: $store_failures$( (( store_canceled == 0 )) || echo " (and $store_canceled of requests wrk dropped at the end of a run: context canceled)")"
if (( family_revocations > 0 || server_errors > 0 || store_failures > 0 )); then failed=1; fi
if (( failed )); then
	echo "FAIL: some responses were not 2xx, or wrk saw socket errors, or the server logged errors (or the limiter's store failed)" >&2
	exit 1
fi
