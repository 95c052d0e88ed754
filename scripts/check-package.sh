#!/usr/bin/env bash
# Asserts the layout of the deployment package built by scripts/package.sh:
#   - the staging dir holds exactly host.json, bridge.toml, the handler binary and
#     <Function>/function.json for each folder of functions/ (and nothing else);
#   - host.json customHandler.description.defaultExecutablePath names that binary;
#   - the binary is an x86-64 ELF with mode 0755;
#   - the zip has the same entries at its root, keeps the binary's 0755 mode, and is <= 8 MiB.
#
# usage: scripts/check-package.sh [STAGING_DIR [ZIP]]   default: target/package/staging and
#                                                       target/package/qualtrics-bridge.zip
#        scripts/check-package.sh --self-test           prove the check fails on bad packages
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
max_zip_bytes=$((8 * 1024 * 1024))

case "${1:-}" in
  -h|--help) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
esac
command -v python3 >/dev/null || { echo "check-package: python3 not found" >&2; exit 1; }

# check STAGING ZIP FUNCTIONS_SRC: prints one line per problem; exit 1 on any.
check() {
  python3 - "$1" "$2" "$3" "$max_zip_bytes" <<'PY'
import json, os, stat, sys, zipfile
from pathlib import Path

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
for name in ("QualtricsWebhook", "ExportPoller", "TicketCreator"):
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
  make_pkg() {  # make_pkg DIR: a well-formed fake package with a stub x86-64 ELF
    local d="$1"
    mkdir -p "$d/staging"
    cp "$root/host.json" "$root/bridge.toml" "$d/staging/"
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
  fails=0
  expect() {  # expect pass|fail NAME DIR
    local got
    if check "$3/staging" "$3/pkg.zip" "$root/functions" >"$tmp/$2.log" 2>&1; then got=pass; else got=fail; fi
    if [ "$got" = "$1" ]; then
      echo "check-package self-test: ok   $2 (check said $got)"
    else
      echo "check-package self-test: BAD  $2: expected $1, check said $got:" >&2
      sed 's/^/    /' "$tmp/$2.log" >&2
      fails=$((fails + 1))
    fi
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
  if [ "$fails" -ne 0 ]; then echo "check-package self-test: FAILED ($fails case(s))" >&2; exit 1; fi
  echo "check-package self-test: 5 passed, 0 failed"
  exit 0
fi

staging="${1:-$root/target/package/staging}"
zip="${2:-$(dirname "$staging")/qualtrics-bridge.zip}"
[ $# -le 2 ] || { echo "check-package: too many arguments (try --help)" >&2; exit 2; }
check "$staging" "$zip" "$root/functions"
