#!/usr/bin/env bash
# The gRPC figures checked with h2load (nghttp2's load generator, outside this project):
# the health Check, then a hot Introspect of one token, with the same connections and
# streams, one after the other; prints both rates and their ratio.
#
#   TOKEN=$(introspectd mint --data-dir d) API_KEY=$(cat d/admin-api-key) \
#     benches/h2load-grpc.sh 127.0.0.1:50051 -D 3 -c 64 -m 16
#
# Without API_KEY the calls carry no key (a server with `anonymous_introspect`). The
# h2load options default to `-D 3 -c 64 -m 16`. h2load sees HTTP statuses only, and a
# gRPC error is still HTTP 200: each call is made once first with curl, which must see
# grpc-status 0, and the server counts the answers in
# introspectd_introspections_total{surface="grpc",result="active"}.
set -euo pipefail
ADDR=${1:?usage: TOKEN=... [API_KEY=...] h2load-grpc.sh host:port [h2load options]}
shift
[ $# -gt 0 ] || set -- -D 3 -c 64 -m 16
: "${TOKEN:?set TOKEN to the token to introspect}"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# The bodies, each checked once for grpc-status 0 (h2load cannot see it).
"$(dirname "$0")/grpc-bodies.sh" "$work" "$ADDR"

grpc=(-H "content-type: application/grpc" -H "te: trailers")
key=()
[ -z "${API_KEY:-}" ] || key=(-H "authorization: Bearer $API_KEY")

# Runs h2load; prints its summary lines, then the rate alone on the last line.
run() { # name, body, path, extra h2load arguments...
  local name=$1 body=$2 path=$3
  shift 3
  timeout 900 h2load "$@" -d "$body" "http://$ADDR$path" >"$work/$name.txt" 2>&1 || {
    cat "$work/$name.txt" >&2
    return 1
  }
  grep -E "^(finished in|requests:|status codes:)" "$work/$name.txt" | sed "s/^/$name: /" >&2
  if ! grep -qE "^requests: .* 0 failed, 0 errored" "$work/$name.txt" ||
    ! grep -qE "^status codes: [0-9]+ 2xx, 0 3xx, 0 4xx, 0 5xx" "$work/$name.txt"; then
    echo "$name: some requests failed" >&2
    return 1
  fi
  awk '/^finished in/ { for (i = 1; i < NF; i++) if ($(i + 1) == "req/s,") print $i }' "$work/$name.txt"
}

health=$(run health "$work/health" /grpc.health.v1.Health/Check "${grpc[@]}" "$@")
introspect=$(run introspect "$work/introspect" /introspectd.v1.TokenIntrospection/Introspect \
  "${grpc[@]}" "${key[@]}" "$@")
awk -v h="$health" -v i="$introspect" \
  'BEGIN { printf "health Check %.0f/s, Introspect %.0f/s, ratio %.2f\n", h, i, i / h }'
