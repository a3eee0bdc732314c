#!/usr/bin/env bash
# Prefetch against `cargo fetch`, cold, side by side in one run: the generated upstream of
# examples/bench_registry.rs (a project depending on 300 crates) answers every request after
# LATENCY_MS (30 ms). Each round starts one release cratedock on an empty data folder with two
# mirrors of that upstream, `fetch` and `prefetch` (separate caches); the project's Cargo.lock is
# made once beforehand through a third instance, so neither mirror is warmed. Then, in an order
# that alternates between rounds:
#   - `cargo fetch` of the project with a fresh CARGO_HOME whose crates.io is the `fetch` mirror
#     (cargo reads every index file and downloads every crate through cratedock);
#   - `cratedock prefetch --registry prefetch PROJECT` (index files and crate files through the
#     same verified path, from the lock file).
# Wall time of each, ROUNDS rounds; the table gives the medians and the prefetch/fetch ratio.
# Loopback only.
#
#   bash benches/prefetch.sh     # ROUNDS=3 LATENCY_MS=30
#
# Writes the table to target/bench/prefetch.md.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-3}
LATENCY_MS=${LATENCY_MS:-30}
UP_PORT=18860 CD_PORT=18861
root=$(pwd)
work=$(mktemp -d -p /dev/shm cratedock-prefetch-bench.XXXXXX)
out="$root/target/bench/prefetch.md"
mkdir -p "$(dirname "$out")"
up_pid="" cd_pid=""
stop() { for p in "$@"; do if [ -n "$p" ]; then kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; fi; done; }
cleanup() { stop "$up_pid" "$cd_pid"; rm -rf "$work"; }
trap cleanup EXIT
trap 'exit 1' INT TERM
wait_http() { for _ in $(seq 600); do curl -sf -o /dev/null "$1" && return 0; sleep 0.1; done; echo "no answer from $1" >&2; exit 1; }

cargo build --release --quiet --bin cratedock --example bench_registry
"$root/target/release/examples/bench_registry" "$UP_PORT" "$LATENCY_MS" "$work" > "$work/upstream.log" 2>&1 &
up_pid=$!
for _ in $(seq 1200); do grep -q '^ready' "$work/upstream.log" && break; sleep 0.1; done
grep -q '^ready' "$work/upstream.log" || { echo "the upstream did not get ready" >&2; exit 1; }

start() { # $1: data folder
  cat > "$work/cratedock.toml" <<TOML
[server]
listen = "127.0.0.1:$CD_PORT"
[storage]
data_dir = "$1"
[log]
level = "warn"
[registries.fetch]
kind = "mirror"
upstream = "http://127.0.0.1:$UP_PORT/index/"
[registries.prefetch]
kind = "mirror"
upstream = "http://127.0.0.1:$UP_PORT/index/"
TOML
  "$root/target/release/cratedock" serve --config "$work/cratedock.toml" > "$work/cratedock.log" 2>&1 &
  cd_pid=$!
  wait_http "http://127.0.0.1:$CD_PORT/health/ready"
}

cargo_home() { # $1: folder, $2: registry
  mkdir -p "$1"
  cat > "$1/config.toml" <<TOML
[source.crates-io]
replace-with = "cratedock"
[source.cratedock]
registry = "sparse+http://127.0.0.1:$CD_PORT/$2/index/"
[net]
retry = 0
TOML
}

# The lock file, made once through a throw-away instance.
project="$work/project"
start "$work/data-lock"
cargo_home "$work/home-lock" fetch
CARGO_HOME="$work/home-lock" cargo generate-lockfile --quiet --manifest-path "$project/Cargo.toml"
stop "$cd_pid"; cd_pid=""
packages=$(grep -c '^\[\[package\]\]' "$project/Cargo.lock")

now() { date +%s.%N; }
: > "$work/fetch.times"; : > "$work/prefetch.times"
for i in $(seq "$ROUNDS"); do
  rm -rf "$work/data" "$work/home-$i"
  start "$work/data"
  cargo_home "$work/home-$i" fetch
  run_fetch() {
    local t0; t0=$(now)
    CARGO_HOME="$work/home-$i" cargo fetch --quiet --manifest-path "$project/Cargo.toml"
    echo "$(now) - $t0" | bc >> "$work/fetch.times"
  }
  run_prefetch() {
    local t0; t0=$(now)
    CRATEDOCK_URL="http://127.0.0.1:$CD_PORT" CRATEDOCK_TOKEN_FILE="$work/data/admin-token" \
      "$root/target/release/cratedock" prefetch --registry prefetch "$project" > "$work/prefetch.out" 2>&1 \
      || { cat "$work/prefetch.out" >&2; exit 1; }
    echo "$(now) - $t0" | bc >> "$work/prefetch.times"
  }
  if [ $((i % 2)) -eq 1 ]; then run_fetch; run_prefetch; else run_prefetch; run_fetch; fi
  echo "round $i: cargo fetch $(tail -1 "$work/fetch.times") s, prefetch $(tail -1 "$work/prefetch.times") s ($(tail -1 "$work/prefetch.out"))"
  stop "$cd_pid"; cd_pid=""
done
median() { sort -n | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
f=$(median < "$work/fetch.times"); p=$(median < "$work/prefetch.times")
{
  echo "# Prefetch against cargo fetch, cold ($(date -u +%Y-%m-%d), $ROUNDS rounds, medians)"
  echo
  echo "A lock file of $packages packages; the upstream answers every request after $LATENCY_MS ms."
  echo
  echo "| | wall time |"
  echo "|---|---|"
  echo "| \`cargo fetch\` through cratedock, cold | ${f} s |"
  echo "| \`cratedock prefetch\`, cold | ${p} s |"
  echo "| prefetch / fetch | $(echo "scale=2; $p / $f" | bc) |"
} | tee "$out"
