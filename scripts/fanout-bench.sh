#!/usr/bin/env bash
# One fan-out run for BENCHMARKS.md: starts SERVER (a chat-server binary) with its data
# on tmpfs, runs the release loadgen against it with the given arguments, and prints
# one line: server CPU (cores and µs per delivery, from /proc while the senders run),
# deliveries, losses and latencies.
#
#   scripts/fanout-bench.sh target/release/chat-server after \
#       --clients 1000 --rooms 1 --senders 10 --rate 20 --duration 20 --setup-concurrency 32
#
# Build the load generator first: cargo build --release -p chat-examples --bin loadgen
set -euo pipefail
SERVER=$1
LABEL=$2
shift 2
cd "$(dirname "$0")/.."
DATA=$(mktemp -d /dev/shm/bench.XXXX)
LOG=$(mktemp)
REPORT=$(mktemp)
ERR=$(mktemp)
"$SERVER" --data-dir "$DATA" --send-rate 100000 --send-burst 100000 --max-http-connections 20000 \
    --http-addr 127.0.0.1:18080 --quic-addr 127.0.0.1:0 >"$LOG" 2>&1 &
PID=$!
trap 'kill $PID 2>/dev/null || true; rm -rf "$DATA" "$LOG" "$REPORT" "$ERR"' EXIT
for _ in $(seq 1 100); do grep -q "HTTP API" "$LOG" && break; sleep 0.2; done
target/release/loadgen --url ws://127.0.0.1:18080 "$@" --json >"$REPORT" 2>"$ERR" &
LOADGEN=$!
until grep -q "sending for" "$ERR"; do
    kill -0 $LOADGEN 2>/dev/null || { cat "$ERR" >&2; exit 1; }
    sleep 0.05
done
T0=$(date +%s.%N)
S0=$(awk '{print $14 + $15}' /proc/$PID/stat)
wait $LOADGEN
T1=$(date +%s.%N)
S1=$(awk '{print $14 + $15}' /proc/$PID/stat)
python3 - "$LABEL" "$T0" "$T1" "$S0" "$S1" "$REPORT" "$(getconf CLK_TCK)" <<'PY'
import json, sys
label, t0, t1, s0, s1, report, hz = sys.argv[1], *map(float, sys.argv[2:6]), sys.argv[6], float(sys.argv[7])
r = json.load(open(report))
cpu = (s1 - s0) / hz
l = r["latency_ms"]
print(f"{label:16} cores {cpu / (t1 - t0):.2f}  us/delivery {cpu * 1e6 / r['deliveries']:.2f}  "
      f"sent {r['sent']} (reactions {r.get('reactions_sent', 0)})  deliveries {r['deliveries']} "
      f"({r['deliveries_per_s']:.0f}/s) lost {r['lost']}  "
      f"p50/p90/p99/max {l['p50']}/{l['p90']}/{l['p99']}/{l['max']}")
PY
