#!/usr/bin/env bash
# Start-up time and RSS of cratedock against the number of entries in its bookkeeping
# (1k, 10k, 100k crate files plus as many index files), to show that memory does not grow
# with the disk cache and that start-up stays fast. Loopback only; each start is bounded.
#
#   bash benches/bookkeeping.sh            # COUNTS="1000 10000 100000" REPEAT=3
set -euo pipefail
cd "$(dirname "$0")/.."
COUNTS=${COUNTS:-"1000 10000 100000"}
REPEAT=${REPEAT:-3}
PORT=18900
cargo build --release --quiet --bin cratedock --example fill_bookkeeping
work=$(mktemp -d -p /dev/shm cratedock-bookkeeping.XXXXXX)
pid=""
cleanup() { if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi; rm -rf "$work"; }
trap cleanup EXIT

# The upstream is a closed loopback port: nothing leaves the machine.
cat > "$work/cratedock.toml" <<TOML
[log]
level = "warn"
[registries.crates-io]
kind = "mirror"
upstream = "http://127.0.0.1:9/index/"
TOML
TOUCH=${TOUCH:-10000}

echo "| entries (crates + index files) | start to ready, ms (median of $REPEAT) | RSS when ready, MiB | RSS after reading up to $TOUCH index files, MiB |"
echo "|---|---|---|---|"
for n in 0 $COUNTS; do
  dir="$work/data-$n"
  if [ "$n" -gt 0 ]; then ./target/release/examples/fill_bookkeeping "$dir" "$n" >/dev/null; else mkdir -p "$dir"; fi
  times=() rss_ready=0 rss_after=0
  for _ in $(seq "$REPEAT"); do
    t0=$(date +%s%N)
    ./target/release/cratedock serve --config "$work/cratedock.toml" --listen "127.0.0.1:$PORT" --data-dir "$dir" >/dev/null 2>&1 &
    pid=$!
    ok=""
    for _ in $(seq 2000); do
      if curl -sf -o /dev/null "http://127.0.0.1:$PORT/health/ready"; then ok=1; break; fi
      sleep 0.005
    done
    [ -n "$ok" ] || { echo "cratedock did not get ready with $n entries" >&2; exit 1; }
    t1=$(date +%s%N)
    times+=($(( (t1 - t0) / 1000000 )))
    rss_ready=$(awk '/VmRSS/ { print $2 }' "/proc/$pid/status")
    # Read stored index files (disk hits that fill the memory tier, bounded by its size).
    for i in $(seq 0 $((TOUCH - 1))); do
      [ "$i" -lt "$n" ] || break
      printf 'url = "http://127.0.0.1:%s/crates-io/index/fi/ll/filler-crate-%06d"\noutput = "/dev/null"\n' "$PORT" "$i"
    done > "$work/urls"
    [ -s "$work/urls" ] && curl -s --no-progress-meter --parallel --parallel-max 16 -K "$work/urls" || true
    rss_after=$(awk '/VmRSS/ { print $2 }' "/proc/$pid/status")
    kill "$pid"; wait "$pid" 2>/dev/null || true; pid=""
  done
  med=$(printf '%s\n' "${times[@]}" | sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }')
  awk -v n="$n" -v t="$med" -v a="$rss_ready" -v b="$rss_after" \
    'BEGIN { printf "| %d + %d | %d | %.1f | %.1f |\n", n, n, t, a / 1024, b / 1024 }'
done
