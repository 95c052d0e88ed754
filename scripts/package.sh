#!/usr/bin/env bash
# Builds the deployment package for Azure Functions (Linux x86-64, Flex Consumption):
#   1. a release build of qualtrics-bridge, static x86_64-unknown-linux-musl when possible
#      (installs the rustup target and, as root, Debian's musl-tools for musl-gcc, which
#      aws-lc-sys needs); otherwise a glibc build, printing the GLIBC_* versions it requires;
#   2. `qualtrics-bridge config check` of your config (the file BRIDGE_CONFIG_FILE names);
#   3. target/package/staging: host.json, the binary (0755, named as host.json's
#      defaultExecutablePath), <Function>/function.json for each folder of functions/, and your
#      config as bridge.toml;
#   4. target/package/qualtrics-bridge.zip, with Unix modes kept (the binary stays 0755);
#   5. scripts/check-package.sh on the result.
# The repo's ./bridge.toml is devkit's sandbox sample (`sandbox = true`) and is refused.
#
# usage: BRIDGE_CONFIG_FILE=FILE scripts/package.sh [--glibc]   build, check, stage, zip, check
#        scripts/package.sh --check-only [DIR]     only check an existing staging dir (and its zip)
#        scripts/package.sh --zip-only DIR ZIP     only zip DIR into ZIP (used by the checks)
# env:   BRIDGE_CONFIG_FILE=FILE   required: your bridge.toml, packaged as the app's bridge.toml
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
musl_target="x86_64-unknown-linux-musl"
out="$root/target/package"
staging="$out/staging"
zip="$out/qualtrics-bridge.zip"

say() { echo "package: $*" >&2; }
die() { echo "package: ERROR: $*" >&2; exit 1; }

# zip_dir DIR ZIP: deterministic zip of DIR's files with their Unix modes in external_attr.
zip_dir() {
  local dir="$1" zipfile="$2"
  [ -d "$dir" ] || die "zip: '$dir' is not a directory"
  command -v python3 >/dev/null || die "python3 not found (needed to write the zip)"
  python3 - "$dir" "$zipfile" <<'PY'
import os, stat, sys, zipfile
src, dst = sys.argv[1], sys.argv[2]
tmp = dst + ".tmp"
files = []
for dirpath, dirnames, filenames in os.walk(src):
    dirnames.sort()
    for f in sorted(filenames):
        files.append(os.path.relpath(os.path.join(dirpath, f), src))
with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as z:
    for rel in files:
        full = os.path.join(src, rel)
        st = os.lstat(full)
        if not stat.S_ISREG(st.st_mode):
            sys.exit(f"package: ERROR: {full} is not a regular file")
        info = zipfile.ZipInfo(rel.replace(os.sep, "/"), date_time=(1980, 1, 1, 0, 0, 0))
        info.create_system = 3                      # Unix, so external_attr carries the mode
        info.external_attr = (stat.S_IFREG | stat.S_IMODE(st.st_mode)) << 16
        info.compress_type = zipfile.ZIP_DEFLATED
        with open(full, "rb") as fh:
            z.writestr(info, fh.read())
os.replace(tmp, dst)
PY
}

case "${1:-}" in
  -h|--help) sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
  --check-only)
    dir="${2:-$staging}"
    exec "$root/scripts/check-package.sh" "$dir" "${3:-$(dirname "$dir")/qualtrics-bridge.zip}" ;;
  --zip-only)
    [ $# -eq 3 ] || die "--zip-only needs DIR and ZIP"
    zip_dir "$2" "$3"; exit 0 ;;
esac

force_glibc=0
for arg in "$@"; do
  case "$arg" in
    --glibc) force_glibc=1 ;;
    *) die "unknown argument '$arg' (try --help)" ;;
  esac
done

command -v python3 >/dev/null || die "python3 not found"
# Refused before anything is built: no config named, or the sandbox sample.
[ -n "${BRIDGE_CONFIG_FILE:-}" ] || die "set BRIDGE_CONFIG_FILE to your bridge.toml: the repo's ./bridge.toml \
is devkit's sandbox sample and is never packaged. Write your own (docs/deploy.md, step 2), then:
  BRIDGE_CONFIG_FILE=path/to/bridge.toml scripts/package.sh"
config="$BRIDGE_CONFIG_FILE"
[ -f "$config" ] || die "BRIDGE_CONFIG_FILE: '$config' is not a file"
"$root/scripts/check-package.sh" --config "$config" || die "refusing to package '$config'"
command -v cargo >/dev/null || die "cargo not found; install Rust (rustup)"

exe_name="$(python3 -c 'import json,sys;print(json.load(open(sys.argv[1]))["customHandler"]["description"]["defaultExecutablePath"])' "$root/host.json")" \
  || die "cannot read customHandler.description.defaultExecutablePath from $root/host.json"
[ "$exe_name" = "qualtrics-bridge" ] || die "host.json defaultExecutablePath is '$exe_name', but the binary is 'qualtrics-bridge'"

# ---- 1. build ---------------------------------------------------------------------------------
musl_ready() {
  if ! rustup target list --installed 2>/dev/null | grep -qx "$musl_target"; then
    say "adding rustup target $musl_target"
    rustup target add "$musl_target" >&2 || { say "cannot add rustup target $musl_target"; return 1; }
  fi
  if ! command -v musl-gcc >/dev/null; then
    if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
      say "installing musl-tools (musl-gcc, needed by aws-lc-sys)"
      DEBIAN_FRONTEND=noninteractive apt-get install -y -q musl-tools >&2 \
        || { apt-get update -q >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q musl-tools >&2; } \
        || { say "apt-get install musl-tools failed"; return 1; }
    else
      say "musl-gcc is missing and cannot be installed (need root and apt-get): apt-get install musl-tools"
      return 1
    fi
  fi
  command -v rustup >/dev/null
}

kind=""
if [ "$force_glibc" -eq 0 ] && command -v rustup >/dev/null && musl_ready; then
  say "building $exe_name for $musl_target (release, static)"
  CC_x86_64_unknown_linux_musl=musl-gcc \
    cargo build --release --locked -p qualtrics-bridge --bin qualtrics-bridge --target "$musl_target" >&2
  bin="$root/target/$musl_target/release/qualtrics-bridge"
  kind="musl (static)"
else
  [ "$force_glibc" -eq 1 ] || say "WARNING: the musl target is not available; falling back to a glibc build"
  cargo build --release --locked -p qualtrics-bridge --bin qualtrics-bridge >&2
  bin="$root/target/release/qualtrics-bridge"
  kind="glibc (dynamic)"
  if command -v objdump >/dev/null; then
    versions="$(objdump -T "$bin" | grep -o 'GLIBC_[0-9.]*' | sort -u -V | tr '\n' ' ')"
    say "glibc build requires: ${versions:-none}(the Functions image must provide the highest of these)"
  else
    say "objdump not found (apt-get install binutils): cannot list the GLIBC_* versions required"
  fi
fi
[ -x "$bin" ] || die "build produced no executable at $bin"

# ---- 2. config check --------------------------------------------------------------------------
# The handler's own parser, in a clean environment: this validates the file, not this
# machine's settings (the app's settings live in Azure).
say "config check of $config"
env -i PATH="$PATH" "$bin" config check --config "$config" >&2 \
  || die "'$config' is not a valid bridge.toml (see above; qualtrics-bridge config check --config $config)"

# ---- 3. staging -------------------------------------------------------------------------------
rm -rf "$staging"
mkdir -p "$staging"
install -m 0644 "$root/host.json" "$staging/host.json"
install -m 0644 "$config" "$staging/bridge.toml"
install -m 0755 "$bin" "$staging/$exe_name"
found=0
for f in "$root"/functions/*/function.json; do
  [ -f "$f" ] || continue
  name="$(basename "$(dirname "$f")")"
  install -d -m 0755 "$staging/$name"
  install -m 0644 "$f" "$staging/$name/function.json"
  found=$((found + 1))
done
[ "$found" -gt 0 ] || die "no functions/*/function.json found under $root/functions"

# ---- 4. zip -----------------------------------------------------------------------------------
rm -f "$zip"
zip_dir "$staging" "$zip"

# ---- 5. check ---------------------------------------------------------------------------------
"$root/scripts/check-package.sh" "$staging" "$zip" >&2
size="$(stat -c %s "$zip")"
printf '%s\n' "kind=$kind" "zip_bytes=$size" "binary_bytes=$(stat -c %s "$staging/$exe_name")" >"$out/build-info.txt"
say "binary: $kind, $(stat -c %s "$staging/$exe_name") bytes; $(file -b "$staging/$exe_name" 2>/dev/null || true)"
say "zip: $zip ($size bytes)"
echo "$zip"
