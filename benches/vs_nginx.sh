#!/usr/bin/env bash
# cratedock against nginx proxy_cache (benches/nginx.conf), side by side in one run, on
# loopback only, every load bounded in time:
#   1. a generated upstream registry (examples/bench_registry.rs): ~2,000 crates, index files
#      200 B to 2 MB, crate files 2 KB to 10 MB, long-tailed;
#   2. hot paths with wrk (HTTP/1.1, 64 connections): a 181 KB index file, a 100 KB crate and a
#      1.5 MB crate, over plain HTTP and over HTTPS, both servers alternating, ROUNDS times;
#   3. cold `cargo fetch` of a 300-crate lockfile with the upstream answering after
#      UPSTREAM_LATENCY_MS, each repetition with empty server caches and CARGO_HOME; then warm
#      (server cache filled, empty CARGO_HOME); over plain HTTP with cargo's defaults (cargo
#      asks for `Upgrade: h2c`: cratedock upgrades, nginx stays on HTTP/1.1), over HTTPS (HTTP/2
#      by ALPN, multiplexed, both alike) and over plain HTTP/1.1 only (`http.multiplexing =
#      false`: cargo uses parallel connections to both);
#   4. CPU seconds and peak RSS of each server.
# It prints a table of cratedock / nginx ratios and writes it to target/bench/vs_nginx.md.
#
#   bash benches/vs_nginx.sh     # ROUNDS=3 DURATION=5 FETCH_ROUNDS=5 UPSTREAM_LATENCY_MS=30
#
# Caches and CARGO_HOMEs live on a tmpfs (/dev/shm): recreating folders on ext4 slows later
# runs (see ../shared/docs/benchmarking.md). Installs nginx and wrk with apt-get when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-3}
FETCH_ROUNDS=${FETCH_ROUNDS:-5}
DURATION=${DURATION:-5}
UPSTREAM_LATENCY_MS=${UPSTREAM_LATENCY_MS:-30}
UP_PORT=18800 CD_PORT=18801 NG_PORT=18802 CD_TLS_PORT=18803 NG_TLS_PORT=18804

for tool in nginx wrk; do
  command -v "$tool" >/dev/null || { apt-get update -qq && apt-get install -y -qq nginx-light wrk || apt-get install -y -qq nginx wrk; }
done
cargo build --release --quiet --bin cratedock --example bench_registry
root=$(pwd)
work=$(mktemp -d -p /dev/shm cratedock-bench.XXXXXX)
out="$root/target/bench/vs_nginx.md"
mkdir -p "$(dirname "$out")"
# A throw-away certificate for localhost, shared by both servers' HTTPS listeners.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 \
  -subj /CN=localhost -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
  -keyout "$work/key.pem" -out "$work/cert.pem" 2>/dev/null

up_pid="" cd_pid="" ng_pid=""
stop() { # kill and reap; a killed child's status must not end the script (set -e)
  for p in "$@"; do
    if [ -n "$p" ]; then kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; fi
  done
}
cleanup() {
  stop "$up_pid" "$cd_pid"
  if [ -f "$work/nginx.pid" ]; then kill "$(cat "$work/nginx.pid")" 2>/dev/null || true; fi
  sleep 0.3
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 1' INT TERM

wait_http() { for _ in $(seq 600); do curl -sf -o /dev/null "$1" && return 0; sleep 0.1; done; echo "no answer from $1" >&2; exit 1; }

start_upstream() { # latency_ms
  stop "$up_pid"
  "$root/target/release/examples/bench_registry" "$UP_PORT" "$1" "$work" > "$work/upstream.log" 2>&1 &
  up_pid=$!
  # It serves while it generates; it is ready when it says so.
  for _ in $(seq 1200); do grep -q '^ready' "$work/upstream.log" && return 0; sleep 0.1; done
  echo "the upstream did not get ready" >&2; exit 1
}

start_cratedock() { # cache dir
  stop "$cd_pid"
  cat > "$work/cratedock.toml" <<TOML
[server]
listen = "127.0.0.1:$CD_PORT"
[server.tls]
listen = "127.0.0.1:$CD_TLS_PORT"
cert_file = "$work/cert.pem"
key_file = "$work/key.pem"
[storage]
data_dir = "$1"
[cache]
memory_max_bytes = 67108864
[log]
level = "warn"
[registries.crates-io]
kind = "mirror"
upstream = "http://127.0.0.1:$UP_PORT/index/"
index_ttl_ms = 600000
TOML
  "$root/target/release/cratedock" serve --config "$work/cratedock.toml" > "$work/cratedock.log" 2>&1 &
  cd_pid=$!
  wait_http "http://127.0.0.1:$CD_PORT/health/ready"
}

start_nginx() { # cache dir
  if [ -f "$work/nginx.pid" ]; then kill "$(cat "$work/nginx.pid")" 2>/dev/null || true; sleep 0.5; fi
  mkdir -p "$work/nginx-tmp" "$1"
  sed -e "s#@WORK@/nginx-cache#$1#; s#@WORK@#$work#g; s#@PORT@#$NG_PORT#g; s#@TLS_PORT@#$NG_TLS_PORT#g; s#@UPSTREAM_PORT@#$UP_PORT#g" \
    benches/nginx.conf > "$work/nginx.conf"
  nginx -c "$work/nginx.conf" -p "$work" -e "$work/nginx-error.log"
  wait_http "http://127.0.0.1:$NG_PORT/crates-io/index/config.json"
  ng_pid=$(cat "$work/nginx.pid")
}

pids_of() { # cratedock | nginx: the server's processes
  if [ "$1" = cratedock ]; then echo "$cd_pid"; else echo "$ng_pid $(pgrep -P "$ng_pid" | tr '\n' ' ')"; fi
}
cpu_ticks() { local t=0; for p in $(pids_of "$1"); do t=$((t + $(awk '{ print $14 + $15 }' "/proc/$p/stat"))); done; echo "$t"; }
peak_rss_kb() { local t=0; for p in $(pids_of "$1"); do t=$((t + $(awk '/VmHWM/ { print $2 }' "/proc/$p/status"))); done; echo "$t"; }

url_of() { # system, kind (index|small|large, with -tls: over HTTPS)
  local base kind=${2%-tls}
  case "$1:$2" in
    cratedock:*-tls) base="https://localhost:$CD_TLS_PORT" ;; nginx:*-tls) base="https://localhost:$NG_TLS_PORT" ;;
    cratedock:*) base="http://127.0.0.1:$CD_PORT" ;; nginx:*) base="http://127.0.0.1:$NG_PORT" ;;
  esac
  case "$1:$kind" in
    *:index) echo "$base/crates-io/index/ho/t-/hot-index" ;;
    cratedock:small) echo "$base/crates-io/api/v1/crates/hot-small/1.0.0/download" ;;
    cratedock:large) echo "$base/crates-io/api/v1/crates/hot-large/1.0.0/download" ;;
    nginx:small) echo "$base/dl/hot-small/hot-small-1.0.0.crate" ;;
    nginx:large) echo "$base/dl/hot-large/hot-large-1.0.0.crate" ;;
  esac
}

to_ms() { awk '{ v = $1; if (v ~ /us$/) { sub(/us$/, "", v); v /= 1000 } else if (v ~ /ms$/) { sub(/ms$/, "", v) } else if (v ~ /s$/) { sub(/s$/, "", v); v *= 1000 } printf "%.3f", v }'; }
median() { printf '%s\n' "$@" | sort -g | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }
spread() { printf '%s\n' "$@" | sort -g | awk 'NR == 1 { lo = $1 } { hi = $1 } END { printf "%s-%s", lo, hi }'; }

declare -A R   # R[system,metric] = space-separated samples
add() { R[$1,$2]="${R[$1,$2]:-} $3"; }

echo "== generating the upstream registry"
start_upstream 0
cat "$work/upstream.log"
start_cratedock "$work/cd-hot"
start_nginx "$work/ng-hot"

echo "== hot paths: wrk -t2 -c64 -d${DURATION}s --latency, $ROUNDS rounds"
KINDS="index small large index-tls small-tls large-tls"
for sys in cratedock nginx; do for kind in $KINDS; do
  curl -sf --cacert "$work/cert.pem" -o /dev/null "$(url_of $sys $kind)"
  curl -sf --cacert "$work/cert.pem" -o /dev/null "$(url_of $sys $kind)"
done; done
cd_cpu0=$(cpu_ticks cratedock) ng_cpu0=$(cpu_ticks nginx)
for r in $(seq "$ROUNDS"); do
  order="cratedock nginx"; [ $((r % 2)) -eq 0 ] && order="nginx cratedock"
  for kind in $KINDS; do
    for sys in $order; do
      res=$(wrk -t2 -c64 -d"${DURATION}s" --latency "$(url_of $sys $kind)")
      rps=$(echo "$res" | awk '/^Requests\/sec/ { print $2 }')
      p50=$(echo "$res" | awk '$1 == "50%" { print $2 }' | to_ms)
      p99=$(echo "$res" | awk '$1 == "99%" { print $2 }' | to_ms)
      non2xx=$(echo "$res" | awk '/Non-2xx/ { print $NF }')
      [ -n "$non2xx" ] && { echo "$sys $kind: $non2xx non-2xx answers" >&2; exit 1; }
      add "$sys" "$kind-rps" "$rps"; add "$sys" "$kind-p50" "$p50"; add "$sys" "$kind-p99" "$p99"
      echo "round $r $kind $sys: $rps req/s, p50 ${p50} ms, p99 ${p99} ms"
    done
  done
done
hot_cpu_cd=$(( $(cpu_ticks cratedock) - cd_cpu0 )) hot_cpu_ng=$(( $(cpu_ticks nginx) - ng_cpu0 ))
rss_hot_cd=$(peak_rss_kb cratedock) rss_hot_ng=$(peak_rss_kb nginx)

echo "== cargo fetch of the 300-crate lockfile, upstream latency ${UPSTREAM_LATENCY_MS} ms"
start_upstream "$UPSTREAM_LATENCY_MS"
fetch() { # system, http|https|http1: runs cargo fetch with an empty CARGO_HOME, prints seconds
  local port home scheme=$2 multiplexing=true
  if [ "$2" = http1 ]; then scheme=http multiplexing=false; fi
  case "$1:$scheme" in
    cratedock:http) port=$CD_PORT ;; nginx:http) port=$NG_PORT ;;
    cratedock:https) port=$CD_TLS_PORT ;; nginx:https) port=$NG_TLS_PORT ;;
  esac
  home=$(mktemp -d -p "$work" home.XXXXXX)
  printf '[http]\ncainfo = "%s"\nmultiplexing = %s\n[source.crates-io]\nreplace-with = "mirror"\n[source.mirror]\nregistry = "sparse+%s://localhost:%s/crates-io/index/"\n' "$work/cert.pem" "$multiplexing" "$scheme" "$port" > "$home/config.toml"
  local t0 t1
  t0=$(date +%s.%N)
  (cd "$work/project" && CARGO_HOME="$home" CARGO_TARGET_DIR="$work/target" cargo fetch --locked -q)
  t1=$(date +%s.%N)
  rm -rf "$home"
  echo "$t1 - $t0" | bc
}
# One lockfile for both (through cratedock; the lockfile names crates.io either way).
start_cratedock "$work/cd-lock"
(cd "$work/project" && CARGO_HOME="$(mktemp -d -p "$work")" && printf '[source.crates-io]\nreplace-with = "m"\n[source.m]\nregistry = "sparse+http://127.0.0.1:%s/crates-io/index/"\n' "$CD_PORT" > "$CARGO_HOME/config.toml" && CARGO_HOME=$CARGO_HOME cargo generate-lockfile -q)
echo "lockfile: $(grep -c '^name = ' "$work/project/Cargo.lock") packages"
for r in $(seq "$FETCH_ROUNDS"); do
  order="cratedock nginx"; [ $((r % 2)) -eq 0 ] && order="nginx cratedock"
  for sys in $order; do
    for scheme in http https http1; do
      if [ "$sys" = cratedock ]; then start_cratedock "$work/cd-cold-$r-$scheme"; else start_nginx "$work/ng-cold-$r-$scheme"; fi
      cold=$(fetch "$sys" "$scheme"); warm=$(fetch "$sys" "$scheme")
      add "$sys" "cold-$scheme" "$cold"; add "$sys" "warm-$scheme" "$warm"
      echo "round $r $sys $scheme: cold ${cold} s, warm ${warm} s, peak RSS $(( $(peak_rss_kb "$sys") / 1024 )) MiB"
    done
    if [ "$sys" = cratedock ]; then rss_fetch_cd=$(peak_rss_kb cratedock); else rss_fetch_ng=$(peak_rss_kb nginx); fi
  done
done

row() { # label, metric, lower-is-better
  local c n
  c=$(median ${R[cratedock,$2]}); n=$(median ${R[nginx,$2]})
  awk -v l="$1" -v c="$c" -v n="$n" -v cs="$(spread ${R[cratedock,$2]})" -v ns="$(spread ${R[nginx,$2]})" \
    'BEGIN { printf "| %s | %s (%s) | %s (%s) | %.2f |\n", l, c, cs, n, ns, (n > 0 ? c / n : 0) }'
}
{
  echo "# cratedock vs nginx proxy_cache"
  echo
  echo "$(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores; wrk -t2 -c64 -d${DURATION}s, HTTP/1.1, medians of $ROUNDS rounds (min-max); cargo fetch: medians of $FETCH_ROUNDS rounds, upstream latency ${UPSTREAM_LATENCY_MS} ms"
  echo
  echo "| measure | cratedock | nginx | cratedock / nginx |"
  echo "|---|---|---|---|"
  row "hot index 181 KB, req/s" index-rps
  row "hot index 181 KB, p50 ms" index-p50
  row "hot index 181 KB, p99 ms" index-p99
  row "hot crate 100 KB, req/s" small-rps
  row "hot crate 100 KB, p50 ms" small-p50
  row "hot crate 100 KB, p99 ms" small-p99
  row "hot crate 1.5 MB, req/s" large-rps
  row "hot crate 1.5 MB, p50 ms" large-p50
  row "hot crate 1.5 MB, p99 ms" large-p99
  row "HTTPS (HTTP/1.1 over TLS): hot index 181 KB, req/s" index-tls-rps
  row "HTTPS: hot index 181 KB, p99 ms" index-tls-p99
  row "HTTPS: hot crate 100 KB, req/s" small-tls-rps
  row "HTTPS: hot crate 100 KB, p99 ms" small-tls-p99
  row "HTTPS: hot crate 1.5 MB, req/s" large-tls-rps
  row "HTTPS: hot crate 1.5 MB, p50 ms" large-tls-p50
  row "HTTPS: hot crate 1.5 MB, p99 ms" large-tls-p99
  row "cargo fetch, 300 crates, cold, plain HTTP (cargo's defaults), s" cold-http
  row "cargo fetch, 300 crates, warm, plain HTTP (cargo's defaults), s" warm-http
  row "cargo fetch, 300 crates, cold, HTTPS (HTTP/2 by ALPN), s" cold-https
  row "cargo fetch, 300 crates, warm, HTTPS (HTTP/2 by ALPN), s" warm-https
  row "cargo fetch, 300 crates, cold, plain HTTP/1.1 only (multiplexing = false), s" cold-http1
  row "cargo fetch, 300 crates, warm, plain HTTP/1.1 only (multiplexing = false), s" warm-http1
  awk -v c="$hot_cpu_cd" -v n="$hot_cpu_ng" -v hz="$(getconf CLK_TCK)" \
    'BEGIN { printf "| CPU seconds during the hot runs | %.1f | %.1f | %.2f |\n", c / hz, n / hz, c / n }'
  awk -v c="$rss_hot_cd" -v n="$rss_hot_ng" \
    'BEGIN { printf "| peak RSS after the hot runs, MiB | %.1f | %.1f | %.2f |\n", c / 1024, n / 1024, c / n }'
  awk -v c="$rss_fetch_cd" -v n="$rss_fetch_ng" \
    'BEGIN { printf "| peak RSS after a cold fetch, MiB | %.1f | %.1f | %.2f |\n", c / 1024, n / 1024, c / n }'
  echo
  echo "Plain HTTP with cargo's defaults: cargo asks for HTTP/2 with \`Upgrade: h2c\`; cratedock upgrades (server.h2c_upgrade), nginx answers HTTP/1.1. \`multiplexing = false\` makes cargo speak HTTP/1.1 to both, on parallel connections."
  echo
  echo "Large files over plain HTTP: nginx hands them to the kernel with sendfile (no copy through user space); cratedock writes them from its memory tier. Over HTTPS neither can."
  echo
  echo "nginx RSS is the sum over its master and worker processes; its cache bodies live in the page cache, not in its RSS."
} | tee "$out"
echo "written to $out"
