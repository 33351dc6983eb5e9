#!/bin/bash
# Benchmark: `slate mkfs fat` against mkfs.vfat + mcopy on the same tree,
# for a 64 MiB ESP holding ~20 MiB (two kernels, an initrd, small files).
# Both sides make the image durable (slate fsyncs; the baseline runs sync).
# Usage: scripts/bench-fat.sh [RUNS]   (needs hyperfine, dosfstools, mtools)
set -euo pipefail
cd "$(dirname "$0")/.."
export LC_ALL=C TZ=UTC MTOOLS_SKIP_CHECK=1
runs=${1:-10}
for t in hyperfine mkfs.vfat mcopy; do
    command -v "$t" >/dev/null || { echo "bench-fat: $t is missing" >&2; exit 1; }
done
cargo build --release --locked -q
slate=$PWD/target/release/slate

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
src=$work/esp
mkdir -p "$src/EFI/BOOT" "$src/EFI/Linux" "$src/loader/entries"
head -c 1M /dev/urandom >"$src/EFI/BOOT/BOOTX64.EFI"
head -c 8M /dev/urandom >"$src/EFI/Linux/vmlinuz-a"
head -c 8M /dev/urandom >"$src/EFI/Linux/vmlinuz-b"
head -c 3M /dev/urandom >"$src/EFI/Linux/initrd-a"
for i in $(seq 1 20); do
    head -c $((i * 1000)) /dev/urandom >"$src/loader/entries/entry-$i.conf"
done
echo "timeout 0" >"$src/loader/loader.conf"
du -sh --apparent-size "$src"

hyperfine --runs "$runs" --warmup 2 \
    --prepare "rm -f $work/slate.img $work/vfat.img" \
    -n "slate mkfs fat" "$slate mkfs fat $src $work/slate.img --size 64M" \
    -n "mkfs.vfat + mcopy" \
    "mkfs.vfat -C -F 32 $work/vfat.img 65536 >/dev/null && mcopy -s -i $work/vfat.img $src/* ::/ && sync $work/vfat.img"
