#!/usr/bin/env bash
# What the advisory database costs at start: load time and resident memory of the full
# RustSec advisory-db, side by side in one run. One release cratedock starts without
# [advisories], then again with `advisories.path` set to a checkout of advisory-db; each time,
# after /health/ready, the process's resident memory is read from /metrics
# (cratedock_process_resident_memory_bytes), and the load time from the log line
# "advisory database loaded" (its `ms` field). ROUNDS rounds, alternating which goes first; the
# table gives medians.
#
#   ADVISORY_DB=/path/to/advisory-db bash benches/advisory_load.sh    # ROUNDS=5
#
# Without ADVISORY_DB the script clones https://github.com/rustsec/advisory-db (the only step that
# needs the network). Writes the table to target/bench/advisory_load.md. Loopback only.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-5}
PORT=18850
root=$(pwd)
work=$(mktemp -d -p /dev/shm cratedock-advisory-bench.XXXXXX)
out="$root/target/bench/advisory_load.md"
mkdir -p "$(dirname "$out")"
cd_pid=""
cleanup() { if [ -n "$cd_pid" ]; then kill "$cd_pid" 2>/dev/null || true; wait "$cd_pid" 2>/dev/null || true; fi; rm -rf "$work"; }
trap cleanup EXIT
trap 'exit 1' INT TERM

db=${ADVISORY_DB:-}
if [ -z "$db" ]; then
  git clone --quiet --depth 1 https://github.com/rustsec/advisory-db "$work/advisory-db"
  db="$work/advisory-db"
fi
[ -d "$db/crates" ] || { echo "$db has no crates/ folder: not an advisory database" >&2; exit 1; }
count=$(find "$db/crates" -name '*.md' | wc -l)
cargo build --release --quiet --bin cratedock

run() { # $1: with|without; prints "RSS_BYTES LOAD_MS"
  local data="$work/data-$1"
  rm -rf "$data"
  {
    printf '[server]\nlisten = "127.0.0.1:%s"\n[storage]\ndata_dir = "%s"\n[log]\nlevel = "info"\n' "$PORT" "$data"
    if [ "$1" = with ]; then printf '[advisories]\npath = "%s"\n' "$db"; fi
  } > "$work/cratedock.toml"
  "$root/target/release/cratedock" serve --config "$work/cratedock.toml" > "$work/log-$1" 2>&1 &
  cd_pid=$!
  for _ in $(seq 600); do curl -sf -o /dev/null "http://127.0.0.1:$PORT/health/ready" && break; sleep 0.05; done
  curl -sf -o /dev/null "http://127.0.0.1:$PORT/health/ready" || { echo "cratedock did not get ready" >&2; cat "$work/log-$1" >&2; exit 1; }
  local rss ms
  rss=$(curl -sf "http://127.0.0.1:$PORT/metrics" | awk '/^cratedock_process_resident_memory_bytes /{print $2}')
  ms=$(grep -o 'advisory database loaded.*' "$work/log-$1" | grep -o 'ms=[0-9]*' | head -1 | cut -d= -f2 || true)
  kill "$cd_pid"; wait "$cd_pid" 2>/dev/null || true; cd_pid=""
  echo "$rss ${ms:-0}"
}

median() { sort -n | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
: > "$work/without"; : > "$work/with"
for i in $(seq "$ROUNDS"); do
  if [ $((i % 2)) -eq 1 ]; then order="without with"; else order="with without"; fi
  for o in $order; do run "$o" >> "$work/$o"; done
done
rss_without=$(awk '{print $1}' "$work/without" | median)
rss_with=$(awk '{print $1}' "$work/with" | median)
load_ms=$(awk '{print $2}' "$work/with" | median)
loaded=$(grep -o 'advisories=[0-9]*' "$work/log-with" | head -1 | cut -d= -f2)
{
  echo "# The advisory database at start ($(date -u +%Y-%m-%d), $ROUNDS rounds, medians)"
  echo
  echo "database: $db ($count advisory files; $loaded loaded)"
  echo
  echo "| | resident memory after ready | load time |"
  echo "|---|---|---|"
  echo "| without [advisories] | $((rss_without / 1024)) KiB | - |"
  echo "| with the full database | $((rss_with / 1024)) KiB | ${load_ms} ms |"
  echo "| difference | $(( (rss_with - rss_without) / 1024 )) KiB | |"
} | tee "$out"
