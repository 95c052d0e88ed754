#!/usr/bin/env bash
# Asserts the layout of the deployment package built by scripts/package.sh:
#   - the staging dir holds exactly host.json, bridge.toml, the handler binary and
#     <Function>/function.json for each folder of functions/ (and nothing else);
#   - host.json customHandler.description.defaultExecutablePath names that binary;
#   - the binary is an x86-64 ELF with mode 0755;
#   - the zip has the same entries at its root, keeps the binary's 0755 mode, and is <= 8 MiB;
#   - bridge.toml is not the sandbox sample (it has no top-level `sandbox = true`).
#
# usage: scripts/check-package.sh [STAGING_DIR [ZIP]]   default: target/package/staging and
#                                                       target/package/qualtrics-bridge.zip
#        scripts/check-package.sh --config FILE         only check that FILE is not the sample
#        scripts/check-package.sh --self-test           prove the check fails on bad packages
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
max_zip_bytes=$((8 * 1024 * 1024))

case "${1:-}" in
  -h|--help) sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
esac
command -v python3 >/dev/null || { echo "check-package: python3 not found" >&2; exit 1; }

# The sandbox sample (./bridge.toml) carries the top-level key `sandbox = true`, which the
# handler's parser knows (BridgeConfig::sandbox): a marker, not a comment or a content hash, so
# a copy of the sample is caught however it was renamed or reformatted, and a user's edited
# file passes once the line is gone. The Python below defines sandbox_sample(path) -> bool; the
# checks exec it from the environment.
read -r -d '' SANDBOX_PY <<'PY' || true
def sandbox_sample(path):
    try:
        import tomllib
    except ImportError:
        try:
            import tomli as tomllib
        except ImportError:
            tomllib = None
    if tomllib is not None:
        with open(path, "rb") as fh:
            return tomllib.load(fh).get("sandbox") is True
    # Python < 3.11 without tomli: top-level keys are the lines before the first [table].
    import re
    for line in open(path, encoding="utf-8"):
        if line.lstrip().startswith("["):
            return False
        if re.match(r"\s*sandbox\s*=\s*true\s*(#.*)?$", line):
            return True
    return False
PY
SANDBOX_HELP="it is devkit's sandbox sample (top-level 'sandbox = true'). Write your own bridge.toml \
(docs/deploy.md, step 2), check it with 'qualtrics-bridge config check --config FILE', and package it \
with: BRIDGE_CONFIG_FILE=FILE scripts/package.sh"

if [ "${1:-}" = "--config" ]; then
  [ $# -eq 2 ] || { echo "check-package: --config needs FILE" >&2; exit 2; }
  SANDBOX_PY="$SANDBOX_PY" python3 - "$2" "$SANDBOX_HELP" <<'PY'
import os, sys
exec(os.environ["SANDBOX_PY"])
path, help = sys.argv[1], sys.argv[2]
try:
    sample = sandbox_sample(path)
except (OSError, ValueError) as e:
    sys.exit(f"check-package: FAIL: {path}: {e}")
if sample:
    sys.exit(f"check-package: FAIL: {path}: {help}")
PY
  exit 0
fi

# check STAGING ZIP FUNCTIONS_SRC: prints one line per problem; exit 1 on any.
check() {
  SANDBOX_PY="$SANDBOX_PY" python3 - "$1" "$2" "$3" "$max_zip_bytes" "$SANDBOX_HELP" <<'PY'
import json, os, stat, sys, zipfile
from pathlib import Path
exec(os.environ["SANDBOX_PY"])

staging, zip_path, functions_src, max_zip = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]), int(sys.argv[4])
problems = []
def bad(msg): problems.append(msg)

if not staging.is_dir():
    print(f"check-package: FAIL: staging dir '{staging}' does not exist (run scripts/package.sh)", file=sys.stderr)
    sys.exit(1)

host = staging / "host.json"
exe = None
try:
    h = json.loads(host.read_text())
    exe = h["customHandler"]["description"]["defaultExecutablePath"]
except FileNotFoundError:
    bad(f"{host} is missing")
except (ValueError, KeyError, TypeError) as e:
    bad(f"{host}: no customHandler.description.defaultExecutablePath ({e!r})")
if exe is not None and (not isinstance(exe, str) or "/" in exe or exe in ("", ".", "..")):
    bad(f"{host}: defaultExecutablePath {exe!r} must be a bare file name at the app root")
    exe = None

functions = sorted(p.parent.name for p in functions_src.glob("*/function.json"))
for name in ("QualtricsWebhook", "ExportPoller", "TicketCreator", "TicketEvents"):
    if name not in functions:
        bad(f"{functions_src}/{name}/function.json is missing (DESIGN.md function)")

expected = {"host.json", "bridge.toml"} | {f"{n}/function.json" for n in functions}
if exe:
    expected.add(exe)
actual, dirs = set(), set()
for dirpath, dirnames, filenames in os.walk(staging):
    rel = Path(dirpath).relative_to(staging)
    for d in dirnames:
        dirs.add(str(rel / d) if str(rel) != "." else d)
    for f in filenames:
        actual.add(str(rel / f) if str(rel) != "." else f)
for extra in sorted(actual - expected):
    bad(f"unexpected file in staging: {extra}")
for missing in sorted(expected - actual):
    bad(f"missing from staging: {missing}")
for d in sorted(dirs - set(functions)):
    bad(f"unexpected directory in staging: {d}/")
for n in functions:
    src, dst = functions_src / n / "function.json", staging / n / "function.json"
    if dst.is_file() and src.read_bytes() != dst.read_bytes():
        bad(f"{dst} differs from {src}")

if exe and (staging / exe).is_file():
    p = staging / exe
    st = p.lstat()
    if not stat.S_ISREG(st.st_mode):
        bad(f"{p} is not a regular file")
    mode = stat.S_IMODE(st.st_mode)
    if mode != 0o755:
        bad(f"{p} has mode {mode:04o}, expected 0755")
    head = p.read_bytes()[:20]
    if head[:4] != b"\x7fELF":
        bad(f"{p} is not an ELF executable")
    elif head[4] != 2 or int.from_bytes(head[18:20], "little") != 0x3E:
        bad(f"{p} is not a 64-bit x86-64 ELF")

config = staging / "bridge.toml"
if config.is_file():
    try:
        if sandbox_sample(config):
            bad(f"{config}: {sys.argv[5]}")
    except (OSError, ValueError) as e:
        bad(f"{config}: not readable TOML: {e}")

if not zip_path.is_file():
    bad(f"zip '{zip_path}' does not exist")
else:
    size = zip_path.stat().st_size
    if size > max_zip:
        bad(f"{zip_path} is {size} bytes, over the {max_zip}-byte (8 MiB) limit")
    try:
        with zipfile.ZipFile(zip_path) as z:
            infos = {i.filename: i for i in z.infolist()}
            names = {n for n in infos if not n.endswith("/")}
            for extra in sorted(names - expected):
                bad(f"unexpected entry in zip: {extra}")
            for missing in sorted(expected - names):
                bad(f"missing from zip: {missing}")
            if z.testzip() is not None:
                bad(f"{zip_path}: corrupt entry {z.testzip()}")
            if exe and exe in infos:
                i = infos[exe]
                zmode = i.external_attr >> 16
                if i.create_system != 3 or not stat.S_ISREG(zmode) or stat.S_IMODE(zmode) != 0o755:
                    bad(f"{zip_path}: entry {exe} lost its Unix mode (create_system={i.create_system}, "
                        f"mode={stat.S_IMODE(zmode):04o}); expected a regular file with 0755")
                elif exe and (staging / exe).is_file() and z.read(exe) != (staging / exe).read_bytes():
                    bad(f"{zip_path}: entry {exe} differs from the staged binary")
            print(f"check-package: zip {zip_path}: {size} bytes ({size / 1048576:.2f} MiB), {len(names)} files")
    except zipfile.BadZipFile as e:
        bad(f"{zip_path} is not a valid zip: {e}")

for p in problems:
    print(f"check-package: FAIL: {p}", file=sys.stderr)
if problems:
    sys.exit(1)
print(f"check-package: OK: {staging} ({len(expected)} files, handler '{exe}' 0755)")
PY
}

if [ "${1:-}" = "--self-test" ]; then
  tmp="$(mktemp -d)"
  trap 'rm -rf "$tmp"' EXIT
  # A user's config: the sample without its marker.
  grep -v '^sandbox = true' "$root/bridge.toml" >"$tmp/user.toml"
  make_pkg() {  # make_pkg DIR: a well-formed fake package with a stub x86-64 ELF
    local d="$1"
    mkdir -p "$d/staging"
    cp "$root/host.json" "$d/staging/"
    cp "$tmp/user.toml" "$d/staging/bridge.toml"
    for f in "$root"/functions/*/function.json; do
      mkdir -p "$d/staging/$(basename "$(dirname "$f")")"
      cp "$f" "$d/staging/$(basename "$(dirname "$f")")/"
    done
    local exe
    exe="$(python3 -c 'import json,sys;print(json.load(open(sys.argv[1]))["customHandler"]["description"]["defaultExecutablePath"])' "$root/host.json")"
    python3 -c 'import sys;open(sys.argv[1],"wb").write(b"\x7fELF\x02\x01\x01"+b"\0"*11+b"\x3e\x00"+b"\0"*44)' "$d/staging/$exe"
    chmod 0755 "$d/staging/$exe"
    bash "$root/scripts/package.sh" --zip-only "$d/staging" "$d/pkg.zip" >/dev/null
    echo "$exe"
  }
  fails=0 passes=0
  verdict() {  # verdict pass|fail NAME GOT [WANT_IN_LOG]: compare, and show the log when wrong
    if [ "$3" = "$1" ] && { [ -z "${4:-}" ] || grep -qF -- "$4" "$tmp/$2.log"; }; then
      echo "check-package self-test: ok   $2 (said $3)"
      passes=$((passes + 1))
    else
      echo "check-package self-test: BAD  $2: expected $1${4:+ mentioning '$4'}, got $3:" >&2
      sed 's/^/    /' "$tmp/$2.log" >&2
      fails=$((fails + 1))
    fi
  }
  expect() {  # expect pass|fail NAME DIR [WANT_IN_LOG]
    local got
    if check "$3/staging" "$3/pkg.zip" "$root/functions" >"$tmp/$2.log" 2>&1; then got=pass; else got=fail; fi
    verdict "$1" "$2" "$got" "${4:-}"
  }
  expect_cmd() {  # expect_cmd pass|fail NAME WANT_IN_LOG CMD...: a script run, before any build
    local want="$1" name="$2" log="$3" got
    shift 3
    if "$@" >"$tmp/$name.log" 2>&1; then got=pass; else got=fail; fi
    verdict "$want" "$name" "$got" "$log"
  }
  exe="$(make_pkg "$tmp/good")"; expect pass good "$tmp/good"
  make_pkg "$tmp/extra" >/dev/null; touch "$tmp/extra/staging/local.settings.json"
  bash "$root/scripts/package.sh" --zip-only "$tmp/extra/staging" "$tmp/extra/pkg.zip" >/dev/null
  expect fail extra-file "$tmp/extra"
  make_pkg "$tmp/mode" >/dev/null; chmod 0644 "$tmp/mode/staging/$exe"
  expect fail staged-mode-0644 "$tmp/mode"
  make_pkg "$tmp/zipmode" >/dev/null
  (cd "$tmp/zipmode/staging" && rm -f ../pkg.zip && python3 -c '
import sys, zipfile, os
with zipfile.ZipFile("../pkg.zip", "w") as z:
    for dp, _, fs in os.walk("."):
        for f in fs:
            p = os.path.join(dp, f)[2:]
            z.writestr(zipfile.ZipInfo(p), open(p, "rb").read())  # no Unix mode: like Windows tools
')
  expect fail zip-lost-exec-bit "$tmp/zipmode"
  make_pkg "$tmp/missing" >/dev/null; rm -r "$tmp/missing/staging/TicketCreator"
  expect fail missing-function "$tmp/missing"
  # The sandbox sample is never shipped: not in a package, and package.sh refuses it (and a
  # missing BRIDGE_CONFIG_FILE) before it builds anything.
  make_pkg "$tmp/sample" >/dev/null; cp "$root/bridge.toml" "$tmp/sample/staging/bridge.toml"
  bash "$root/scripts/package.sh" --zip-only "$tmp/sample/staging" "$tmp/sample/pkg.zip" >/dev/null
  expect fail staged-sandbox-sample "$tmp/sample" "sandbox sample"
  { echo 'sandbox=true   # renamed and reformatted'; grep -v '^sandbox = true' "$root/bridge.toml"; } >"$tmp/copy.toml"
  expect_cmd fail config-sample-copy "BRIDGE_CONFIG_FILE=" bash "$0" --config "$tmp/copy.toml"
  expect_cmd pass config-user-file "" bash "$0" --config "$tmp/user.toml"
  expect_cmd fail package-without-config "BRIDGE_CONFIG_FILE" \
    env -u BRIDGE_CONFIG_FILE bash "$root/scripts/package.sh"
  expect_cmd fail package-the-sample "sandbox sample" \
    env BRIDGE_CONFIG_FILE="$root/bridge.toml" bash "$root/scripts/package.sh"
  if [ "$fails" -ne 0 ]; then echo "check-package self-test: FAILED ($fails case(s))" >&2; exit 1; fi
  echo "check-package self-test: $passes passed, 0 failed"
  exit 0
fi

staging="${1:-$root/target/package/staging}"
zip="${2:-$(dirname "$staging")/qualtrics-bridge.zip}"
[ $# -le 2 ] || { echo "check-package: too many arguments (try --help)" >&2; exit 2; }
check "$staging" "$zip" "$root/functions"
