#!/usr/bin/env bash
# One large file through the server, for BENCHMARKS.md: upload (one tus PATCH streamed
# by curl) and download throughput, and how much the server's resident memory grew
# while the file went through (peak RSS during the transfer minus RSS before it).
# The files go to the data directory, or with `bucket` to an S3 bucket on a local moto
# server (from target/py-venv, which scripts/test.sh makes; a build with `--features s3`).
#
#   scripts/upload-bench.sh target/release/chat-server 1024            # MiB
#   scripts/upload-bench.sh target/release/chat-server 1024 bucket
set -euo pipefail
SERVER=$1
MIB=${2:-1024}
STORE=${3:-directory}
cd "$(dirname "$0")/.."
DATA=$(mktemp -d "${TMPDIR:-/tmp}/upload-bench.XXXX")
FILE="$DATA/payload"
head -c $((MIB * 1024 * 1024)) /dev/urandom >"$FILE"
STORE_ARGS=()
MOTO=
if [ "$STORE" = bucket ]; then
    target/py-venv/bin/moto_server -H 127.0.0.1 -p 18384 >"$DATA/moto.log" 2>&1 &
    MOTO=$!
    for _ in $(seq 1 300); do curl -sf http://127.0.0.1:18384/ >/dev/null && break; sleep 0.1; done
    curl -sf -X PUT http://127.0.0.1:18384/bench >/dev/null
    export AWS_ENDPOINT_URL=http://127.0.0.1:18384 AWS_ALLOW_HTTP=true AWS_REGION=us-east-1 \
        AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench
    STORE_ARGS=(--file-store s3://bench/files)
fi
"$SERVER" --data-dir "$DATA/server" --http-addr 127.0.0.1:18383 --quic-addr 127.0.0.1:0 \
    --max-file-size $((MIB * 1024 * 1024)) --file-quota $((4 * MIB * 1024 * 1024)) \
    "${STORE_ARGS[@]}" >"$DATA/log" 2>&1 &
PID=$!
trap 'kill $PID $MOTO 2>/dev/null || true; rm -rf "$DATA"' EXIT
for _ in $(seq 1 100); do curl -sf http://127.0.0.1:18383/readyz >/dev/null && break; sleep 0.1; done
TOKEN=$(curl -sf -X POST http://127.0.0.1:18383/api/register -H 'content-type: application/json' \
    -d '{"username":"bench","password":"a long enough password"}' |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["access_token"])')
LOCATION=$(curl -sf -D - -o /dev/null -X POST http://127.0.0.1:18383/api/uploads \
    -H "authorization: Bearer $TOKEN" -H 'tus-resumable: 1.0.0' -H "upload-length: $((MIB * 1024 * 1024))" |
    tr -d '\r' | awk -F': ' 'tolower($1) == "location" {print $2}')
rss() { awk '/^VmRSS/ {print $2}' /proc/$PID/status; }
BEFORE=$(rss)
PEAK=$BEFORE
( while kill -0 $PID 2>/dev/null; do r=$(rss); [ "$r" -gt "$PEAK" ] && PEAK=$r && echo "$PEAK" >"$DATA/peak"; sleep 0.05; done ) &
SAMPLER=$!
T0=$(date +%s.%N)
curl -sf -X PATCH "http://127.0.0.1:18383$LOCATION" -H "authorization: Bearer $TOKEN" \
    -H 'tus-resumable: 1.0.0' -H 'upload-offset: 0' \
    -H 'content-type: application/offset+octet-stream' -T "$FILE" -o /dev/null
T1=$(date +%s.%N)
ID=${LOCATION##*/}
curl -sf "http://127.0.0.1:18383/api/files/$ID" -H "authorization: Bearer $TOKEN" -o "$DATA/back"
T2=$(date +%s.%N)
kill $SAMPLER 2>/dev/null || true
cmp -s "$FILE" "$DATA/back" || { echo "the download differs" >&2; exit 1; }
PEAK=$(cat "$DATA/peak" 2>/dev/null || echo "$BEFORE")
python3 - "$MIB" "$T0" "$T1" "$T2" "$BEFORE" "$PEAK" "$STORE" <<'PY'
import sys
mib, t0, t1, t2, before, peak = map(float, sys.argv[1:7])
print(f"{int(mib)} MiB to the {sys.argv[7]}: upload {mib / (t1 - t0):.0f} MiB/s, download {mib / (t2 - t1):.0f} MiB/s, "
      f"server RSS {before / 1024:.1f} MiB before, peak {peak / 1024:.1f} MiB (+{(peak - before) / 1024:.1f} MiB)")
PY
