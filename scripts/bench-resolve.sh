#!/bin/bash
# Cold package resolution: the 41-package recipe (dropbear-bin, curl,
# busybox-static, the cloud kernel and the boot chain) with an empty cache
# and no lock, against the live archive.
#
#   scripts/bench-resolve.sh [SLATE_BEFORE] [RUNS]
#
# Prints, per run, the time from start to the end of resolution (the first
# download) and to all packages fetched, for slate (this tree), an optional
# older slate binary, and the standard tool: one `apt-get update` plus one
# `apt-get install --print-uris` of the same packages with private state.
set -euo pipefail
cd "$(dirname "$0")/.."
export LC_ALL=C TZ=UTC
before=${1:-}
runs=${2:-3}
if [ -n "${SLATE_AFTER:-}" ]; then
    after=$SLATE_AFTER
else
    cargo build --release --locked -q
    after=$PWD/target/release/slate
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/recipes" "$work/keys"
"$after" keygen "$work/keys/dev" >/dev/null
cat >"$work/recipes/app.toml" <<'TOML'
[image]
name = "bench"
version = "1.0.0"

[kernel]
package = "linux-image-cloud-amd64"
modules = ["virtio_pci", "virtio_blk"]

[rootfs]
packages = ["dropbear-bin", "curl", "busybox-static"]

[update]
public_keys = ["../keys/dev.pub"]
TOML

sub() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", a - b }'; }

# time_slate BIN: seconds to the first download line, and to the build's
# "unpacking" stage (every package fetched), with a fresh cache.
time_slate() {
    local bin=$1 t0 resolved="" fetched="" line
    rm -rf "$work/cache" "$work/recipes/app.lock" "$work/out"
    t0=$EPOCHREALTIME
    while IFS= read -r line; do
        case $line in
        *"downloading "* | *"fetching "*) [ -n "$resolved" ] || resolved=$EPOCHREALTIME ;;
        *"unpacking packages"*) fetched=$EPOCHREALTIME ;;
        esac
    done < <(SLATE_CACHE_DIR=$work/cache "$bin" build "$work/recipes/app.toml" --out-dir "$work/out" 2>&1)
    local n
    n=$(grep -c '^\[\[package' "$work/recipes/app.lock")
    printf '%s %s %s\n' "$(sub "$resolved" "$t0")" "$(sub "$fetched" "$t0")" "$n"
}

# The standard tool: what any resolution needs at least.
time_apt() {
    local r=$work/apt t0 t1
    rm -rf "$r" && mkdir -p "$r/lists/partial" "$r/cache/archives/partial" "$r/empty" && : >"$r/status"
    local k=/usr/share/keyrings/debian-archive-keyring.gpg
    cat >"$r/sources.list" <<SRC
deb [signed-by=$k] http://deb.debian.org/debian bookworm main
deb [signed-by=$k] http://deb.debian.org/debian bookworm-updates main
deb [signed-by=$k] http://deb.debian.org/debian-security bookworm-security main
SRC
    local o=(-o "Dir::State=$r" -o "Dir::State::Lists=$r/lists" -o "Dir::State::status=$r/status"
        -o "Dir::Cache=$r/cache" -o "Dir::Etc::SourceList=$r/sources.list" -o "Dir::Etc::SourceParts=$r/empty"
        -o Debug::NoLocking=1 -o APT::Architecture=amd64 -o Acquire::Languages=none -o quiet=1)
    [ "$(id -u)" != 0 ] || o+=(-o APT::Sandbox::User=root)
    t0=$EPOCHREALTIME
    apt-get "${o[@]}" update >/dev/null
    apt-get "${o[@]}" -o Acquire::ForceHash=SHA256 install --print-uris -y --no-install-recommends \
        dropbear-bin curl busybox-static >/dev/null
    t1=$EPOCHREALTIME
    sub "$t1" "$t0"
}

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(date -u +%F)"
for i in $(seq "$runs"); do
    echo "run $i: apt-get update + one --print-uris: $(time_apt) s"
    read -r r f n < <(time_slate "$after")
    echo "run $i: slate (this tree):  resolved ${r} s, all fetched ${f} s, ${n} packages locked"
    if [ -n "$before" ]; then
        read -r r f n < <(time_slate "$before")
        echo "run $i: slate (before):     resolved ${r} s, all fetched ${f} s, ${n} packages locked"
    fi
done
