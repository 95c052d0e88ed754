#!/usr/bin/env bash
# Deploys qualtrics-bridge to Azure:
#   1. infra: az deployment group create (infra/main.bicep + a .bicepparam file) into one resource group;
#   2. code:  func azure functionapp publish <app> --custom from target/package/staging
#             (or, without Core Tools, az functionapp deployment source config-zip with the zip);
#   3. prints the remaining manual steps: Key Vault secrets and the Qualtrics event subscriptions.
# The code is target/package (scripts/package.sh); without a valid one it runs package.sh, which
# needs BRIDGE_CONFIG_FILE=your bridge.toml (the repo's ./bridge.toml is the sandbox sample).
# Nothing secret is read, written or printed by this script.
#
# usage: scripts/deploy.sh -g RESOURCE_GROUP [options]
#   -g, --resource-group RG   target resource group (must exist unless --location is given)
#   -p, --parameters FILE     Bicep parameters (default: infra/main.bicepparam)
#   -l, --location LOC        create the resource group in LOC if it does not exist
#   -n, --name NAME           deployment name (default: qualtrics-bridge-<UTC timestamp>)
#       --app NAME            function app name (required with --skip-infra)
#       --skip-infra          do not run the Bicep deployment
#       --skip-code           do not publish the code
#       --what-if             show the infra changes (az deployment group what-if) and stop
#       --use-zip             publish with az config-zip even when func is installed
#   -h, --help                this help
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
say() { echo "deploy: $*" >&2; }
die() { echo "deploy: ERROR: $*" >&2; exit 1; }
usage() { sed -n '2,23p' "$0" | sed 's/^# \{0,1\}//'; }

rg="" params="$root/infra/main.bicepparam" location="" name="qualtrics-bridge-$(date -u +%Y%m%d%H%M%S)"
app="" skip_infra=0 skip_code=0 what_if=0 use_zip=0
while [ $# -gt 0 ]; do
  case "$1" in
    -g|--resource-group) [ $# -ge 2 ] || die "$1 needs a value"; rg="$2"; shift 2 ;;
    -p|--parameters) [ $# -ge 2 ] || die "$1 needs a value"; params="$2"; shift 2 ;;
    -l|--location) [ $# -ge 2 ] || die "$1 needs a value"; location="$2"; shift 2 ;;
    -n|--name) [ $# -ge 2 ] || die "$1 needs a value"; name="$2"; shift 2 ;;
    --app) [ $# -ge 2 ] || die "$1 needs a value"; app="$2"; shift 2 ;;
    --skip-infra) skip_infra=1; shift ;;
    --skip-code) skip_code=1; shift ;;
    --what-if) what_if=1; shift ;;
    --use-zip) use_zip=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) die "unknown argument '$1' (try --help)" ;;
  esac
done

[ -n "$rg" ] || { usage >&2; die "missing -g RESOURCE_GROUP"; }
command -v az >/dev/null || die "Azure CLI 'az' not found: install it (https://learn.microsoft.com/cli/azure/install-azure-cli) and run 'az login'"
command -v python3 >/dev/null || die "python3 not found (used to read deployment outputs)"
az account show --query id -o tsv >/dev/null 2>&1 || die "not logged in to Azure: run 'az login' (and 'az account set -s <subscription>')"

if [ "$(az group exists -n "$rg" -o tsv)" != "true" ]; then
  [ -n "$location" ] || die "resource group '$rg' does not exist; create it or pass --location"
  say "creating resource group $rg in $location"
  az group create -n "$rg" -l "$location" -o none
fi

# ---- 1. infrastructure ------------------------------------------------------------------------
outputs="{}"
if [ "$skip_infra" -eq 0 ]; then
  [ -f "$params" ] || die "parameters file '$params' not found"
  [ -f "$root/infra/main.bicep" ] || die "$root/infra/main.bicep not found"
  if [ "$what_if" -eq 1 ]; then
    az deployment group what-if -g "$rg" -n "$name" -f "$root/infra/main.bicep" -p "$params"
    exit 0
  fi
  say "deploying infra/main.bicep to $rg as deployment '$name'"
  outputs="$(az deployment group create -g "$rg" -n "$name" -f "$root/infra/main.bicep" -p "$params" \
    --query properties.outputs -o json)"
fi

output() {  # output NAME: a deployment output value, or empty
  printf '%s' "$outputs" | python3 -c 'import json,sys
d = json.load(sys.stdin) or {}
v = d.get(sys.argv[1], {}).get("value", "")
print(" ".join(v) if isinstance(v, list) else v)' "$1"
}

[ -n "$app" ] || app="$(output functionAppName)"
[ -n "$app" ] || die "function app name unknown: pass --app NAME (needed with --skip-infra)"
vault="$(output keyVaultName)"
webhook_url="$(output webhookUrl)"
secret_names="$(output secretNames)"
if [ -z "$vault" ]; then
  vault="$(az functionapp config appsettings list -g "$rg" -n "$app" \
    --query "[?name=='KEY_VAULT_URL'].value | [0]" -o tsv 2>/dev/null | sed -E 's#https://([^.]+)\..*#\1#')" || vault=""
fi
if [ -z "$webhook_url" ]; then
  host="$(az functionapp show -g "$rg" -n "$app" --query defaultHostName -o tsv)"
  webhook_url="https://$host/api/qualtrics/events"
fi
[ -n "$secret_names" ] || secret_names="qualtrics-api-token qualtrics-webhook-key qualtrics-webhook-key-previous qualtrics-workflow-token servicenow-password servicenow-client-secret zendesk-api-token zendesk-webhook-secret zendesk-webhook-secret-previous servicenow-webhook-secret servicenow-webhook-secret-previous analytics-hash-key ops-webhook-secret ops-webhook-secret-previous ops-static-token ops-static-token-previous"

# ---- 2. code ----------------------------------------------------------------------------------
if [ "$skip_code" -eq 0 ]; then
  staging="$root/target/package/staging"
  zip="$root/target/package/qualtrics-bridge.zip"
  if ! "$root/scripts/check-package.sh" "$staging" "$zip" >/dev/null 2>&1; then
    say "no valid package in target/package; building it (scripts/package.sh)"
    "$root/scripts/package.sh" >/dev/null
  fi
  "$root/scripts/check-package.sh" "$staging" "$zip" >&2
  if command -v func >/dev/null && [ "$use_zip" -eq 0 ]; then
    say "publishing $staging with Core Tools to $app"
    # --custom: no local.settings.json in the staging dir, so tell Core Tools the worker runtime.
    (cd "$staging" && func azure functionapp publish "$app" --custom)
  else
    say "publishing $zip with az (One Deploy) to $app"
    az functionapp deployment source config-zip -g "$rg" -n "$app" --src "$zip" --build-remote false -o none
  fi
fi

# ---- 3. what is left to do by hand ------------------------------------------------------------
cat <<STEPS

Deployment of '$app' in '$rg' done. Remaining steps (see docs/deploy.md):

1. Set the secrets in Key Vault '${vault:-<vault>}' (needs Key Vault Secrets Officer on the vault).
   Read each value from a file or a prompt so it never lands in shell history:
STEPS
for s in $secret_names; do
  printf '     az keyvault secret set --vault-name %s --name %s --file ./%s.txt --encoding utf-8 -o none\n' \
    "${vault:-<vault>}" "$s" "$s"
done
cat <<STEPS
   (ServiceNow: servicenow-password for Basic auth or servicenow-client-secret for OAuth; skip the
   targets you do not use. qualtrics-webhook-key-previous only during a key rotation.)
   Then restart the app so it re-reads them: az functionapp restart -g $rg -n $app

2. Register the Qualtrics event subscriptions for the surveys of your bridge.toml with the tool
   (docs/operations.md, "Operator commands against the deployed app": az login, then export
   QUALTRICS_BASE_URL and KEY_VAULT_URL=https://${vault:-<vault>}.vault.azure.net/). The URL needs the
   function key, which this script does not print:
     code=\$(az functionapp function keys list -g $rg -n $app --function-name QualtricsWebhook --query default -o tsv)
     qualtrics-bridge subscriptions sync --config <your bridge.toml> --url "$webhook_url?code=\$code" --dry-run
     qualtrics-bridge subscriptions sync --config <your bridge.toml> --url "$webhook_url?code=\$code"
   It uses the Key Vault secrets qualtrics-api-token (brand admin) and qualtrics-webhook-key (sharedKey).

3. Watch the first start in Application Insights (traces, requests); RBAC can take ~10 minutes to
   propagate, so early storage 403s are expected.
STEPS
