#!/usr/bin/env bash
# The broker comparison of docs/BENCHMARKS.md, in one run on this machine: builds the gateway and
# the harness, starts each broker fresh on loopback for every cell, drives the same workloads
# against each (3 runs per cell), profiles the gateway with perf, and rewrites the generated
# sections of docs/BENCHMARKS.md and docs/benchmarks.svg. About 7 minutes plus the builds; needs
# a quiet-ish machine and proves nothing by passing, so CI does not run it.
#
# Arguments go to `compare run` (see `compare run --help`), e.g. a quick trial that leaves the
# docs alone:  host-tests/bench/run.sh --repeats 1 --seconds 1 --messages-scale 0.2 --no-docs
set -euo pipefail
cd "$(dirname "$0")/../.."

write_docs=(--docs docs/BENCHMARKS.md --svg docs/benchmarks.svg)
args=()
for arg in "$@"; do
  if [ "$arg" = "--no-docs" ]; then write_docs=(); else args+=("$arg"); fi
done

# The brokers and perf come from Debian; a fresh machine has none of them.
missing=()
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || missing+=(mosquitto)
command -v nats-server >/dev/null 2>&1 || [ -x /usr/sbin/nats-server ] || missing+=(nats-server)
command -v perf >/dev/null 2>&1 || missing+=(linux-perf)
if [ ${#missing[@]} -gt 0 ]; then
  echo "+ apt-get install ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
fi
export PATH="$PATH:/usr/sbin"

echo "+ cargo build --release -p rivulet-gateway"
cargo build --release --locked -p rivulet-gateway
echo "+ cargo build --release (host-tests/bench)"
cargo build --release --locked --manifest-path host-tests/bench/Cargo.toml

exec host-tests/bench/target/release/compare run \
  --rivulet target/release/rivulet \
  --shown-command "host-tests/bench/run.sh $*" \
  ${write_docs[@]+"${write_docs[@]}"} ${args[@]+"${args[@]}"}
