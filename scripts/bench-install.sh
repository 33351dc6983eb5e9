#!/bin/bash
# Install throughput: write a verified bundle's rootfs into a slot-sized target
# with `slate extract` (the installer's path: every chunk decompressed and
# checked before it is written, fsync at the end) versus `dd bs=4M conv=fsync`
# of the same bytes. Target: a file (default) or a loop device (LOOP=1, as
# root), which exercises the block-device path (holes written as zeros).
#
# Usage: scripts/bench-install.sh [SIZE_MIB] [RUNS]   (default 1024 MiB, 3 runs;
#        CHUNK=1M bundles at that chunk size instead of the default)
set -euo pipefail
cd "$(dirname "$0")/.."
size_mib="${1:-1024}"
runs="${2:-3}"
cargo build --release --locked -q
slate="$PWD/target/release/slate"
work="$(mktemp -d "${TMPDIR:-/var/tmp}/slate-bench-install.XXXXXX")"
trap 'rm -rf "$work"; [ -n "${loopdev:-}" ] && losetup -d "$loopdev" 2>/dev/null || true' EXIT

# A rootfs-like artifact: half shared libraries (compressible), a quarter
# random bytes, a quarter zeros (holes).
b="$work/build"
mkdir -p "$b"
set +o pipefail   # head closes the pipe early by design
{
    find /usr/lib/x86_64-linux-gnu -maxdepth 1 -type f -name '*.so*' | sort \
        | xargs cat 2>/dev/null | head -c $((size_mib / 2))M
    head -c $((size_mib / 4))M /dev/urandom
    head -c $((size_mib - size_mib / 2 - size_mib / 4))M /dev/zero
} > "$b/rootfs.ext4"
set -o pipefail
printf 'kernel' > "$b/vmlinuz"; printf 'initrd' > "$b/initrd.img"; printf '{}' > "$b/boot.json"
python3 - "$b" <<'PY'
import hashlib, json, os, sys
d = sys.argv[1]
def art(name, f):
    p = os.path.join(d, f)
    h = hashlib.sha256(open(p, 'rb').read()).hexdigest()
    return {"name": name, "file": f, "size": os.path.getsize(p), "sha256": h}
m = {"format": 1, "name": "bench", "version": "1.0.0", "compatible": "bench",
     "security_version": 0, "source_date_epoch": 0,
     "artifacts": [art("rootfs", "rootfs.ext4"), art("kernel", "vmlinuz"),
                   art("initrd", "initrd.img"), art("boot", "boot.json")],
     "disk": None, "packages": []}
json.dump(m, open(os.path.join(d, "manifest.json"), "w"), indent=2)
PY
"$slate" keygen "$work/k" >/dev/null
# CHUNK=SIZE bundles at that chunk size (default: slate bundle's own).
"$slate" bundle "$b" --key "$work/k.key" ${CHUNK:+--chunk-size "$CHUNK"} -o "$work/b.slate" >/dev/null
bytes=$(stat -c %s "$b/rootfs.ext4")

target="$work/slot.img"
if [ "${LOOP:-0}" = 1 ]; then
    # A loop device's size is whole 512-byte sectors: round the target up.
    truncate -s $(((bytes + 4095) / 4096 * 4096)) "$work/loop.img"
    loopdev=$(losetup --find --show "$work/loop.img")
    target="$loopdev"
fi

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
# Wall time of a command, which must succeed (a failed run is not a measurement).
t() {
    local s e
    s=$(date +%s.%N)
    "$@" >/dev/null 2>"$work/err" || { echo "bench-install.sh: $* failed:" >&2; cat "$work/err" >&2; exit 1; }
    e=$(date +%s.%N)
    echo "$e - $s" | bc
}
slate_times=(); dd_times=()
for _ in $(seq "$runs"); do
    [ "${LOOP:-0}" = 1 ] || rm -f "$target"
    sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true
    slate_times+=("$(t "$slate" extract "$work/b.slate" --pubkey "$work/k.pub" -o "$target")")
    [ "${LOOP:-0}" = 1 ] || rm -f "$target"
    sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true
    dd_times+=("$(t dd if="$b/rootfs.ext4" of="$target" bs=4M conv=fsync)")
done
s=$(printf '%s\n' "${slate_times[@]}" | median)
d=$(printf '%s\n' "${dd_times[@]}" | median)
mib=$(echo "$bytes / 1048576" | bc)
echo "artifact: $mib MiB, target: $( [ "${LOOP:-0}" = 1 ] && echo "loop device" || echo file ), runs: $runs"
printf 'slate extract (verify+write+fsync): %6.2f s  %7.1f MiB/s\n' "$s" "$(echo "$mib / $s" | bc -l)"
printf 'dd bs=4M conv=fsync:                %6.2f s  %7.1f MiB/s\n' "$d" "$(echo "$mib / $d" | bc -l)"
printf 'throughput ratio slate/dd: %.2f (goal >= 0.8)\n' "$(echo "$d / $s" | bc -l)"
