#!/usr/bin/env bash
# hat's own Event Server (hat-event 0.9.44, LMDB backend) against the Rivulet gateway's hat
# front-end (with its default settings, with --commit-ms 0, and answering at registration as
# hat's server does), under the same hat-client load (N clients registering with response, one
# subscriber), in one run, the servers alternating cell by cell. The load runs on the real
# Python client (hat_load.py: one process, one core) and on Rivulet's tokio hat client
# (rivulet-hat-load, the same load and output), which costs less and so shows more of what
# each server can take. Each cell starts its server fresh (its store in a temporary directory)
# and reads the server's CPU time from /proc/PID/stat before and after the load. Prints one JSON line per cell and a median table.
#
#   host-tests/bench/hat/run.sh [RUNS] [CLIENTS]   # from anywhere; RUNS defaults to 3,
#                                                  # CLIENTS to "python rust"
#
# Needs the peers venv ($RIVULET_PEERS_VENV, else target/peers-venv: built with
# ../shared/reference/peer-setup/setup_venv.sh), target/release/rivulet and
# target/release/rivulet-hat-load (built if missing).
# Nothing here asserts a time: the figures go into docs/BENCHMARKS.md with this command.
set -euo pipefail

root=$(cd "$(dirname "$0")/../../.." && pwd)
runs=${1:-3}
read -r -a clients <<<"${2:-python rust}"
venv=${RIVULET_PEERS_VENV:-$root/target/peers-venv}
if [ ! -x "$venv/bin/hat-event-server" ]; then
  bash "$root/../shared/reference/peer-setup/setup_venv.sh" "$venv"
fi
rivulet=$root/target/release/rivulet
[ -x "$rivulet" ] || (cd "$root" && cargo build --release --locked -p rivulet-gateway)
rust_load=$root/target/release/rivulet-hat-load
[ -x "$rust_load" ] || (cd "$root" && cargo build --release --locked -p rivulet-host-tests --bin rivulet-hat-load)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
port=23190
ticks=$(getconf CLK_TCK)

cpu_seconds() { # utime + stime of PID, in seconds
  awk -v hz="$ticks" '{ sub(/^.*\) /, ""); print ($12 + $13) / hz }' "/proc/$1/stat"
}

wait_port() {
  for _ in $(seq 200); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return 0; fi
    sleep 0.05
  done
  echo "nothing listens on $port" >&2
  return 1
}

start_server() { # start_server SYSTEM DIR: starts it in the background, sets $pid
  case $1 in
    hat-event-server)
      cat >"$2/conf.json" <<EOF
{"type": "event", "name": "bench", "server_id": 1,
 "backend": {"module": "hat.event.backends.lmdb", "db_path": "$2/event.db", "identifier": null,
             "flush_period": 1, "cleanup_period": 5, "conditions": [],
             "latest": {"subscriptions": [["*"]]},
             "timeseries": [{"order_by": "TIMESTAMP", "subscriptions": [["*"]]}]},
 "modules": [],
 "eventer_server": {"host": "127.0.0.1", "port": $port}}
EOF
      "$venv/bin/hat-event-server" --conf "$2/conf.json" >"$2/server.log" 2>&1 &
      ;;
    rivulet)
      "$rivulet" gateway --listen 127.0.0.1:0 --hat-listen "127.0.0.1:$port" --data "$2/data" >"$2/server.log" 2>&1 &
      ;;
    rivulet-commit-ms-0) # group commits without waiting for more: the latency of one fsync
      "$rivulet" gateway --listen 127.0.0.1:0 --hat-listen "127.0.0.1:$port" --data "$2/data" --commit-ms 0 \
        >"$2/server.log" 2>&1 &
      ;;
    rivulet-respond-registered) # answered once registered, as hat's own server answers
      printf '[hat]\nrespond = "registered"\n' >"$2/gateway.toml"
      "$rivulet" gateway --config "$2/gateway.toml" --listen 127.0.0.1:0 --hat-listen "127.0.0.1:$port" \
        --data "$2/data" >"$2/server.log" 2>&1 &
      ;;
  esac
  pid=$!
  wait_port
}

cell() { # cell CLIENT SYSTEM LOAD-ARGS...
  local client=$1 system=$2 dir="$work/$2-$RANDOM"
  shift 2
  mkdir -p "$dir"
  start_server "$system" "$dir"
  local before after line
  before=$(cpu_seconds "$pid")
  case $client in
    python) line=$("$venv/bin/python" "$root/host-tests/bench/hat/hat_load.py" "$port" "$@") ;;
    rust) line=$("$rust_load" "$port" "$@") ;;
  esac
  after=$(cpu_seconds "$pid")
  kill -TERM "$pid"
  wait "$pid" || true
  echo "{\"client\":\"$client\",\"system\":\"$system\",\"load\":\"$*\",\"server_cpu_s\":$(awk -v a="$after" -v b="$before" 'BEGIN { printf "%.3f", a - b }'),\"result\":$line}" |
    tee -a "$work/results.jsonl"
}

loads=(
  "--clients 4 --events 500 --batch 1"
  "--clients 16 --events 250 --batch 1"
  "--clients 4 --events 10000 --batch 100"
  "--clients 64 --events 250 --batch 1"
)
systems=(hat-event-server rivulet rivulet-commit-ms-0 rivulet-respond-registered)
for run in $(seq "$runs"); do
  for client in "${clients[@]}"; do
    for load in "${loads[@]}"; do
      for system in "${systems[@]}"; do
        # shellcheck disable=SC2086 # the load is a list of arguments
        cell "$client" "$system" $load
      done
    done
  done
  echo "run $run of $runs done" >&2
done

python3 - "$work/results.jsonl" <<'EOF'
import json, statistics, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
print("| clients | load | server | events/s (median, range) | server CPU µs/event (median) | load CPU µs/event (median) | notified of published |")
print("|---|---|---|---|---|---|---|")
for client, load in dict.fromkeys((r["client"], r["load"]) for r in rows):
    for system in dict.fromkeys(r["system"] for r in rows):
        cells = [r for r in rows if r["client"] == client and r["load"] == load and r["system"] == system]
        rates = [c["result"]["events_per_s"] for c in cells]
        cpu = [c["server_cpu_s"] * 1e6 / c["result"]["published"] for c in cells]
        load_cpu = [c["result"]["load_cpu_s"] * 1e6 / c["result"]["published"] for c in cells]
        seen = f'{sum(c["result"]["notified"] for c in cells)} of {sum(c["result"]["published"] for c in cells)}'
        print(f"| {client} | `{load}` | {system} | {statistics.median(rates):,.0f} ({min(rates):,.0f}–{max(rates):,.0f}) "
              f"| {statistics.median(cpu):.1f} | {statistics.median(load_cpu):.1f} | {seen} |")
EOF
