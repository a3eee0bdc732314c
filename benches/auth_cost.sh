#!/usr/bin/env bash
# What token auth costs the hot path, side by side in one run: one cratedock process mirrors
# the same generated upstream (examples/bench_registry.rs) as two registries, `open`
# (auth_required = false, no token sent) and `closed` (auth_required = true, a read-only token
# sent as cargo sends it). wrk loads a 181 KB index file and a 100 KB crate from the memory
# tier of each, back to back, alternating which goes first, ROUNDS times. Each round gives a
# closed/open ratio of req/s and of p99 latency from two adjacent runs (so the drift of a shared
# machine cancels); the table gives the medians of those ratios, their range, and the medians
# of the raw figures. Loopback only, every load bounded in time.
#
#   bash benches/auth_cost.sh     # ROUNDS=9 DURATION=4 CONNECTIONS=64
#
# Writes the table to target/bench/auth_cost.md. Installs wrk with apt-get when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-9}
DURATION=${DURATION:-4}
CONNECTIONS=${CONNECTIONS:-64}
UP_PORT=18820 CD_PORT=18821

command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk; }
cargo build --release --quiet --bin cratedock --example bench_registry
root=$(pwd)
work=$(mktemp -d -p /dev/shm cratedock-auth-bench.XXXXXX)
out="$root/target/bench/auth_cost.md"
mkdir -p "$(dirname "$out")"

up_pid="" cd_pid=""
stop() { for p in "$@"; do if [ -n "$p" ]; then kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; fi; done; }
cleanup() { stop "$up_pid" "$cd_pid"; rm -rf "$work"; }
trap cleanup EXIT
trap 'exit 1' INT TERM
wait_http() { for _ in $(seq 600); do curl -sf -o /dev/null "$1" && return 0; sleep 0.1; done; echo "no answer from $1" >&2; exit 1; }

"$root/target/release/examples/bench_registry" "$UP_PORT" 0 "$work" > "$work/upstream.log" 2>&1 &
up_pid=$!
for _ in $(seq 1200); do grep -q '^ready' "$work/upstream.log" && break; sleep 0.1; done
grep -q '^ready' "$work/upstream.log" || { echo "the upstream did not get ready" >&2; exit 1; }

cat > "$work/cratedock.toml" <<TOML
[server]
listen = "127.0.0.1:$CD_PORT"
[storage]
data_dir = "$work/data"
[log]
level = "warn"
[registries.open]
kind = "mirror"
upstream = "http://127.0.0.1:$UP_PORT/index/"
index_ttl_ms = 600000
[registries.closed]
kind = "mirror"
upstream = "http://127.0.0.1:$UP_PORT/index/"
index_ttl_ms = 600000
auth_required = true
TOML
"$root/target/release/cratedock" serve --config "$work/cratedock.toml" > "$work/cratedock.log" 2>&1 &
cd_pid=$!
wait_http "http://127.0.0.1:$CD_PORT/health/ready"

# A user in a team that may read `closed`, and a read-only token of hers (as a CI job has).
admin() { CRATEDOCK_URL="http://127.0.0.1:$CD_PORT" CRATEDOCK_TOKEN_FILE="$work/data/admin-token" \
  "$root/target/release/cratedock" admin "$@"; }
admin user add ci >/dev/null
admin team add builders --member ci >/dev/null
admin grant --team builders --permission read --registry closed >/dev/null
token=$(admin token create --user ci --read-only --name bench)

url_of() { # registry, kind
  case "$2" in
    index) echo "http://127.0.0.1:$CD_PORT/$1/index/ho/t-/hot-index" ;;
    crate) echo "http://127.0.0.1:$CD_PORT/$1/api/v1/crates/hot-small/1.0.0/download" ;;
  esac
}
for kind in index crate; do for i in 1 2; do
  curl -sf -o /dev/null "$(url_of open $kind)"
  curl -sf -o /dev/null -H "Authorization: $token" "$(url_of closed $kind)"
done; done
[ "$(curl -s -o /dev/null -w '%{http_code}' "$(url_of closed index)")" = 401 ] || { echo "closed is not closed" >&2; exit 1; }

to_ms() { awk '{ v = $1; if (v ~ /us$/) { sub(/us$/, "", v); v /= 1000 } else if (v ~ /ms$/) { sub(/ms$/, "", v) } else if (v ~ /s$/) { sub(/s$/, "", v); v *= 1000 } printf "%.3f", v }'; }
median() { printf '%s\n' "$@" | sort -g | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }
spread() { printf '%s\n' "$@" | sort -g | awk 'NR == 1 { lo = $1 } { hi = $1 } END { printf "%.3f-%.3f", lo, hi }'; }
declare -A R
add() { R[$1,$2]="${R[$1,$2]:-} $3"; }

echo "== wrk -t2 -c$CONNECTIONS -d${DURATION}s --latency, $ROUNDS rounds"
for r in $(seq "$ROUNDS"); do
  order="open closed"; [ $((r % 2)) -eq 0 ] && order="closed open"
  for kind in index crate; do
    for reg in $order; do
      header=(); [ "$reg" = closed ] && header=(-H "Authorization: $token")
      res=$(wrk -t2 -c"$CONNECTIONS" -d"${DURATION}s" --latency "${header[@]}" "$(url_of "$reg" "$kind")")
      rps=$(echo "$res" | awk '/^Requests\/sec/ { print $2 }')
      p99=$(echo "$res" | awk '$1 == "99%" { print $2 }' | to_ms)
      non2xx=$(echo "$res" | awk '/Non-2xx/ { print $NF }')
      [ -n "$non2xx" ] && { echo "$reg $kind: $non2xx non-2xx answers" >&2; exit 1; }
      add "$reg" "$kind-rps" "$rps"; add "$reg" "$kind-p99" "$p99"
      eval "last_${reg}_rps=$rps last_${reg}_p99=$p99"
      echo "round $r $kind $reg: $rps req/s, p99 ${p99} ms"
    done
    add ratio "$kind-rps" "$(awk -v c="$last_closed_rps" -v o="$last_open_rps" 'BEGIN { printf "%.4f", c / o }')"
    add ratio "$kind-p99" "$(awk -v c="$last_closed_p99" -v o="$last_open_p99" 'BEGIN { printf "%.4f", c / o }')"
  done
done

{
  echo "| hot path (memory tier, $CONNECTIONS connections) | req/s off | req/s on | on/off req/s (range) | p99 ms off | p99 ms on | on/off p99 (range) |"
  echo "|---|---|---|---|---|---|---|"
  for kind in index crate; do
    label="181 KB index file"; [ "$kind" = crate ] && label="100 KB crate"
    printf '| %s | %.0f | %.0f | %.3f (%s) | %.2f | %.2f | %.3f (%s) |\n' "$label" \
      "$(median ${R[open,$kind-rps]})" "$(median ${R[closed,$kind-rps]})" \
      "$(median ${R[ratio,$kind-rps]})" "$(spread ${R[ratio,$kind-rps]})" \
      "$(median ${R[open,$kind-p99]})" "$(median ${R[closed,$kind-p99]})" \
      "$(median ${R[ratio,$kind-p99]})" "$(spread ${R[ratio,$kind-p99]})"
  done
  echo
  echo "Ratios: medians of $ROUNDS paired rounds (${DURATION} s per run), one process, the two registries back to back."
} | tee "$out"
grep -q 'auth_decisions_total{reason="ok",result="allowed"}' <(curl -s "http://127.0.0.1:$CD_PORT/metrics") \
  || { echo "no allowed decisions were counted" >&2; exit 1; }
