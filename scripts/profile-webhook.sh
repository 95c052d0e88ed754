#!/usr/bin/env bash
# Instructions per webhook request, by callgrind: steadier than requests/s on a shared machine,
# and the breakdown says where they go. Runs the handler (a release build with line tables, in
# target/profile-webhook) under callgrind with instrumentation off, warms it up with wrk for 2 s,
# counts 4 s of `wrk -t1 -c4` traffic, and prints the total divided by the requests, for the
# accept path (signed delivery, 202 + queue output) and the refusal path (bad HMAC, 401).
#
# usage: scripts/profile-webhook.sh [--annotate]   (--annotate also prints the top functions)
# needs: valgrind (callgrind_control, callgrind_annotate), wrk, node, cargo
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
annotate="${1:-}"
for tool in valgrind callgrind_control callgrind_annotate wrk node; do
  command -v "$tool" >/dev/null || { echo "profile-webhook: $tool not found" >&2; exit 2; }
done

cd "$root"
export CARGO_TARGET_DIR="$root/target/profile-webhook"
CARGO_PROFILE_RELEASE_STRIP=none CARGO_PROFILE_RELEASE_DEBUG=line-tables-only \
  cargo build --release --quiet --bin qualtrics-bridge
bin="$CARGO_TARGET_DIR/release/qualtrics-bridge"

work="$(mktemp -d)"
server_pid=""
cleanup() {
  [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

key="profile-key-$RANDOM$RANDOM"
source benches/webhook-fixtures.sh
webhook_fixtures "$work" "$key"

# profile LABEL ENVELOPE: prints instructions per request.
profile() {
  local label="$1" env="$2" port out n ir
  port="$(free_port)"
  out="$work/callgrind.$label.out"
  FUNCTIONS_CUSTOMHANDLER_PORT="$port" QUALTRICS_WEBHOOK_KEY="$key" BRIDGE_CONFIG="$work/bridge.toml" \
    valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$out" "$bin" \
    >"$work/server.log" 2>"$work/valgrind.log" &
  server_pid=$!
  for _ in $(seq 200); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
    sleep 0.1
  done
  local url="http://127.0.0.1:$port/QualtricsWebhook"
  wrk -t1 -c4 -d2s -s benches/post.lua "$url" -- "$env" >/dev/null
  callgrind_control -i on "$server_pid" >/dev/null
  n="$(wrk -t1 -c4 -d4s -s benches/post.lua "$url" -- "$env" | awk '/requests in/ {print $1}')"
  callgrind_control -i off "$server_pid" >/dev/null
  kill "$server_pid"
  wait "$server_pid" 2>/dev/null || true
  server_pid=""
  ir="$(awk '/^totals:/ {print $2}' "$out")"
  printf '%-8s %8d requests  %9d instructions/request\n' "$label" "$n" "$((ir / n))"
  if [ "$annotate" = "--annotate" ]; then
    # Inclusive cost of the handler's own functions, in thousands of instructions per request.
    callgrind_annotate --inclusive=yes "$out" 2>/dev/null | grep '/src/.*qualtrics_bridge::' |
      awk -v n="$n" '{ ir = $1; gsub(",", "", ir); f = $0; sub(/^[^%]*%\) +/, "", f);
                       sub(/^[^:]*:/, "", f); sub(/ \[.*$/, "", f); sub(/ \([0-9,]+x\)$/, "", f); printf "  %7.1fk  %s\n", ir / n / 1000, f }' |
      awk '!seen[$2]++' | head -25
  fi
}

profile accept "$work/good.json"
profile refusal "$work/bad.json"
