#!/usr/bin/env bash
# Instructions per call, counted by callgrind: the same count on every run, however
# busy the machine, so a change's effect shows where a throughput figure is lost in
# the noise of a shared host. `introspectd dev` runs under valgrind; h2load sends N
# calls of each kind (after a warm-up that fills the cache), and only those calls are
# counted: GET /healthz, POST /oauth2/introspect, the gRPC health Check, Introspect,
# and Envoy's ext_authz Check (a request carrying the token, as Envoy sends it).
#
#   benches/callgrind-calls.sh target/release/introspectd 3000
#
# valgrind's CPU has no SHA extensions, so SHA-256 runs its portable code here (about
# 27,000 instructions for a 600-byte token and 3,000 for an API key, against some 1,000
# cycles for the token with them): read the figures as a comparison between two builds,
# not as the cost on real hardware.
set -euo pipefail
BIN=${1:?usage: callgrind-calls.sh path/to/introspectd [calls]}
N=${2:-3000}
GRPC=${GRPC_ADDR:-127.0.0.1:50161}
HTTP=${HTTP_ADDR:-127.0.0.1:18190}
work=$(mktemp -d)
server=""
cleanup() {
  if [ -n "$server" ]; then
    kill "$server" 2>/dev/null || true
    wait "$server" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

RUST_LOG=warn valgrind --tool=callgrind --instr-atstart=no \
  --callgrind-out-file="$work/callgrind.out" \
  "$BIN" dev --data-dir "$work/data" --grpc-addr "$GRPC" --http-addr "$HTTP" >"$work/server.log" 2>&1 &
server=$!
ready=""
for _ in $(seq 600); do
  if "$BIN" health --grpc-addr "$GRPC" >/dev/null 2>&1; then
    ready=yes
    break
  fi
  kill -0 "$server" 2>/dev/null || { cat "$work/server.log" >&2; exit 1; }
  sleep 0.2
done
[ -n "$ready" ] || { echo "the server under valgrind did not become ready in 2 minutes" >&2; exit 1; }
TOKEN=$("$BIN" mint --data-dir "$work/data")
API_KEY=$(cat "$work/data/admin-api-key")
export TOKEN API_KEY
# The gRPC bodies, each checked once for grpc-status 0 (h2load cannot see it).
"$(dirname "$0")/grpc-bodies.sh" "$work" "$GRPC"
printf 'token=%s' "$TOKEN" >"$work/form"

healthz=(--h1 "http://$HTTP/healthz")
introspect_http=(--h1 -d "$work/form" -H "content-type: application/x-www-form-urlencoded"
  -H "authorization: Bearer $API_KEY" "http://$HTTP/oauth2/introspect")
grpc=(-H "content-type: application/grpc" -H "te: trailers")
health_grpc=("${grpc[@]}" -d "$work/health" "http://$GRPC/grpc.health.v1.Health/Check")
introspect_grpc=("${grpc[@]}" -H "authorization: Bearer $API_KEY" -d "$work/introspect"
  "http://$GRPC/introspectd.v1.TokenIntrospection/Introspect")
ext_authz=("${grpc[@]}" -H "authorization: Bearer $API_KEY" -d "$work/check"
  "http://$GRPC/envoy.service.auth.v3.Authorization/Check")

load() { # calls, h2load arguments...
  local calls=$1
  shift
  timeout 600 h2load -n "$calls" -c 4 -m 1 "$@" >"$work/h2load.txt" 2>&1 || { cat "$work/h2load.txt" >&2; exit 1; }
  grep -qE "^status codes: $calls 2xx" "$work/h2load.txt" || { cat "$work/h2load.txt" >&2; exit 1; }
}

control() { # callgrind_control's arguments, the server's pid after them
  timeout 60 callgrind_control "$@" "$server" >"$work/control.txt" 2>&1 ||
    { echo "callgrind_control $* failed:" >&2; cat "$work/control.txt" >&2; exit 1; }
}

for call in healthz introspect_http health_grpc introspect_grpc ext_authz; do
  declare -n arguments=$call
  load 200 "${arguments[@]}" # warm-up: the token verified and cached, metrics registered
done
for call in healthz introspect_http health_grpc introspect_grpc ext_authz; do
  declare -n arguments=$call
  control -z
  control -i on
  load "$N" "${arguments[@]}"
  control -i off
  control -d "$call"
done

# Every Introspect and every ext_authz Check was answered active (h2load sees HTTP
# statuses only); gRPC counts both.
metrics=$(curl -sS --max-time 30 "http://$HTTP/metrics") || { echo "no /metrics" >&2; exit 1; }
for expected in "http $((N + 200))" "grpc $((2 * (N + 200)))"; do
  read -r surface want <<<"$expected"
  active=$(awk -v series="introspectd_introspections_total{surface=\"$surface\",result=\"active\"}" \
    '$1 == series { print $2 }' <<<"$metrics")
  [ "${active:-0}" -ge "$want" ] ||
    { echo "$surface: ${active:-no} active answers, expected $want" >&2; exit 1; }
done
kill "$server"
wait "$server" 2>/dev/null || true
server=""

per_call() { # the dump's trigger name
  local file
  file=$(grep -l "^desc: Trigger: dump $1\$" "$work"/callgrind.out.* | head -1)
  callgrind_annotate "$file" | awk -v n="$N" '/PROGRAM TOTALS/ { gsub(",", "", $1); printf "%d", $1 / n }'
}
h=$(per_call healthz)
i=$(per_call introspect_http)
g=$(per_call health_grpc)
j=$(per_call introspect_grpc)
e=$(per_call ext_authz)
printf '%-30s %9d instructions per call\n' "GET /healthz" "$h"
printf '%-30s %9d instructions per call  %.2f x /healthz\n' "POST /oauth2/introspect" "$i" "$(awk -v a="$i" -v b="$h" 'BEGIN { print a / b }')"
printf '%-30s %9d instructions per call\n' "grpc.health.v1.Health/Check" "$g"
printf '%-30s %9d instructions per call  %.2f x the health Check\n' "Introspect" "$j" "$(awk -v a="$j" -v b="$g" 'BEGIN { print a / b }')"
printf '%-30s %9d instructions per call  %.2f x the health Check\n' "envoy ext_authz Check" "$e" "$(awk -v a="$e" -v b="$g" 'BEGIN { print a / b }')"
