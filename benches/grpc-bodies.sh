#!/usr/bin/env bash
# Writes the request bodies of three gRPC calls, framed for a load generator that sends
# a body as it is (h2load -d): `health` (an empty HealthCheckRequest), `introspect`
# (an IntrospectRequest for $TOKEN) and `check` (Envoy's ext_authz CheckRequest for a
# `GET https://api.example/orders` carrying `authorization: Bearer $TOKEN`), into the
# folder given. With an address, it then sends each once (curl, HTTP/2 without TLS) and
# fails unless the answer's grpc-status is 0: a load generator that sees HTTP statuses
# only would count a gRPC error as 200.
#
#   TOKEN=... [API_KEY=...] benches/grpc-bodies.sh folder/ [host:port]
set -euo pipefail
OUT=${1:?usage: TOKEN=... [API_KEY=...] grpc-bodies.sh folder [host:port]}
ADDR=${2:-}
: "${TOKEN:?set TOKEN to the token to introspect}"
mkdir -p "$OUT"

byte() { printf "\\$(printf '%03o' "$1")"; }

varint() {
  local n=$1
  while [ "$n" -ge 128 ]; do
    byte $(((n & 127) | 128))
    n=$((n >> 7))
  done
  byte "$n"
}

# A length-delimited field (a string, a map entry, a message): its tag (field number,
# wire type 2), its length, then what stdin holds.
field() { # field number
  local inner
  inner=$(cat | base64 -w0)
  byte $(($1 << 3 | 2))
  varint "$(base64 -d <<<"$inner" | wc -c)"
  base64 -d <<<"$inner"
}

# A map<string, string> entry: key (1) and value (2).
entry() { # field number, key, value
  { printf '%s' "$2" | field 1; printf '%s' "$3" | field 2; } | field "$1"
}

# One gRPC message: not compressed, its length (4 bytes, big-endian), the message.
frame() { # the message's file
  local size
  size=$(wc -c <"$1")
  byte 0
  for at in 24 16 8 0; do byte $(((size >> at) & 255)); done
  cat "$1"
}

# IntrospectRequest { token (1) }.
printf '%s' "$TOKEN" | field 1 >"$OUT/message"
frame "$OUT/message" >"$OUT/introspect"
# CheckRequest { attributes (1): AttributeContext { request (4): Request { http (2):
# HttpRequest { method (2), headers (3), path (4), host (5), scheme (6) } } } }.
{
  printf GET | field 2
  entry 3 authorization "Bearer $TOKEN"
  entry 3 accept "application/json"
  printf /orders | field 4
  printf api.example | field 5
  printf https | field 6
} | field 2 | field 4 | field 1 >"$OUT/message"
frame "$OUT/message" >"$OUT/check"
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
answered check /envoy.service.auth.v3.Authorization/Check "${key[@]}"
