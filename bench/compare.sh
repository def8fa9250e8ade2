#!/usr/bin/env bash
# Compares the in-process benchmarks of the token endpoint and the guard
# between a base revision and the working tree, in one run on one machine:
# the two builds take turns (COUNT rounds), so both see the same noise, and
# benchstat prints the ratios.
#
#   bash bench/compare.sh [BASE_REV]      (default: HEAD~1)
#
# Environment: COUNT (rounds, default 6), BENCH (regexp, default: every
# token grant, agent-auth and the guard's verify path), BENCHTIME (1s).
set -euo pipefail
cd "$(dirname "$0")/.."
base=${1:-HEAD~1}
count=${COUNT:-6}
bench=${BENCH:-'BenchmarkToken|BenchmarkAgentAuth$|BenchmarkGuardVerify'}
benchtime=${BENCHTIME:-1s}
tmp=$(mktemp -d)
trap 'git worktree remove --force "$tmp/base" >/dev/null 2>&1 || true; rm -rf "$tmp"' EXIT
git worktree add --detach "$tmp/base" "$base" >/dev/null
# The guard's benchmark lives in ./guard now and in ./oauth before; run
# every package that has the benchmarks.
pkgs() { for p in ./oauth ./guard; do [ -d "$1/$p" ] && echo "$p"; done; }
compile() { (cd "$1" && for p in $(pkgs "$1"); do go test -c -o "$2/$(basename "$p").test" "$p"; done); }
mkdir -p "$tmp/old" "$tmp/new"
compile "$tmp/base" "$tmp/old"
compile . "$tmp/new"
for i in $(seq "$count"); do
	for side in old new; do
		for t in "$tmp/$side"/*.test; do
			"$t" -test.run '^$' -test.bench "$bench" -test.benchtime "$benchtime" -test.benchmem | grep -E '^(Benchmark|goos|goarch|cpu)' >> "$tmp/$side.txt" || true
		done
	done
	echo "round $i of $count done" >&2
done
benchstat=$(command -v benchstat || echo "go run golang.org/x/perf/cmd/benchstat@latest")
$benchstat "$tmp/old.txt" "$tmp/new.txt"
