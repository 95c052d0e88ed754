#!/usr/bin/env bash
# Webhook throughput benchmark: wrk POSTs the Functions host's JSON envelope of a signed ~1 KB
# Qualtrics delivery straight to each handler's /QualtricsWebhook (as the host would, no
# front door), 64 keep-alive connections. All servers run at once (idle unless loaded); each
# round loads each of them in turn for DURATION seconds, the order rotating round to round, so
# the machine's drift (a shared VM: ±20 % over minutes) falls on all of them alike:
#   trivial axum  fixed reply, envelope not read (benches/trivial_axum.rs) — the ceiling
#   hmac floor    trivial axum that reads the envelope and computes one HMAC-SHA512 of a
#                 MSG-sized text (benches/floor_axum.rs) — the work no correct handler skips;
#                 informative, no target
#   bridge        the release qualtrics-bridge binary, accept path (202 + queue output)
#   bridge 401    the same, bad HMAC (refusal path)
#   node          Node.js doing the same work (benches/node-webhook.js), accept and refusal
# Prints requests/s over all rounds and the median and worst of the rounds' p50/p99, and checks:
# bridge >= 60 % of trivial axum, >= 2.5x node, median p99 <= 5 ms, refusal path at least as
# fast as the accept path.
#
# usage: scripts/bench-webhook.sh [DURATION_SECONDS (default 3)] [ROUNDS (default 5)]
# needs: wrk (apt-get install -y wrk), node, cargo
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
duration="${1:-3}"
rounds="${2:-5}"
threads="${WRK_THREADS:-2}"
conns=64
command -v wrk >/dev/null || { echo "bench-webhook: wrk not found (apt-get install -y wrk)" >&2; exit 2; }
command -v node >/dev/null || { echo "bench-webhook: node not found" >&2; exit 2; }

cd "$root"
cargo build --release --quiet --bin qualtrics-bridge --example bench-trivial-axum --example bench-floor-axum
target="${CARGO_TARGET_DIR:-$root/target}"
bridge="$target/release/qualtrics-bridge"
trivial="$target/release/examples/bench-trivial-axum"
floor="$target/release/examples/bench-floor-axum"

work="$(mktemp -d)"
pids=()
cleanup() {
  for p in "${pids[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

key="bench-key-$RANDOM$RANDOM"
source benches/webhook-fixtures.sh
webhook_fixtures "$work" "$key"

# start NAME CMD... : runs CMD with FUNCTIONS_CUSTOMHANDLER_PORT=<free port>, waits for the port.
# Stdout (the bridge's JSON lines, ~330 bytes a request) goes to /dev/null: the handler still
# formats and writes every line, but a file would add the kernel's writeback of gigabytes to the
# measurement on these two cores (the host reads a pipe, on its own budget).
declare -A port_of
start() {
  local name="$1" port
  shift
  port="$(free_port)"
  FUNCTIONS_CUSTOMHANDLER_PORT="$port" QUALTRICS_WEBHOOK_KEY="$key" BRIDGE_CONFIG="$work/bridge.toml" \
    "$@" >/dev/null 2>"$work/$name.log" &
  pids+=("$!")
  for _ in $(seq 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      port_of[$name]="$port"
      return
    fi
    sleep 0.05
  done
  echo "bench-webhook: $* did not listen" >&2; cat "$work/$name.log" >&2; exit 1
}

start trivial "$trivial"
start floor "$floor"
start bridge "$bridge"
start node node benches/node-webhook.js

# What is measured: label, server, envelope, the `res` status it must answer.
labels=("trivial axum" "hmac floor" "bridge" "bridge 401" "node" "node 401")
declare -A server=([trivial axum]=trivial [hmac floor]=floor [bridge]=bridge [bridge 401]=bridge [node]=node [node 401]=node)
declare -A envelope=([trivial axum]=good [hmac floor]=good [bridge]=good [bridge 401]=bad [node]=good [node 401]=bad)
declare -A expect=([trivial axum]=202 [hmac floor]=202 [bridge]=202 [bridge 401]=401 [node]=202 [node 401]=401)

# wrk prints latency as 1.23ms / 456.78us / 1.02s; convert to ms.
ms() { awk -v v="$1" 'BEGIN { if (v ~ /us$/) { sub(/us$/, "", v); print v/1000 } else if (v ~ /ms$/) { sub(/ms$/, "", v); print v+0 } else if (v ~ /s$/) { sub(/s$/, "", v); print v*1000 } else print v }'; }

url() { echo "http://127.0.0.1:${port_of[${server[$1]}]}/QualtricsWebhook"; }

# Each label answers as it should, and is warmed up once.
for l in "${labels[@]}"; do
  env="$work/${envelope[$l]}.json"
  reply="$(curl -s -H 'content-type: application/json' -H 'x-azure-functions-invocationid: check' --data-binary "@$env" "$(url "$l")")"
  case "$reply" in *"\"statusCode\":\"${expect[$l]}\""*) ;; *) echo "bench-webhook: $l answered $reply (want res ${expect[$l]})" >&2; exit 1 ;; esac
  wrk -t"$threads" -c"$conns" -d1s -s benches/post.lua "$(url "$l")" -- "$env" >/dev/null
done

declare -A requests seconds p50s p99s
for ((r = 0; r < rounds; r++)); do
  for ((i = 0; i < ${#labels[@]}; i++)); do
    l="${labels[$(((i + r) % ${#labels[@]}))]}"
    out="$(wrk -t"$threads" -c"$conns" -d"${duration}s" --latency -s benches/post.lua "$(url "$l")" -- "$work/${envelope[$l]}.json")"
    if grep -q "Non-2xx\|Socket errors" <<<"$out"; then echo "bench-webhook: $l had errors" >&2; echo "$out" >&2; exit 1; fi
    requests[$l]=$(( ${requests[$l]:-0} + $(awk '/requests in/ {print $1}' <<<"$out") ))
    seconds[$l]="$(awk -v a="${seconds[$l]:-0}" '/requests in/ { t = $4; sub(/,$/, "", t); if (t ~ /ms$/) { sub(/ms$/, "", t); t /= 1000 } else if (t ~ /m$/) { sub(/m$/, "", t); t *= 60 } else sub(/s$/, "", t); print a + t }' <<<"$out")"
    p50s[$l]="${p50s[$l]:-} $(ms "$(awk '$1=="50%" {print $2}' <<<"$out")")"
    p99s[$l]="${p99s[$l]:-} $(ms "$(awk '$1=="99%" {print $2}' <<<"$out")")"
  done
done

median() { tr ' ' '\n' <<<"$1" | grep . | sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
worst() { tr ' ' '\n' <<<"$1" | grep . | sort -g | tail -1; }

declare -A rps p99
echo
echo "webhook benchmark: $(cat "$work/sizes"); wrk -t$threads -c$conns, $rounds rounds of ${duration}s per server; $(nproc) cores"
printf '%-14s %12s %16s %16s\n' "server" "requests/s" "p50 ms med/max" "p99 ms med/max"
for l in "${labels[@]}"; do
  rps[$l]="$(awk -v n="${requests[$l]}" -v t="${seconds[$l]}" 'BEGIN { printf "%.0f", n / t }')"
  p99[$l]="$(median "${p99s[$l]}")"
  printf '%-14s %12s %16s %16s\n' "$l" "${rps[$l]}" "$(median "${p50s[$l]}") / $(worst "${p50s[$l]}")" "${p99[$l]} / $(worst "${p99s[$l]}")"
done

fail=0
check() { if awk "BEGIN { exit !($2) }"; then echo "PASS  $1"; else echo "FAIL  $1"; fail=1; fi; }
b="${rps[bridge]}"; b401="${rps[bridge 401]}"
echo
check "bridge = $(awk "BEGIN{printf \"%.0f\", 100*$b/${rps[trivial axum]}}") % of trivial axum (>= 60 %)" "$b >= 0.6 * ${rps[trivial axum]}"
check "bridge = $(awk "BEGIN{printf \"%.2f\", $b/${rps[node]}}")x node (>= 2.5x)" "$b >= 2.5 * ${rps[node]}"
check "bridge median p99 ${p99[bridge]} ms (<= 5 ms)" "${p99[bridge]} <= 5"
check "refusal median p99 ${p99[bridge 401]} ms (<= 5 ms)" "${p99[bridge 401]} <= 5"
# "At least as fast", with 5 % allowance for run-to-run noise on a shared machine.
check "refusal path $b401 req/s vs accept $b (>= 95 %)" "$b401 >= 0.95 * $b"
echo "info  bridge = $(awk "BEGIN{printf \"%.0f\", 100*$b/${rps[hmac floor]}}") % of the hmac floor (trivial axum + body + HMAC-SHA512; median p99 ${p99[hmac floor]} ms)"
exit "$fail"
