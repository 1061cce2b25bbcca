#!/usr/bin/env bash
# Writes the request bodies of two gRPC calls, framed for a load generator that sends
# a body as it is (h2load -d): `health` (an empty HealthCheckRequest) and `introspect`
# (an IntrospectRequest for $TOKEN), into the folder given.
#
#   TOKEN=... benches/grpc-bodies.sh folder/
set -euo pipefail
OUT=${1:?usage: TOKEN=... grpc-bodies.sh folder}
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
