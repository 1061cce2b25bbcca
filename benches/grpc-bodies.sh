#!/usr/bin/env bash
# Writes the request bodies of two gRPC calls, framed for a load generator that sends
# a body as it is (h2load -d): `health` (an empty HealthCheckRequest) and `introspect`
# (an IntrospectRequest for $TOKEN), into the folder given. With an address, it then
# sends each once (curl, HTTP/2 without TLS) and fails unless the answer's grpc-status
# is 0: a load generator that sees HTTP statuses only would count a gRPC error as 200.
#
#   TOKEN=... [API_KEY=...] benches/grpc-bodies.sh folder/ [host:port]
set -euo pipefail
OUT=${1:?usage: TOKEN=... [API_KEY=...] grpc-bodies.sh folder [host:port]}
ADDR=${2:-}
: "${TOKEN:?set TOKEN to the token to introspect}"
mkdir -p "$OUT"

byte() { printf "\\$(printf '%03o' "$1")"; }

# IntrospectRequest { token (field 1) }: its tag, the token's length as a varint, the token.
{
  byte 10
  n=${#TOKEN}
  while [ "$n" -ge 128 ]; do
    byte $(((n & 127) | 128))
    n=$((n >> 7))
  done
  byte "$n"
  printf '%s' "$TOKEN"
} >"$OUT/message"
size=$(wc -c <"$OUT/message")
# One gRPC message: not compressed, its length (4 bytes, big-endian), the message.
{
  byte 0
  for at in 24 16 8 0; do byte $(((size >> at) & 255)); done
  cat "$OUT/message"
} >"$OUT/introspect"
rm "$OUT/message"
printf '\0\0\0\0\0' >"$OUT/health"

[ -n "$ADDR" ] || exit 0
answered() { # body, path, extra curl arguments...
  local body=$1 path=$2
  shift 2
  local reply
  reply=$(curl -sS --max-time 10 --http2-prior-knowledge -D - -o /dev/null \
    -H "content-type: application/grpc" -H "te: trailers" "$@" \
    --data-binary @"$OUT/$body" "http://$ADDR$path")
  grep -qi "^grpc-status: 0" <<<"$reply" || {
    echo "$path did not answer grpc-status 0:" >&2
    echo "$reply" >&2
    return 1
  }
}
key=()
[ -z "${API_KEY:-}" ] || key=(-H "authorization: Bearer $API_KEY")
answered health /grpc.health.v1.Health/Check
answered introspect /introspectd.v1.TokenIntrospection/Introspect "${key[@]}"
