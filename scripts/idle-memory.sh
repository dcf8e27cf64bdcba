#!/usr/bin/env bash
# Server memory per idle WebSocket connection (BENCHMARKS.md "Memory per connection").
#
#   scripts/idle-memory.sh N           # N connections (users in groups of N/8)
#   SERVER=path/to/chat-server ROOMS=40 DATA=/tmp/idle10k scripts/idle-memory.sh 10000
#   QUIC=1 scripts/idle-memory.sh 2000 # the same over QUIC
#
# Starts chat-server (the dist build, `cargo build --profile dist`, unless SERVER names
# another) on 127.0.0.1:18091 with its data in DATA, registers N users once (kept in
# DATA for later runs), warms the server up with 50 logins, reads its RSS, connects N
# users with `loadgen --login`, and reads the RSS again while all N are connected. The
# HTTP idle timeout is 2 s so that the logins' keep-alive connections are closed by
# then.
set -u
N=${1:-2000}
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
BIN="$ROOT/target/dist"
SERVER=${SERVER:-$BIN/chat-server}
D=${DATA:-/tmp/chat-idle-memory}
ADDR=127.0.0.1:18091
QADDR=127.0.0.1:18433
mkdir -p "$D"

start() {
    "$SERVER" --http-addr $ADDR --quic-addr $QADDR --data-dir "$D" --http-idle-timeout 2 \
        > "$D/server.log" 2>&1 &
    SP=$!
    for _ in $(seq 100); do
        curl -sf http://$ADDR/readyz > /dev/null && return
        sleep 0.3
    done
    echo "chat-server did not start; see $D/server.log" >&2
    exit 1
}
load() {
    if [ -n "${QUIC:-}" ]; then
        set -- --url quic://$QADDR --api-url http://$ADDR --pin "$D/quic-cert.pem" "$@"
    else
        set -- --url ws://$ADDR "$@"
    fi
    "$BIN/loadgen" --rooms "${ROOMS:-8}" --senders 0 --setup-concurrency 32 \
        --prefix idle "$@"
}

start
if [ ! -f "$D/registered-$N" ]; then
    load --clients "$N" --duration 1 > "$D/register.log" 2>&1 && touch "$D/registered-$N"
    kill $SP; wait $SP 2>/dev/null; start
fi
load --clients 50 --duration 1 --login > /dev/null 2>&1
sleep 2
BEFORE=$(ps -o rss= -p $SP)
load --clients "$N" --duration 25 --login > "$D/run.log" 2>&1 &
LP=$!
WITH=0
while kill -0 $LP 2>/dev/null; do
    C=$(curl -s http://$ADDR/metrics | grep '^chat_connections{' | awk '{s+=$2} END {print s+0}')
    R=$(ps -o rss= -p $SP)
    if [ "${C%.*}" -ge "$N" ]; then WITH=$R; fi
    sleep 1
done
kill $SP; wait $SP 2>/dev/null
if [ "$WITH" -eq 0 ]; then
    echo "the $N connections were never all up; see $D/run.log" >&2
    exit 1
fi
echo "connections=$N rss_before=${BEFORE}KB rss_with=${WITH}KB per_connection=$(( (WITH - BEFORE) * 1024 / N ))B"
