#!/usr/bin/env bash
# A first look at the shim's throughput: getSession and createSession with wrk at a given
# concurrency, on the embedded store and on Redis, on this machine. Needs wrk and
# redis-server (Debian packages). Usage: bench/first-look.sh [connections] [seconds]
set -euo pipefail
cd "$(dirname "$0")/.."
conns=${1:-32}; secs=${2:-10}
cargo build --release -q -p redsess-shim
bin=target/release/redsess-shim
tmp=$(mktemp -d); trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$tmp"' EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

run() { # store-label, extra env
  local label=$1; shift
  local sp; sp=$(port)
  env "$@" REDSESS_LOG=warn $bin --listen 127.0.0.1:$sp >"$tmp/shim.out" 2>"$tmp/shim.err" &
  local pid=$!
  for _ in $(seq 100); do grep -q listening "$tmp/shim.out" 2>/dev/null && break; sleep 0.05; done
  local url=http://127.0.0.1:$sp
  OP=seed SESSION=bench-session wrk -t1 -c1 -d1s -s bench/dsc.lua "$url" >/dev/null
  for op in get create; do
    echo -n "$label: "
    OP=$op SESSION=bench-session wrk -t2 -c"$conns" -d"${secs}s" -s bench/dsc.lua "$url" | grep RESULT
  done
  kill $pid; wait $pid 2>/dev/null || true
}

run memory
rp=$(port)
redis-server --port "$rp" --bind 127.0.0.1 --save '' --appendonly no >/dev/null &
for _ in $(seq 100); do redis-cli -p "$rp" ping >/dev/null 2>&1 && break; sleep 0.05; done
run redis REDSESS_REDIS_URL=redis://127.0.0.1:$rp
echo -n "redis-benchmark GET/SET (1.5 KB values, $conns connections): "
redis-benchmark -p "$rp" -c "$conns" -n 200000 -d 1536 -t get,set -q | tr '\r' '\n' | grep -E '^(GET|SET)' | tr '\n' ' '; echo
redis-cli -p "$rp" shutdown nosave >/dev/null 2>&1 || true
