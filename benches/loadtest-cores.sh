#!/usr/bin/env bash
# The README's server-core figures: `introspectd dev` pinned to 1 core, then to 8, and
# `introspectd loadtest` on 8 other cores, every figure a ratio to the gRPC health
# Check (or GET /healthz) measured in the same run. Needs 16 cores and a release build.
#
#   cargo build --release && benches/loadtest-cores.sh target/release/introspectd out/
#
# Writes one log per measurement into the output folder and prints a summary.
set -u
BIN=${1:?usage: loadtest-cores.sh path/to/introspectd output-folder}
OUT=${2:?usage: loadtest-cores.sh path/to/introspectd output-folder}
SECONDS_PER_PHASE=${SECONDS_PER_PHASE:-5}
LOAD_CORES=${LOAD_CORES:-8-15}
# The server's core sets: one core, then eight (tags name them by their count).
SERVER_CORES=${SERVER_CORES:-"0 0-7"}
mkdir -p "$OUT"
DATA=$(mktemp -d)
GRPC=127.0.0.1:50051
HTTP=127.0.0.1:8080
SERVER=""

start_server() { # cores cache_entries name [dev issuer algorithm]
  local alg=${4:-ES256}
  INTROSPECTD_CACHE__MAX_ENTRIES=$2 RUST_LOG=warn taskset -c "$1" "$BIN" dev --alg "$alg" \
    --data-dir "$DATA/$alg" --grpc-addr $GRPC --http-addr $HTTP >"$OUT/server-$3.log" 2>&1 &
  SERVER=$!
  for _ in $(seq 100); do
    "$BIN" health --grpc-addr $GRPC >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "server $3 did not become ready" >&2
  return 1
}

stop_server() {
  kill "$SERVER" 2>/dev/null
  wait "$SERVER" 2>/dev/null
}

load() { # name, loadtest arguments... (ALG: the running dev issuer's algorithm)
  local name=$1
  shift
  taskset -c "$LOAD_CORES" "$BIN" loadtest --data-dir "$DATA/${ALG:-ES256}" --grpc-addr $GRPC \
    --http-addr $HTTP --seconds "$SECONDS_PER_PHASE" "$@" >"$OUT/$name.txt" 2>&1
  echo "== $name ($*)"
  cat "$OUT/$name.txt"
}

# The number after "calls/s" of a loadtest line naming $2 in file $1.
rate_of() {
  grep -F "$2" "$1" | head -1 | awk '{for (i = 1; i < NF; i++) if ($(i + 1) == "calls/s") print int($i)}'
}

UNARY=(--connections 64 --concurrency 1024)
count() { # cores in a taskset list such as 0-7 or 0,2
  local n=0 part
  for part in ${1//,/ }; do
    if [[ $part == *-* ]]; then n=$((n + ${part#*-} - ${part%-*} + 1)); else n=$((n + 1)); fi
  done
  echo "$n"
}

LAST_CORES=0
for cores in $SERVER_CORES; do
  LAST_CORES=$cores
  tag="$(count "$cores")core"
  start_server "$cores" 100000 "hot-$tag" || exit 1
  load "hot-$tag" --mode grpc "${UNARY[@]}" --tokens 1000
  load "stream-$tag" --mode stream --connections 16 --concurrency 64 --window 64 --tokens 1000
  load "http-$tag" --mode http --connections 1 --concurrency 256 --tokens 1000
  load "ext-authz-$tag" --mode ext-authz "${UNARY[@]}" --tokens 1000
  load "mixed-$tag" --mode mixed "${UNARY[@]}" --tokens 1000
  if [ "$(count "$cores")" -gt 1 ]; then
    hot=$(rate_of "$OUT/hot-$tag.txt" "Introspect ")
    half=$((hot / 2))
    load "latency-health-$tag" --mode health --connections 8 --concurrency 64 --rps "$half"
    load "latency-hot-$tag" --mode grpc --connections 8 --concurrency 64 --rps "$half" --tokens 1000
  fi
  stop_server
  start_server "$cores" 0 "cold-$tag" || exit 1
  load "cold-ES256-$tag" --mode grpc "${UNARY[@]}" --tokens 1000
  stop_server
  start_server "$cores" 0 "cold-RS256-$tag" RS256 || exit 1
  ALG=RS256 load "cold-RS256-$tag" --mode grpc "${UNARY[@]}" --tokens 1000
  stop_server
done

# A full cache: 2,000 entries, 4,000 distinct tokens (a tenth of the calls spread over
# all of them), so inserts evict all along, at a rate the cores keep up with.
start_server "$LAST_CORES" 2000 "full-cache" || exit 1
load "full-cache-$(count "$LAST_CORES")core" --mode grpc --connections 8 --concurrency 64 --tokens 4000 --rps 20000
stop_server
rm -rf "$DATA"
