#!/bin/bash
# Benchmark: `slate mkfs ext4` against `mke2fs -t ext4 -d`, side by side on
# the same source trees and image sizes. Prints wall time (best of
# $BENCH_RUNS, default 3; 1 for empty1m), peak RSS and the time ratio
# slate/mke2fs per tree.
#
#   scripts/bench-mkfs.sh [TREE...]     TREE: bigdir rootfs empty10k empty100k empty1m
#
# Trees are generated (deterministically) under $BENCH_DIR, by default
# /dev/shm/slate-bench when /dev/shm exists, so that the source filesystem's
# own speed does not dominate; both tools read the same warm tree and
# write their image next to it. mke2fs runs without a journal, like slate's
# default (read-only slots).
set -euo pipefail
cd "$(dirname "$0")/.."
export LC_ALL=C

RUNS=${BENCH_RUNS:-3}
if [ -z "${BENCH_DIR:-}" ]; then
    if [ -d /dev/shm ]; then BENCH_DIR=/dev/shm/slate-bench; else BENCH_DIR=/tmp/slate-bench; fi
fi
TREES=("$@")
[ ${#TREES[@]} -gt 0 ] || TREES=(bigdir rootfs empty10k empty100k empty1m)

for tool in mke2fs e2fsck python3; do
    command -v "$tool" >/dev/null || { echo "bench-mkfs: $tool is required" >&2; exit 1; }
done
if [ ! -x /usr/bin/time ]; then
    if [ "$(id -u)" = 0 ]; then
        apt-get install -y -qq time >/dev/null
    else
        echo "bench-mkfs: /usr/bin/time is required (apt-get install time)" >&2
        exit 1
    fi
fi

cargo build --release --quiet
SLATE=$PWD/target/release/slate
mkdir -p "$BENCH_DIR"

# gen TREE DIR: writes the tree; prints the image SIZE to use for both tools.
gen() {
    python3 - "$1" "$2" <<'EOF'
import os, random, sys
kind, root = sys.argv[1], sys.argv[2]
rng = random.Random(42)
os.makedirs(root)
paths = 0
def put(path, size):
    global paths
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        if size:
            f.write(rng.randbytes(size))
    paths += 1
if kind == "bigdir":
    # ~30k files, one directory of 18k entries.
    for i in range(18_000):
        put(f"{root}/usr/share/many/file-{i:05d}.dat", rng.randrange(0, 1500))
    for i in range(12_000):
        put(f"{root}/usr/lib/d{i // 100:03d}/f{i % 100:02d}", rng.randrange(0, 1500))
    size = "512M"
elif kind == "rootfs":
    # ~1,400 files, ~26 MiB: mostly small, some medium, a few large.
    for i in range(1_400):
        r = rng.random()
        n = rng.randrange(100, 8 << 10) if r < 0.70 else rng.randrange(8 << 10, 48 << 10) if r < 0.95 else rng.randrange(64 << 10, 320 << 10)
        put(f"{root}/d{rng.randrange(120):03d}/f{i:04d}", n)
    for i in range(100):
        os.symlink(f"../d000/f{i:04d}", f"{root}/d001/link{i}")
        paths += 1
    size = "64M"
elif kind.startswith("empty"):
    n = {"empty10k": 10_000, "empty100k": 100_000, "empty1m": 1_000_000}[kind]
    for i in range(n):
        d = f"{root}/d{i // 1000:04d}"
        if i % 1000 == 0:
            os.mkdir(d)
            paths += 1
        open(f"{d}/f{i % 1000:03d}", "wb").close()
        paths += 1
    size = {"empty10k": "128M", "empty100k": "1G", "empty1m": "8G"}[kind]
else:
    sys.exit(f"unknown tree {kind}")
print(size)
EOF
}

# measure RUNS CMD...: best wall time in seconds and the peak RSS (KiB) of that run.
measure() {
    local runs=$1 best="" rss="" t m t0 t1
    shift
    for _ in $(seq "$runs"); do
        rm -f "$OUT"
        t0=$(date +%s.%N)
        /usr/bin/time -f "%M" -o "$BENCH_DIR/rss.txt" "$@" >/dev/null
        t1=$(date +%s.%N)
        t=$(awk "BEGIN{printf \"%.3f\", $t1 - $t0}")
        m=$(cat "$BENCH_DIR/rss.txt")
        if [ -z "$best" ] || awk "BEGIN{exit !($t < $best)}"; then best=$t rss=$m; fi
    done
    echo "$best $rss"
}

echo "bench-mkfs: $(nproc) cores, $(uname -r), trees in $BENCH_DIR, best of $RUNS"
printf '%-10s %7s %6s %9s %9s %9s %9s %7s\n' tree files size slate_s mke2fs_s slate_MiB mke2fs_MiB ratio
for tree in "${TREES[@]}"; do
    SRC=$BENCH_DIR/$tree
    rm -rf "$SRC"
    SIZE=$(gen "$tree" "$SRC")
    FILES=$(find "$SRC" | wc -l)
    INODES=$((FILES + 64))
    OUT=$BENCH_DIR/$tree.img
    runs=$RUNS
    [ "$tree" != empty1m ] || runs=${BENCH_RUNS:-1}
    read -r s_time s_rss < <(measure "$runs" "$SLATE" mkfs ext4 "$SRC" "$OUT" --size "$SIZE")
    e2fsck -fn "$OUT" >/dev/null 2>&1 || { echo "bench-mkfs: slate image of $tree fails e2fsck" >&2; exit 1; }
    read -r m_time m_rss < <(measure "$runs" mke2fs -q -F -t ext4 -b 4096 -I 256 -O ^has_journal -N "$INODES" -d "$SRC" "$OUT" "$SIZE")
    rm -f "$OUT"
    ratio=$(awk "BEGIN{printf \"%.3f\", $s_time / ($m_time > 0 ? $m_time : 0.001)}")
    printf '%-10s %7s %6s %9s %9s %9.1f %9.1f %7s\n' "$tree" "$FILES" "$SIZE" "$s_time" "$m_time" \
        "$(awk "BEGIN{print $s_rss/1024}")" "$(awk "BEGIN{print $m_rss/1024}")" "$ratio"
    rm -rf "$SRC"
done
rm -f "$BENCH_DIR/rss.txt"
echo "goals: bigdir <= 0.5, rootfs <= 1.0, empty*: slate time linear in files, RSS bounded"
