#!/usr/bin/env bash
# Builds a custom Caddy with xcaddy as xcaddy.json describes, and checks that
# `caddy list-modules` shows this plugin's modules.
#   scripts/build-caddy.sh [output]   (default: ./caddy)
set -euo pipefail
cd "$(dirname "$0")/.."
exec go run ./scripts/xcaddybuild -manifest xcaddy.json -o "${1:-caddy}"
