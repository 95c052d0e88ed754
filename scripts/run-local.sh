#!/usr/bin/env bash
# Runs qualtrics-bridge locally: builds it, installs Azurite if missing, and starts the handler
# behind `func start` when Azure Functions Core Tools is installed, else behind devkit's local
# Functions host. Prints the webhook URL. Ctrl-C stops everything.
#
# usage: scripts/run-local.sh [--devkit]
#   --devkit (or RUN_LOCAL_HOST=devkit)  use devkit's host even where `func` is installed; it is
#                                        the host with sandbox mode. RUN_LOCAL_HOST=func forces func.
#
# Settings come from local.settings.json (copied from local.settings.sample.json on first run);
# as in Core Tools, a variable set in the environment wins over the file's entry. With no
# Qualtrics or ticketing settings, devkit runs in sandbox mode: fake Qualtrics and fake
# ServiceNow on loopback, a signed demo delivery, the ticket it produced, and the key and
# response ids for your own `devkit publish`. Nothing leaves this machine.
set -euo pipefail
cd "$(dirname "$0")/.."
root="$(pwd)"
port="${PORT:-7071}"
host="${RUN_LOCAL_HOST:-auto}"
for arg in "$@"; do
  case "$arg" in
    --devkit) host=devkit ;;
    -h|--help) sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "run-local: unknown argument '$arg' (try --help)" >&2; exit 2 ;;
  esac
done
case "$host" in
  auto) if command -v func >/dev/null 2>&1; then host=func; else host=devkit; fi ;;
  func) command -v func >/dev/null 2>&1 || { echo "run-local: RUN_LOCAL_HOST=func but func is not installed" >&2; exit 2; } ;;
  devkit) ;;
  *) echo "run-local: RUN_LOCAL_HOST must be auto, devkit or func, not '$host'" >&2; exit 2 ;;
esac

[ -f local.settings.json ] || cp local.settings.sample.json local.settings.json
echo "== building (release)" >&2
cargo build --release --workspace --bins >&2
bash scripts/install-azurite.sh >/dev/null

setting() { # Core Tools' precedence: a non-empty environment variable, else the file's entry
  python3 -c 'import json,os,sys; k=sys.argv[1]; print(os.environ.get(k) or json.load(open("local.settings.json")).get("Values",{}).get(k) or "")' "$1"
}
unconfigured=""
if [ -z "$(setting QUALTRICS_BASE_URL)" ] && [ -z "$(setting SERVICENOW_INSTANCE_URL)" ] && [ -z "$(setting ZENDESK_BASE_URL)" ]; then
  unconfigured=1
fi

if [ "$host" = func ]; then
  echo "== Core Tools found: func start (Azurite on its default ports)" >&2
  if [ -n "$unconfigured" ]; then
    echo "   No Qualtrics/ticketing settings: webhooks are verified and queued, but exports and" >&2
    echo "   tickets have nowhere to go. For sandbox mode (fake services) use devkit's host:" >&2
    echo "   scripts/run-local.sh --devkit (or RUN_LOCAL_HOST=devkit), or set the services." >&2
  fi
  app="$root/target/func-app"
  rm -rf "$app" && mkdir -p "$app"
  cp host.json bridge.toml local.settings.json "$app/"
  cp target/release/qualtrics-bridge "$app/"
  for d in functions/*/; do cp -r "$d" "$app/"; done
  node tools/azurite/node_modules/azurite/dist/src/azurite.js --silent --inMemoryPersistence \
    --disableTelemetry --blobHost 127.0.0.1 --queueHost 127.0.0.1 --tableHost 127.0.0.1 &
  azurite_pid=$!
  trap 'kill $azurite_pid 2>/dev/null || true' EXIT
  echo "WEBHOOK_URL=http://127.0.0.1:$port/api/qualtrics/events" 
  (cd "$app" && func start --custom --port "$port")
else
  echo "== devkit's local Functions host" >&2
  exec target/release/devkit up --binary target/release/qualtrics-bridge --port "$port" --settings local.settings.json
fi
