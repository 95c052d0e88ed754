#!/usr/bin/env bash
# Infra gate: scans infra/ (or DIR) with the pinned checkov, offline, and fails on
#   - any Bicep file checkov could not parse (checkov itself exits 0 on those),
#   - no Bicep resources scanned at all,
#   - any failed check that is not skipped in the Bicep with a written reason
#     (`// checkov:skip=CKV_AZURE_NN: reason` inside the resource body),
#   - any skip without a reason.
# Prints passed/failed/skipped counts and every skip with its reason.
#
# usage: scripts/check-infra.sh [DIR]        scan DIR (default: infra/)
#        scripts/check-infra.sh --self-test  prove the gate fails on broken copies of infra/
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"

usage() { sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; }

mode=scan
dir="$root/infra"
case "${1:-}" in
  -h|--help) usage; exit 0 ;;
  --self-test) mode="self-test" ;;
  "") ;;
  -*) echo "check-infra: unknown option '$1' (try --help)" >&2; exit 2 ;;
  *) dir="$1" ;;
esac
[ $# -le 1 ] || { echo "check-infra: too many arguments: $* (try --help)" >&2; exit 2; }

checkov="$("$root/scripts/install-checkov.sh")"
venv_python="$(dirname "$checkov")/python"

# Run a command without network when the kernel lets us (root + unshare): proves the scan is offline.
offline() {
  if command -v unshare >/dev/null 2>&1 && unshare -n true 2>/dev/null; then
    unshare -n "$@"
  else
    echo "check-infra: unshare -n is not available here: checkov runs WITH network access" >&2
    "$@"
  fi
}

scan() {
  local target="$1"
  [ -d "$target" ] || { echo "check-infra: '$target' is not a directory" >&2; return 1; }
  local nfiles
  nfiles="$(find "$target" -name '*.bicep' -type f | wc -l)"
  if [ "$nfiles" -eq 0 ]; then
    echo "check-infra: FAIL: no .bicep files under '$target'" >&2
    return 1
  fi
  local out rc=0
  out="$(mktemp)"
  # checkov exits 1 when a check fails; the verdict below is ours, from the JSON.
  offline "$checkov" -d "$target" --framework bicep --skip-download -o json \
    >"$out" 2>"$out.err" || rc=$?
  if [ "$rc" -gt 1 ] || [ ! -s "$out" ]; then
    echo "check-infra: FAIL: checkov exited $rc without a JSON report; stderr:" >&2
    tail -n 20 "$out.err" >&2
    rm -f "$out" "$out.err"
    return 1
  fi
  local verdict=0
  "$venv_python" - "$out" "$target" "$nfiles" <<'PY' || verdict=$?
import json, sys
from pathlib import Path

report_path, target, nfiles = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])
try:
    data = json.loads(Path(report_path).read_text())
except ValueError as e:
    print(f"check-infra: FAIL: checkov output is not JSON: {e}", file=sys.stderr)
    sys.exit(1)

# checkov prints one report object, a list of them (one per framework), or, when it found
# nothing to scan, a bare summary object without "results".
reports = data if isinstance(data, list) else [data]
passed = failed_n = skipped_n = resources = 0
parse_errors, failures, skips, bad_skips = [], [], [], []
saw_bicep = False
for r in reports:
    if not isinstance(r, dict):
        continue
    if r.get("check_type") not in (None, "bicep"):
        continue
    summary = r.get("summary") or r
    saw_bicep = saw_bicep or r.get("check_type") == "bicep"
    results = r.get("results") or {}
    resources += int(summary.get("resource_count", 0) or 0)
    pe = summary.get("parsing_errors", 0)
    listed = results.get("parsing_errors") or []
    parse_errors += listed or ([f"{pe} file(s)"] if pe else [])
    passed += len(results.get("passed_checks") or [])
    for c in results.get("failed_checks") or []:
        failures.append(c)
    for c in results.get("skipped_checks") or []:
        reason = ((c.get("check_result") or {}).get("suppress_comment") or "").strip()
        skips.append((c, reason))
        if not reason or reason.lower() == "no comment provided":
            bad_skips.append(c)

def where(c):
    lines = c.get("file_line_range") or ["?", "?"]
    return f"{c.get('file_path', '?')}:{lines[0]}-{lines[1]} {c.get('resource', '?')}"

print(f"check-infra: {target}: {nfiles} .bicep file(s), {resources} resource(s) scanned")
print(f"check-infra: passed={passed} failed={len(failures)} skipped={len(skips)} parse_errors={len(parse_errors)}")
for c, reason in sorted(skips, key=lambda s: (s[0].get("check_id", ""), s[0].get("file_path", ""))):
    print(f"  skip {c.get('check_id')} {where(c)}: {reason or '(NO REASON)'}")

ok = True
if not saw_bicep or resources == 0:
    print("check-infra: FAIL: checkov scanned no Bicep resources", file=sys.stderr)
    ok = False
for p in parse_errors:
    print(f"check-infra: FAIL: parse error in {p}", file=sys.stderr)
    ok = False
for c in failures:
    print(f"check-infra: FAIL: {c.get('check_id')} {c.get('check_name')} at {where(c)} "
          f"(fix it, or add `// checkov:skip={c.get('check_id')}: <reason>` in the resource body)",
          file=sys.stderr)
    ok = False
for c in bad_skips:
    print(f"check-infra: FAIL: skip of {c.get('check_id')} at {where(c)} has no written reason", file=sys.stderr)
    ok = False
sys.exit(0 if ok else 1)
PY
  # checkov does not say WHY a file failed to parse; ask its parser (pycep) directly.
  if [ "$verdict" -ne 0 ]; then
    "$venv_python" - "$target" <<'PY' >&2 || true
import sys
from pathlib import Path
from pycep import BicepParser
p = BicepParser(add_line_numbers=True)
for f in sorted(Path(sys.argv[1]).rglob("*.bicep")):
    try:
        p.parse(text=f.read_text())
    except Exception as e:
        msg = " ".join(str(e).split())[:300]
        print(f"check-infra:   {f}: {msg}")
PY
  fi
  rm -f "$out" "$out.err"
  return "$verdict"
}

if [ "$mode" = scan ]; then
  if scan "$dir"; then
    echo "check-infra: OK"
  else
    echo "check-infra: FAILED for '$dir'" >&2
    exit 1
  fi
  exit 0
fi

# ---- self-test: each broken copy must fail, the intact copy must pass ------------------------
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
fails=0
expect() {  # expect pass|fail NAME DIR
  local want="$1" name="$2" d="$3" got
  if scan "$d" >"$tmp/$name.log" 2>&1; then got=pass; else got=fail; fi
  if [ "$got" = "$want" ]; then
    echo "check-infra self-test: ok   $name (gate said $got)"
  else
    echo "check-infra self-test: BAD  $name: expected $want, gate said $got; its output:" >&2
    sed 's/^/    /' "$tmp/$name.log" >&2
    fails=$((fails + 1))
  fi
}
copy() { rm -rf "${tmp:?}/$1"; cp -r "$root/infra" "$tmp/$1"; echo "$tmp/$1"; }

d="$(copy intact)"
expect pass intact "$d"

# 1. a syntax error (unbalanced brace) in one module: checkov reports it only as a parsing error
d="$(copy parse-error)"
printf '\nresource broken %s = {\n  name: %s\n' "'Microsoft.Storage/storageAccounts@2025-01-01'" "'x'" >>"$d/modules/storage.bicep"
expect fail parse-error "$d"

# 2. a real misconfiguration: shared-key TLS downgrade on storage (CKV_AZURE_44 fails)
d="$(copy failed-check)"
sed -i "s/minimumTlsVersion: 'TLS1_2'/minimumTlsVersion: 'TLS1_0'/" "$d/modules/storage.bicep"
grep -q "TLS1_0" "$d/modules/storage.bicep" || { echo "self-test: could not inject TLS1_0" >&2; exit 1; }
expect fail failed-check "$d"

# 3. a skip whose reason was removed
d="$(copy skip-without-reason)"
sed -i 's|// checkov:skip=CKV_AZURE_225:.*|// checkov:skip=CKV_AZURE_225|' "$d/modules/functionapp.bicep"
grep -q 'checkov:skip=CKV_AZURE_225$' "$d/modules/functionapp.bicep" || { echo "self-test: could not strip the reason" >&2; exit 1; }
expect fail skip-without-reason "$d"

# 4. an empty tree (nothing scanned must not count as clean)
mkdir -p "$tmp/empty"
expect fail empty "$tmp/empty"

if [ "$fails" -ne 0 ]; then
  echo "check-infra self-test: FAILED ($fails case(s))" >&2
  exit 1
fi
echo "check-infra self-test: 5 passed, 0 failed"
