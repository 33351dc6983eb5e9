#!/bin/bash
# Update cycle under emulation: recipes/minimal.toml built as 1.0.0 (slot A)
# and as 2.0.0 (an update bundle), the bundle attached as a removable disk,
# and `slate qemu --json` timestamps of each phase: boot -> committed on A,
# `installing` -> `installed` (streaming, verifying and writing slot B and
# its boot files), -> the reboot into B, -> `committed` on B.
#
# Usage: scripts/bench-update.sh [RUNS]   (default 3)
# Env:   SLATE=path/to/slate (default: cargo build --release)
set -euo pipefail
cd "$(dirname "$0")/.."
export LC_ALL=C TZ=UTC SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-1700000000}
runs=${1:-3}

if [ -z "${SLATE:-}" ]; then
    cargo build --release --locked -q
    SLATE=target/release/slate
fi
SLATE=$(realpath "$SLATE")
work=tests/work/bench-update
rm -rf "$work"
mkdir -p "$work"
work=$(realpath "$work")

# The recipe twice, beside its lock file, with the key made here.
"$SLATE" keygen "$work/key" >/dev/null
for v in 1.0.0 2.0.0; do
    sed -e "s/^version = .*/version = \"$v\"/" \
        -e "s#^public_keys = .*#public_keys = [\"$work/key.pub\"]#" \
        recipes/minimal.toml >"$work/minimal-$v.toml"
    cp recipes/minimal.lock "$work/minimal-$v.lock"
    "$SLATE" build "$work/minimal-$v.toml" --out-dir "$work/build-$v" >"$work/build.log" 2>&1 ||
        { cat "$work/build.log" >&2; exit 1; }
done
"$SLATE" bundle "$work/build-2.0.0" --key "$work/key.key" -o "$work/update.bundle" >"$work/build.log" 2>&1 ||
    { cat "$work/build.log" >&2; exit 1; }
echo "bundle: $(du -h --apparent-size "$work/update.bundle" | cut -f1), rootfs $(du -h --apparent-size "$work/build-2.0.0/rootfs.ext4" | cut -f1)"

# The "t" of the first event named $1 (in slot $2, if given) on stdin.
event_t() {
    if [ -n "${2:-}" ]; then
        grep -m1 "\"event\":\"$1\".*\"slot\":\"$2\"" | sed -E 's/.*"t":([0-9.]+).*/\1/'
    else
        grep -m1 "\"event\":\"$1\"" | sed -E 's/.*"t":([0-9.]+).*/\1/'
    fi
}
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'; }

printf '%-4s %10s %12s %12s %12s %12s\n' run committed:A install reboot:B committed:B cycle
for i in $(seq 1 "$runs"); do
    "$SLATE" qemu "$work/build-1.0.0/disk.img" --snapshot --update "$work/update.bundle" \
        --expect committed:A --expect installed --expect committed:B --json --timeout 600 \
        >"$work/run.json" 2>"$work/run.err" ||
        { echo "bench-update: the update did not complete:" >&2; tail -n 45 "$work/run.err" >&2; exit 1; }
    a=$(event_t committed A <"$work/run.json")
    s=$(event_t installing <"$work/run.json")
    d=$(event_t installed <"$work/run.json")
    b=$(event_t booted B <"$work/run.json")
    c=$(event_t committed B <"$work/run.json")
    printf '%-4s %9ss %11ss %11ss %11ss %11ss\n' "$i" "$a" "$(secs "$s" "$d")" "$(secs "$d" "$b")" \
        "$(secs "$b" "$c")" "$(secs "$s" "$c")"
done
echo "(install: installing -> installed; reboot:B: installed -> booted on B;"
echo " committed:B: booted -> committed on B; cycle: installing -> committed on B)"
echo "$(nproc) cores, $(date -u +%F), load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"
