#!/usr/bin/env bash
# File transfer: `rivulet send-file` and `rivulet fetch-file` of one file (100 MiB by default)
# through a release gateway on loopback, against a raw TCP copy of the same file as the ceiling
# (Python's socket.sendfile into a receiver that writes the bytes to a file and fsyncs it, as the
# gateway does; no hashing, no chunks, no acknowledgements) and `sha256sum` of it (the hash each
# side computes once). Each row is one run; prints a Markdown table: wall seconds, MB/s (10^6
# bytes per second), and the CPU seconds of each process (the gateway's from /proc/PID/stat,
# the others' from the shell's `times`, as they end).
#
#   host-tests/bench/files.sh [MIB] [RUNS]      # from anywhere; MIB defaults to 100, RUNS to 3
#
# Builds target/release/rivulet (nothing to do when it is up to date); needs python3.
# Nothing here asserts a time: the figures go into docs/BENCHMARKS.md with this command.
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
mib=${1:-100}
runs=${2:-3}
rivulet=$root/target/release/rivulet
(cd "$root" && cargo build --release --locked -p rivulet-gateway)
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
ticks=$(getconf CLK_TCK)
port=23290
bytes=$((mib * 1048576))
head -c "$bytes" /dev/urandom >"$work/file.bin"

cpu_of() { awk -v hz="$ticks" '{ sub(/^.*\) /, ""); printf "%.2f", ($12 + $13) / hz }' "/proc/$1/stat"; }
now() { date +%s.%N; }
# Wall seconds and MB/s between two `now`s.
rate() { awk -v a="$1" -v b="$2" -v n="$bytes" 'BEGIN { s = b - a; printf "%.2f | %.0f", s, n / s / 1e6 }'; }
# Sets $cpu to the CPU seconds (user + system) of the children this shell has waited for since
# the last call, from the `times` builtin's second line ("0m1.234s 0m0.056s"). Not in a `$(...)`:
# a subshell has its own children.
mark_cpu() {
  local total
  times >"$work/times" # the builtin, in this shell: in a `$(...)` it would report the subshell's
  total=$(sed -n 2p "$work/times" | awk '{ t = 0; for (i = 1; i <= 2; i++) { split($i, p, /[ms]/); t += p[1] * 60 + p[2] } print t }')
  cpu=$(awk -v a="${last_total:-0}" -v b="$total" 'BEGIN { printf "%.2f", b - a }')
  last_total=$total
}

cat >"$work/recv.py" <<'PY'
import os, socket, sys
server = socket.create_server(("127.0.0.1", int(sys.argv[1])))
print("ready", flush=True)
conn, _ = server.accept()
with open(sys.argv[2], "wb") as out:
    while chunk := conn.recv(1 << 20):
        out.write(chunk)
    out.flush()
    os.fsync(out.fileno())
conn.close()
PY
cat >"$work/send.py" <<'PY'
import socket, sys
with socket.create_connection(("127.0.0.1", int(sys.argv[1]))) as s, open(sys.argv[2], "rb") as f:
    s.sendfile(f)
PY

echo "| run | what | seconds | MB/s | CPU s (sender) | CPU s (receiver) |"
echo "|---|---|---|---|---|---|"
for run in $(seq "$runs"); do
  # The ceiling: a raw TCP copy to a file, synced.
  rm -f "$work/copy.bin"
  python3 "$work/recv.py" "$port" "$work/copy.bin" >"$work/recv.out" &
  receiver=$!
  until grep -q ready "$work/recv.out" 2>/dev/null; do sleep 0.02; done
  mark_cpu
  start=$(now)
  python3 "$work/send.py" "$port" "$work/file.bin"
  wait "$receiver"
  end=$(now)
  mark_cpu
  echo "| $run | raw TCP copy + fsync | $(rate "$start" "$end") | $cpu (both) | |"
  cmp -s "$work/file.bin" "$work/copy.bin"

  mark_cpu
  start=$(now)
  sha256sum "$work/file.bin" >/dev/null
  end=$(now)
  mark_cpu
  echo "| $run | sha256sum | $(rate "$start" "$end") | $cpu | |"

  rm -rf "$work/gw" "$work/fetched.bin"
  "$rivulet" gateway --listen "127.0.0.1:$port" --data "$work/gw" >"$work/gw.out" 2>"$work/gw.err" &
  gateway=$!
  until grep -q listening "$work/gw.out" 2>/dev/null; do sleep 0.02; done
  before=$(cpu_of "$gateway")
  mark_cpu
  start=$(now)
  "$rivulet" send-file "$work/file.bin" --gateway "127.0.0.1:$port" >/dev/null
  end=$(now)
  after=$(cpu_of "$gateway")
  mark_cpu
  echo "| $run | rivulet send-file | $(rate "$start" "$end") | $cpu | $(awk -v a="$before" -v b="$after" 'BEGIN { printf "%.2f", b - a }') |"
  before=$after
  start=$(now)
  "$rivulet" fetch-file file.bin "$work/fetched.bin" --gateway "127.0.0.1:$port" >/dev/null
  end=$(now)
  after=$(cpu_of "$gateway")
  mark_cpu
  echo "| $run | rivulet fetch-file | $(rate "$start" "$end") | $(awk -v a="$before" -v b="$after" 'BEGIN { printf "%.2f", b - a }') (gateway) | $cpu |"
  cmp -s "$work/file.bin" "$work/fetched.bin"
  kill "$gateway"
  wait "$gateway" || true
done
