#!/bin/bash
# A tree of 1,000,000 files (plus 1,000 directories) through `slate mkfs ext4`
# -- `slate build` takes single files ([[rootfs.files]]), not directory
# trees, so this is the path a tree that large takes -- then `e2fsck -fn`
# must find the image clean and debugfs must see every file. Prints the time
# of each step and slate's time against `mke2fs -d` on the same tree.
# Too slow for the test suite (minutes); the result goes to docs/benchmarks.md.
#
#   scripts/bench-1m-files.sh [N]      N files (default 1000000)
#
# The tree is generated on tmpfs ($BENCH_DIR, default /dev/shm/slate-1m) so
# the source filesystem's speed does not dominate; the image is written next
# to it and everything is removed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
export LC_ALL=C TZ=UTC

N=${1:-1000000}
BENCH_DIR=${BENCH_DIR:-/dev/shm/slate-1m}
for tool in e2fsck debugfs mke2fs python3; do
    command -v "$tool" >/dev/null || { echo "bench-1m-files: $tool is required" >&2; exit 1; }
done
cargo build --release --quiet
SLATE=$PWD/target/release/slate

rm -rf "$BENCH_DIR"
mkdir -p "$BENCH_DIR"
trap 'rm -rf "$BENCH_DIR"' EXIT
SRC=$BENCH_DIR/tree
IMG=$BENCH_DIR/tree.img

now() { date +%s.%N; }
since() { awk "BEGIN{printf \"%.1f\", $(now) - $1}"; }

t0=$(now)
python3 - "$SRC" "$N" <<'EOF'
import os, sys
root, n = sys.argv[1], int(sys.argv[2])
os.makedirs(root)
for i in range(n):
    d = f"{root}/d{i // 1000:04d}"
    if i % 1000 == 0:
        os.mkdir(d)
    with open(f"{d}/f{i % 1000:03d}", "wb") as f:
        # Every 100th file has a little content, so data blocks are checked too.
        if i % 100 == 0:
            f.write(f"file {i}\n".encode())
EOF
echo "generated $N files in $(since "$t0") s"

t0=$(now)
if [ -x /usr/bin/time ]; then
    /usr/bin/time -f "slate peak RSS: %M KiB" "$SLATE" mkfs ext4 "$SRC" "$IMG" --size 8G
else
    "$SLATE" mkfs ext4 "$SRC" "$IMG" --size 8G
fi
slate_s=$(since "$t0")
echo "slate mkfs ext4: $slate_s s"

t0=$(now)
e2fsck -fn "$IMG" > "$BENCH_DIR/e2fsck.log" 2>&1 || {
    echo "bench-1m-files: e2fsck -fn found problems:" >&2
    tail -20 "$BENCH_DIR/e2fsck.log" >&2
    exit 1
}
echo "e2fsck -fn: clean in $(since "$t0") s: $(grep -E ' files ' "$BENCH_DIR/e2fsck.log" | tail -1)"

# Every file is there (debugfs counts the inodes in use) and a sample of
# contents reads back.
used=$(dumpe2fs -h "$IMG" 2>/dev/null | awk -F: '/^Inode count/{c=$2} /^Free inodes/{f=$2} END{print c-f}')
echo "inodes in use: $used (files + directories: $((N + (N + 999) / 1000)))"
[ "$used" -ge $((N + (N + 999) / 1000)) ] || { echo "bench-1m-files: inodes missing" >&2; exit 1; }
for i in 0 100 $((N / 2 / 100 * 100)) $(((N - 1) / 100 * 100)); do
    got=$(debugfs -R "cat /d$(printf %04d $((i / 1000)))/f$(printf %03d $((i % 1000)))" "$IMG" 2>/dev/null)
    [ "$got" = "file $i" ] || { echo "bench-1m-files: file $i reads back as '$got'" >&2; exit 1; }
done
echo "debugfs: sample contents read back"
rm -f "$IMG"

t0=$(now)
mke2fs -q -F -t ext4 -b 4096 -I 256 -O ^has_journal -N $((N + N / 1000 + 64)) -d "$SRC" "$IMG" 8G
mke2fs_s=$(since "$t0")
echo "mke2fs -d: $mke2fs_s s"
echo "ratio slate/mke2fs: $(awk "BEGIN{printf \"%.3f\", $slate_s / $mke2fs_s}")"
