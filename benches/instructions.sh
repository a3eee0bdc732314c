#!/usr/bin/env bash
# Instructions one hot request costs, through the whole router and middleware, in process:
# an index file from memory (200 and 304) and a 99 KB crate from memory. valgrind counts the
# instructions of N and of 3N requests (examples/hot_requests.rs); the difference over 2N is the
# cost of one request, without the set-up. The `-auth` rows are the same requests with a read
# token, to a mirror with `auth_required = true`: the difference is what auth costs. The `-log`
# rows format the access log line at `info` (written to nowhere): the difference is its cost. Unlike wall-clock figures, these do not move with
# the speed of a shared machine: use them to see what a change costs the hot path.
#
#   bash benches/instructions.sh          # N=1000
#   BIN=/path/to/other/hot_requests bash benches/instructions.sh   # a build to compare with
#
# Installs valgrind with apt-get when missing. Loopback only (the fake upstream), bounded.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-1000}
command -v valgrind >/dev/null || { apt-get update -qq && apt-get install -y -qq valgrind; }
if [ -z "${BIN:-}" ]; then
  cargo build --release --quiet --example hot_requests
  BIN=target/release/examples/hot_requests
fi
count() { # kind n
  valgrind --tool=callgrind --callgrind-out-file=/dev/null "$BIN" "$1" "$2" 2>&1 \
    | awk '/Collected/ { print $4 }'
}
echo "| request | instructions per request |"
echo "|---|---|"
for kind in index index-auth index-log index304 index304-auth index304-log crate crate-auth crate-log; do
  a=$(count "$kind" "$N")
  b=$(count "$kind" $((3 * N)))
  echo "| $kind | $(( (b - a) / (2 * N) )) |"
done
