#!/usr/bin/env bash
# Runs qualtrics-bridge locally: builds it, installs Azurite if missing, and starts the handler
# behind `func start` when Azure Functions Core Tools is installed, else behind devkit's local
# Functions host. Prints the webhook URL. Ctrl-C stops everything.
#
# Settings come from local.settings.json (copied from local.settings.sample.json on first run).
# With no Qualtrics or ticketing settings, devkit runs in sandbox mode: fake Qualtrics and fake
# ServiceNow on loopback, a signed demo delivery, and the ticket it produced. Nothing leaves
# this machine.
set -euo pipefail
cd "$(dirname "$0")/.."
root="$(pwd)"
port="${PORT:-7071}"

[ -f local.settings.json ] || cp local.settings.sample.json local.settings.json
echo "== building (release)" >&2
cargo build --release --workspace --bins >&2
bash scripts/install-azurite.sh >/dev/null

setting() { # value of a Values entry in local.settings.json, else the environment
  python3 -c 'import json,os,sys; v=json.load(open("local.settings.json")).get("Values",{}).get(sys.argv[1]) or os.environ.get(sys.argv[1],""); print(v)' "$1"
}
unconfigured=""
if [ -z "$(setting QUALTRICS_BASE_URL)" ] && [ -z "$(setting SERVICENOW_INSTANCE_URL)" ] && [ -z "$(setting ZENDESK_BASE_URL)" ]; then
  unconfigured=1
fi

if command -v func >/dev/null 2>&1; then
  echo "== Core Tools found: func start (Azurite on its default ports)" >&2
  if [ -n "$unconfigured" ]; then
    echo "   No Qualtrics/ticketing settings: webhooks are verified and queued, but exports and" >&2
    echo "   tickets have nowhere to go. Sandbox mode (fake services) needs the devkit host:" >&2
    echo "   run without Core Tools on PATH, or set the services in local.settings.json." >&2
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
  echo "== Core Tools not installed: using devkit's local Functions host" >&2
  exec target/release/devkit up --binary target/release/qualtrics-bridge --port "$port" --settings local.settings.json
fi
