#!/bin/bash
# Verified boot's cost at boot (issue 13): power-on -> `committed` on slot A
# for slate's image as built (root opened through dm-verity by the
# initramfs), side by side with the same disk whose boot entries lack
# `slate.verity=` (the initramfs then mounts the slot directly), and with the
# same recipe built with `[kernel] uki = true` (each slot boots a unified
# kernel image with the verity parameters embedded). Runs are interleaved so
# a busy machine slows every column alike; the medians and the ratios to the
# plain disk are printed (goal <= 1.05).
#
#   scripts/bench-boot-verity.sh [N]     (default N=5; SLATE=BIN skips cargo,
#                                         SLATE_IMAGE=disk.img skips the build)
set -euo pipefail
export LC_ALL=C MTOOLS_SKIP_CHECK=1
prog=bench-boot-verity.sh
die() {
    echo "$prog: $*" >&2
    exit 1
}
runs=${1:-5}
cd "$(dirname "$0")/.."
for tool in mcopy sgdisk; do
    command -v "$tool" >/dev/null || die "$tool is not installed (Debian: mtools gdisk)"
done
if [ -z "${SLATE:-}" ]; then
    cargo build -q
    SLATE=$PWD/target/debug/slate
fi
work=$(mktemp -d "${TMPDIR:-/var/tmp}/slate-bench-boot-verity.XXXXXX")
trap 'rm -rf "$work"' EXIT
image=${SLATE_IMAGE:-}
if [ -z "$image" ]; then
    [ -e keys/dev.pub ] || "$SLATE" keygen keys/dev >/dev/null
    "$SLATE" build recipes/minimal.toml --out-dir "$work/build" -q >/dev/null
    image=$work/build/disk.img
fi
# The same recipe with unified kernel images (its lock beside it).
sed -E -e 's|^modules = (.*)$|modules = \1\nuki = true|' \
    -e "s|\"\\.\\./keys/dev\\.pub\"|\"$PWD/keys/dev.pub\"|" recipes/minimal.toml >"$work/minimal.toml"
grep -q '^uki = true' "$work/minimal.toml" || die "could not add uki = true to recipes/minimal.toml"
cp recipes/minimal.lock "$work/minimal.lock"
"$SLATE" build "$work/minimal.toml" --out-dir "$work/build-uki" -q >/dev/null
cp --sparse=always "$work/build-uki/disk.img" "$work/uki.img"
cp --sparse=always "$image" "$work/verity.img"
cp --sparse=always "$image" "$work/plain.img"

# The plain disk: every entry's options without slate.verity=.
esp_start=$(sgdisk -i 1 "$work/plain.img" | awk '/First sector/ { print $3 }')
esp="$work/plain.img@@$((esp_start * 512))"
n=0
for entry in $(mdir -b -i "$esp" ::/loader/entries); do
    name=${entry##*/}
    mcopy -n -i "$esp" "::/loader/entries/$name" "$work/$name"
    grep -q 'slate.verity=' "$work/$name" || die "$name has no slate.verity= (not a verified image?)"
    sed -i -E 's/ slate\.verity=[^ ]*//' "$work/$name"
    mcopy -o -i "$esp" "$work/$name" "::/loader/entries/$name"
    n=$((n + 1))
done
[ "$n" -gt 0 ] || die "no boot entries on the ESP of $image"

# Seconds from QEMU's start to `committed` on A (slate qemu's timestamps).
committed_t() {
    "$SLATE" qemu "$1" --snapshot --json --expect booted:A --expect committed:A --timeout 240 >"$work/run.json" 2>"$work/run.err" ||
        { cat "$work/run.err" >&2; die "$1 did not commit"; }
    grep -m1 '"event":"booted"' "$work/run.json" >"$work/booted.json"
    grep -m1 '"event":"committed"' "$work/run.json" | sed -E 's/.*"t":([0-9.]+).*/\1/'
}
median() { sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else printf "%.3f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
: >"$work/verity.times"
: >"$work/plain.times"
: >"$work/uki.times"
for _ in $(seq "$runs"); do
    committed_t "$work/uki.img" >>"$work/uki.times"
    grep -q '"verity":"[0-9a-f]\{64\}"' "$work/booted.json" || die "the UKI image booted without verity"
    committed_t "$work/verity.img" >>"$work/verity.times"
    grep -q '"verity":"[0-9a-f]\{64\}"' "$work/booted.json" || die "the verified image booted without verity"
    committed_t "$work/plain.img" >>"$work/plain.times"
    grep -q '"verity":null' "$work/booted.json" || die "the plain image booted with verity"
done
v=$(median <"$work/verity.times")
p=$(median <"$work/plain.times")
u=$(median <"$work/uki.times")
echo "runs: $runs, power-on -> committed:A (median, s)"
printf 'with dm-verity:         %6.3f\n' "$v"
printf 'dm-verity + UKI:        %6.3f\n' "$u"
printf 'without:                %6.3f\n' "$p"
printf 'ratio verity/plain:     %6.3f (goal <= 1.05)\n' "$(echo "$v / $p" | bc -l)"
printf 'ratio verity+UKI/plain: %6.3f (goal <= 1.05)\n' "$(echo "$u / $p" | bc -l)"
