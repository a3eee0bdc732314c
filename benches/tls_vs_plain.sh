#!/usr/bin/env bash
# Requests per second for a cached index file, large (~340 KB) and small (~3.4 KB): HTTPS with
# HTTP/2 (ALPN) against plain HTTP/1.1, in one run, alternating, on loopback only, each round
# bounded in time. HTTPS with HTTP/1.1 and plain HTTP/2 are measured too, to tell the cost of
# TLS from the cost of HTTP/2 framing.
#
#   bash benches/tls_vs_plain.sh            # 3 rounds of 5 s per variant
#   ROUNDS=5 SECONDS_PER_RUN=10 bash benches/tls_vs_plain.sh
#
# Needs: h2load (Debian: nghttp2-client), openssl, python3, curl; installs the first with
# apt-get when missing and running as root.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-3}
SECONDS_PER_RUN=${SECONDS_PER_RUN:-5}
CONNS=${CONNS:-64}

if ! command -v h2load >/dev/null; then
  apt-get update -qq && apt-get install -y -qq nghttp2-client
fi
cargo build --release --quiet --bin cratedock

work=$(mktemp -d)
cleanup() { kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

# A static upstream: config.json and one index file of 900 versions.
mkdir -p "$work/up/index/ho/t-" "$work/up/index/sm/al"
python3 - "$work/up/index" <<'PY'
import json, sys
root = sys.argv[1]
json.dump({"dl": "http://127.0.0.1:1/unused"}, open(f"{root}/config.json", "w"))
for name, path, versions in [("hot-index", "ho/t-/hot-index", 900), ("small-index", "sm/al/small-index", 9)]:
  with open(f"{root}/{path}", "w") as f:
    for i in range(versions):
        f.write(json.dumps({"name": name, "vers": f"1.{i}.0", "deps": [
            {"name": "serde", "req": "^1", "features": [], "optional": False, "default_features": True, "target": None, "kind": "normal"},
            {"name": "tokio", "req": "^1", "features": [], "optional": False, "default_features": True, "target": None, "kind": "normal"}],
            "cksum": "0" * 64, "features": {}, "yanked": False}, separators=(",", ":")) + "\n")
PY
python3 -m http.server 18700 --bind 127.0.0.1 --directory "$work/up" >/dev/null 2>&1 &

# A throw-away certificate for localhost.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 \
  -subj /CN=localhost -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
  -keyout "$work/key.pem" -out "$work/cert.pem" 2>/dev/null

cat > "$work/cratedock.toml" <<TOML
[server]
listen = "127.0.0.1:18701"
[server.tls]
listen = "127.0.0.1:18702"
cert_file = "$work/cert.pem"
key_file = "$work/key.pem"
[storage]
data_dir = "$work/data"
[log]
level = "warn"
[registries.crates-io]
kind = "mirror"
upstream = "http://127.0.0.1:18700/index/"
index_ttl_ms = 3600000
TOML
./target/release/cratedock serve --config "$work/cratedock.toml" &
for _ in $(seq 100); do curl -sf http://127.0.0.1:18701/health/ready >/dev/null && break; sleep 0.1; done
for path in /crates-io/index/ho/t-/hot-index /crates-io/index/sm/al/small-index; do
  curl -sf "http://127.0.0.1:18701$path" >/dev/null
done
run() { # prints requests/s
  h2load "$@" -D "$SECONDS_PER_RUN" --warm-up-time=1 -t 1 2>/dev/null |
    awk '/^finished in/ { for (i = 1; i <= NF; i++) if ($i ~ /req\/s/) { gsub(",", "", $(i-1)); print $(i-1) } }'
}
bench_path() {
path=$1
size=$(curl -sf "http://127.0.0.1:18701$path" | wc -c)
echo
echo "== $path: $size bytes; $CONNS concurrent requests; ${SECONDS_PER_RUN}s per run; $ROUNDS rounds"
# Variants: name, then h2load arguments. The first is the baseline of the ratios.
names=("plain HTTP/1.1, $CONNS connections"
       "HTTPS HTTP/2, $CONNS connections"
       "HTTPS HTTP/2, 4 connections x $((CONNS / 4)) streams"
       "HTTPS HTTP/1.1, $CONNS connections"
       "plain HTTP/2 (prior knowledge), $CONNS connections")
args=("--h1 -c $CONNS http://127.0.0.1:18701$path"
      "-c $CONNS -m 1 https://localhost:18702$path"
      "-c 4 -m $((CONNS / 4)) https://localhost:18702$path"
      "--h1 -c $CONNS https://localhost:18702$path"
      "-c $CONNS -m 1 http://127.0.0.1:18701$path")
unset results; declare -A results
for r in $(seq "$ROUNDS"); do
  line="round $r:"
  for i in "${!names[@]}"; do
    # shellcheck disable=SC2086
    v=$(run ${args[$i]})
    results[$i]="${results[$i]:-} $v"
    line="$line ${v} |"
  done
  echo "$line"
done
median() { printf '%s\n' "$@" | sort -g | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }
# shellcheck disable=SC2086
base=$(median ${results[0]})
echo
echo "| variant | req/s (median of $ROUNDS) | ratio to plain HTTP/1.1 |"
echo "|---|---|---|"
for i in "${!names[@]}"; do
  # shellcheck disable=SC2086
  m=$(median ${results[$i]})
  awk -v n="${names[$i]}" -v a="$m" -v b="$base" 'BEGIN { printf "| %s | %s | %.2f |\n", n, a, a / b }'
done
}
bench_path /crates-io/index/ho/t-/hot-index
bench_path /crates-io/index/sm/al/small-index
