#!/usr/bin/env bash
# A bounded soak: DURATION seconds (default 600) of mixed load through cratedock with the disk
# cache limit small enough that eviction runs all the time, on loopback only:
#   - wrk (CONNS connections) asks for index files and downloads of the generated registry
#     (examples/bench_registry.rs, ~2,000 crates), skewed towards a popular head (the i-th of
#     N paths with i = N * u^3), so there are hits, misses and evictions;
#   - beside it, `cargo fetch` of the 300-crate project with a fresh CARGO_HOME, again and
#     again until the time is up (each must succeed);
#   - RSS and open fds of cratedock at the start and the end, errors (wrk's non-2xx/3xx and
#     socket errors, failed fetches, 5xx, cut-short responses), evictions, the disk bytes
#     against the limit, and the hit ratio, from cratedock's own metrics.
# Writes target/bench/soak.md.
#
#   bash benches/soak.sh          # DURATION=600 DISK_MAX=268435456 CONNS=16
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-600}
DISK_MAX=${DISK_MAX:-268435456}
CONNS=${CONNS:-16}
UP_PORT=18900 CD_PORT=18901
command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk; }
cargo build --release --quiet --bin cratedock --example bench_registry
root=$(pwd)
work=$(mktemp -d -p /dev/shm cratedock-soak.XXXXXX)
out="$root/target/bench/soak.md"
mkdir -p "$(dirname "$out")"
up_pid="" cd_pid=""
cleanup() {
  for p in $cd_pid $up_pid; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

./target/release/examples/bench_registry "$UP_PORT" 0 "$work" >"$work/upstream.log" 2>&1 &
up_pid=$!
for _ in $(seq 600); do grep -q "ready on" "$work/upstream.log" && break; sleep 0.5; done
grep -q "ready on" "$work/upstream.log" || { echo "the upstream did not start"; exit 1; }

cat >"$work/cratedock.toml" <<TOML
[server]
listen = "127.0.0.1:$CD_PORT"
[storage]
data_dir = "$work/data"
[cache]
disk_max_bytes = $DISK_MAX
usage_write_interval_ms = 5000
[log]
level = "warn"
[registries.crates-io]
kind = "mirror"
upstream = "http://127.0.0.1:$UP_PORT/index/"
TOML
./target/release/cratedock serve --config "$work/cratedock.toml" >"$work/cratedock.log" 2>&1 &
cd_pid=$!
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$CD_PORT/health/ready" >/dev/null && break; sleep 0.1; done

rss() { awk '/VmRSS/ {print $2}' "/proc/$cd_pid/status"; }
fds() { ls "/proc/$cd_pid/fd" | wc -l; }
metric() { # sum of the series of metric $1 whose labels contain $2
  curl -s "http://127.0.0.1:$CD_PORT/metrics" | awk -v m="cratedock_$1" -v l="$2" \
    'index($0, m) == 1 && (substr($0, length(m) + 1, 1) == "{" || substr($0, length(m) + 1, 1) == " ") && index($0, l) { s += $NF } END { printf "%.0f", s }'
}
rss0=$(rss) fds0=$(fds)

cat >"$work/mixed.lua" <<'LUA'
local paths = {}
for line in io.lines(os.getenv("SOAK_PATHS")) do paths[#paths + 1] = line end
math.randomseed(os.time() + tonumber(tostring({}):sub(8), 16))
request = function()
  local u = math.random()
  return wrk.format("GET", paths[math.floor(#paths * u * u * u) + 1])
end
LUA
SOAK_PATHS="$work/paths.txt" wrk -t2 -c"$CONNS" -d"${DURATION}s" --timeout 30s \
  -s "$work/mixed.lua" "http://127.0.0.1:$CD_PORT" >"$work/wrk.txt" 2>&1 &
wrk_pid=$!
# The disk bytes every 5 s, for the peak.
( while kill -0 "$wrk_pid" 2>/dev/null; do metric cache_bytes 'tier="disk"' >>"$work/disk.txt"; echo >>"$work/disk.txt"; sleep 5; done ) &
sampler_pid=$!

mkdir -p "$work/cargo-home"
cat >"$work/cargo-home/config.toml" <<TOML
[source.crates-io]
replace-with = "cratedock"
[source.cratedock]
registry = "sparse+http://127.0.0.1:$CD_PORT/crates-io/index/"
TOML
fetches=0 failed_fetches=0
end=$(( $(date +%s) + DURATION ))
while [ "$(date +%s)" -lt "$end" ] && kill -0 "$wrk_pid" 2>/dev/null; do
  home="$work/home-$fetches"
  mkdir -p "$home" && cp "$work/cargo-home/config.toml" "$home/"
  if (cd "$work/project" && CARGO_HOME="$home" timeout 300 cargo generate-lockfile \
        && CARGO_HOME="$home" timeout 300 cargo fetch) >"$work/fetch.log" 2>&1; then
    :
  else
    failed_fetches=$((failed_fetches + 1)); cat "$work/fetch.log" >&2
  fi
  if [ "$fetches" = 0 ]; then cp "$work/fetch.log" "$work/first-fetch.log"; fi
  rm -rf "$home" "$work/project/Cargo.lock"
  fetches=$((fetches + 1))
done
wait "$wrk_pid" || true
wait "$sampler_pid" 2>/dev/null || true
sleep 6 # one more last-use write and eviction pass
rss1=$(rss) fds1=$(fds)

requests=$(awk '/requests in/ {print $1}' "$work/wrk.txt")
non2xx=$(awk '/Non-2xx/ {print $NF}' "$work/wrk.txt"); non2xx=${non2xx:-0}
sockerr=$(awk '/Socket errors/ {gsub(",", ""); print $4 + $6 + $8 + $10}' "$work/wrk.txt"); sockerr=${sockerr:-0}
hits=$(( $(metric cache_results_total registry) - $(metric cache_results_total 'result="miss"') ))
lookups=$(metric cache_results_total registry)
{
  echo "# Soak: $DURATION s of mixed load, disk_max_bytes = $DISK_MAX ($(date -u +%F))"
  echo
  echo "| figure | value |"
  echo "|---|---|"
  echo "| wrk requests (index files and downloads, $CONNS connections) | $requests |"
  echo "| wrk non-2xx/3xx, socket errors | $non2xx, $sockerr |"
  echo "| cargo generate-lockfile + fetch of 300 crates (fresh CARGO_HOME): runs, failed | $fetches, $failed_fetches |"
  echo "| crates the first fetch downloaded | $(grep -c 'Downloaded ' "$work/first-fetch.log") |"
  echo "| 5xx answered | $(metric http_requests_total 'status="5') |"
  echo "| responses cut short | $(metric responses_cut_short_total '') |"
  echo "| checksum failures, disk write errors | $(metric checksum_failures_total ''), $(metric disk_write_errors_total '') |"
  echo "| evictions (files), evicted bytes | $(metric cache_evictions_total ''), $(metric cache_evicted_bytes_total '') |"
  echo "| disk bytes at the end, peak of the 5 s samples / limit | $(metric cache_bytes 'tier="disk"'), $(sort -n "$work/disk.txt" | tail -1) / $DISK_MAX |"
  echo "| hit ratio (lookups not fetched from the upstream) | $(awk -v h="$hits" -v l="$lookups" 'BEGIN { printf "%.3f", (l ? h / l : 0) }') of $lookups |"
  echo "| RSS start -> end (KiB) | $rss0 -> $rss1 |"
  echo "| open fds start -> end | $fds0 -> $fds1 |"
  echo
  echo '```'
  cat "$work/wrk.txt"
  echo '```'
} | tee "$out"
