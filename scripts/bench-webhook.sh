#!/usr/bin/env bash
# Webhook throughput benchmark: wrk POSTs the Functions host's JSON envelope of a signed ~1 KB
# Qualtrics delivery straight to each handler's /QualtricsWebhook (as the host would, no
# front door), 64 keep-alive connections, DURATION seconds each, one server at a time:
#   trivial axum  fixed reply, envelope not read (benches/trivial_axum.rs) — the ceiling
#   bridge        the release qualtrics-bridge binary, accept path (202 + queue output)
#   bridge 401    the same, bad HMAC (refusal path)
#   node          Node.js doing the same work (benches/node-webhook.js), accept and refusal
# Prints requests/s and p50/p99 latency, and checks: bridge >= 60 % of trivial axum,
# >= 2.5x node, p99 <= 5 ms, refusal path at least as fast as the accept path.
#
# usage: scripts/bench-webhook.sh [DURATION_SECONDS (default 5)]
# needs: wrk (apt-get install -y wrk), node, cargo
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
duration="${1:-5}"
threads="${WRK_THREADS:-2}"
conns=64
command -v wrk >/dev/null || { echo "bench-webhook: wrk not found (apt-get install -y wrk)" >&2; exit 2; }
command -v node >/dev/null || { echo "bench-webhook: node not found" >&2; exit 2; }

cd "$root"
cargo build --release --quiet --bin qualtrics-bridge --example bench-trivial-axum
target="${CARGO_TARGET_DIR:-$root/target}"
bridge="$target/release/qualtrics-bridge"
trivial="$target/release/examples/bench-trivial-axum"

work="$(mktemp -d)"
pids=()
cleanup() {
  for p in "${pids[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

key="bench-key-$RANDOM$RANDOM"
node benches/make-envelope.js "$key" "$work" 2>"$work/sizes"
cat > "$work/bridge.toml" <<TOML
[[surveys]]
id = "SV_22VlHYNeldrrrkp"
[surveys.tickets]
system = "servicenow"
TOML

free_port() { node -e 'const s=require("net").createServer().listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})'; }

# start CMD... : runs CMD with FUNCTIONS_CUSTOMHANDLER_PORT=$port, waits for the port.
start() {
  port="$(free_port)"
  FUNCTIONS_CUSTOMHANDLER_PORT="$port" QUALTRICS_WEBHOOK_KEY="$key" BRIDGE_CONFIG="$work/bridge.toml" \
    "$@" >"$work/server.log" 2>&1 &
  server_pid=$!
  pids+=("$server_pid")
  for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && return
    sleep 0.05
  done
  echo "bench-webhook: $* did not listen" >&2; cat "$work/server.log" >&2; exit 1
}

stop() { kill "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; }

# run LABEL PORT ENVELOPE EXPECT_STATUS: checks one reply, warms up, then measures.
declare -A rps p50 p99
run() {
  local label="$1" port="$2" env="$3" expect="$4" url="http://127.0.0.1:$2/QualtricsWebhook"
  local reply
  reply="$(curl -s -H 'content-type: application/json' -H 'x-azure-functions-invocationid: check' --data-binary "@$env" "$url")"
  case "$reply" in *"\"statusCode\":\"$expect\""*) ;; *) echo "bench-webhook: $label answered $reply (want res $expect)" >&2; exit 1 ;; esac
  wrk -t"$threads" -c"$conns" -d1s -s benches/post.lua "$url" -- "$env" >/dev/null
  local out
  out="$(wrk -t"$threads" -c"$conns" -d"${duration}s" --latency -s benches/post.lua "$url" -- "$env")"
  if grep -q "Non-2xx" <<<"$out"; then echo "bench-webhook: $label had non-2xx replies" >&2; echo "$out" >&2; exit 1; fi
  rps[$label]="$(awk '/^Requests\/sec/ {print $2}' <<<"$out")"
  p50[$label]="$(awk '$1=="50%" {print $2}' <<<"$out")"
  p99[$label]="$(awk '$1=="99%" {print $2}' <<<"$out")"
}

start "$trivial";                 run "trivial axum" "$port" "$work/good.json" 202; stop
start "$bridge";                  run "bridge" "$port" "$work/good.json" 202
                                  run "bridge 401" "$port" "$work/bad.json" 401; stop
start node benches/node-webhook.js; run "node" "$port" "$work/good.json" 202
                                  run "node 401" "$port" "$work/bad.json" 401; stop

# wrk prints latency as 1.23ms / 456.78us / 1.02s; convert to ms.
ms() { awk -v v="$1" 'BEGIN { if (v ~ /us$/) { sub(/us$/, "", v); print v/1000 } else if (v ~ /ms$/) { sub(/ms$/, "", v); print v+0 } else if (v ~ /s$/) { sub(/s$/, "", v); print v*1000 } else print v }'; }

echo
echo "webhook benchmark: $(cat "$work/sizes"); wrk -t$threads -c$conns -d${duration}s; $(nproc) cores"
printf '%-14s %12s %10s %10s\n' "server" "requests/s" "p50 ms" "p99 ms"
for l in "trivial axum" "bridge" "bridge 401" "node" "node 401"; do
  printf '%-14s %12s %10s %10s\n' "$l" "${rps[$l]}" "$(ms "${p50[$l]}")" "$(ms "${p99[$l]}")"
done

fail=0
check() { if awk "BEGIN { exit !($2) }"; then echo "PASS  $1"; else echo "FAIL  $1"; fail=1; fi; }
b="${rps[bridge]}"; b401="${rps[bridge 401]}"
echo
check "bridge = $(awk "BEGIN{printf \"%.0f\", 100*$b/${rps[trivial axum]}}") % of trivial axum (>= 60 %)" "$b >= 0.6 * ${rps[trivial axum]}"
check "bridge = $(awk "BEGIN{printf \"%.2f\", $b/${rps[node]}}")x node (>= 2.5x)" "$b >= 2.5 * ${rps[node]}"
check "bridge p99 $(ms "${p99[bridge]}") ms (<= 5 ms)" "$(ms "${p99[bridge]}") <= 5"
check "refusal p99 $(ms "${p99[bridge 401]}") ms (<= 5 ms)" "$(ms "${p99[bridge 401]}") <= 5"
# "At least as fast", with 5 % allowance for run-to-run noise on a shared machine.
check "refusal path $b401 req/s vs accept $b (>= 95 %)" "$b401 >= 0.95 * $b"
exit "$fail"
