#!/usr/bin/env bash
# Two builds of the gateway side by side in one run: `rivulet bench` 1→1, 1→100 and 100→1 at 64 B against
# each build's own gateway (fresh store, default settings, loopback), the builds alternating cell by
# cell so that the machine's drift hits both alike. Prints one JSON line per run and a median table.
#
#   host-tests/bench/ab.sh BEFORE/rivulet AFTER/rivulet [RUNS]
#
# Build each with `cargo build --release --locked -p rivulet-gateway` in its checkout. Nothing here
# asserts a time: the figures go into docs/BENCHMARKS.md with this command.
set -euo pipefail

before=${1:?usage: ab.sh BEFORE/rivulet AFTER/rivulet [RUNS]}
after=${2:?usage: ab.sh BEFORE/rivulet AFTER/rivulet [RUNS]}
runs=${3:-3}
port=17791
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# cell NAME BINARY ARGS...: one run of `rivulet bench ARGS` against a fresh gateway of BINARY.
cell() {
  local name=$1 bin=$2
  shift 2
  local data="$work/data-$name-$RANDOM"
  "$bin" gateway --listen "127.0.0.1:$port" --data "$data" >"$work/gateway.log" 2>&1 &
  local pid=$!
  for _ in $(seq 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then break; fi
    sleep 0.1
  done
  local line
  line=$("$bin" bench --gateway "127.0.0.1:$port" --json --drain 3 "$@")
  kill -TERM "$pid"
  wait "$pid" || true
  rm -rf "$data"
  echo "{\"build\":\"$name\",\"args\":\"$*\",\"report\":$line}" | tee -a "$work/results.jsonl"
}

workloads=(
  "--publishers 1 --subscribers 1 --size 64 --duration 8"
  "--publishers 1 --subscribers 100 --size 64 --count 20000"
  "--publishers 100 --subscribers 1 --size 64 --count 1000"
)
for run in $(seq "$runs"); do
  for workload in "${workloads[@]}"; do
    # shellcheck disable=SC2086 # the workload is a list of arguments
    cell before "$before" $workload
    # shellcheck disable=SC2086
    cell after "$after" $workload
  done
  echo "run $run of $runs done" >&2
done

python3 - "$work/results.jsonl" <<'EOF'
import json, statistics, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
print("| workload | build | delivered msg/s (median, range) | gateway CPU µs/msg (median) | lost | runs that lost |")
print("|---|---|---|---|---|---|")
for args in dict.fromkeys(r["args"] for r in rows):
    for build in ("before", "after"):
        cells = [r["report"] for r in rows if r["args"] == args and r["build"] == build]
        rates = [c["msgs_per_sec"] for c in cells]
        cpus = [c["gateway_cpu_us_per_msg"] for c in cells if c["gateway_cpu_us_per_msg"] is not None]
        lost = sum(c["lost"] for c in cells)
        losing = sum(1 for c in cells if c["lost"] > 0)
        cpu = f"{statistics.median(cpus):.2f}" if cpus else "?"
        rate = f"{statistics.median(rates):,.0f} ({min(rates):,.0f}–{max(rates):,.0f})"
        print(f"| `{args}` | {build} | {rate} | {cpu} | {lost} | {losing} of {len(cells)} |")
EOF
