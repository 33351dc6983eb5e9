#!/bin/bash
# dm-verity hash trees (issue 13): `slate verity` against `veritysetup format`
# (Debian's cryptsetup-bin) on the same image, same salt and UUID, side by
# side; the two hash files must be identical.
#
#   scripts/bench-verity.sh [SIZE_MIB] [RUNS]   (default 1024 MiB, 5 runs; SLATE=BIN skips cargo)
#
# The image is pseudo-random (AES-128-CTR keystream of a fixed key), so the
# numbers are about hashing, not about a page cache full of zeros. Both tools
# run with a warm page cache; the median wall time of RUNS is printed and
# the throughput ratio slate / veritysetup (goal >= 0.9).
set -euo pipefail
export LC_ALL=C
prog=bench-verity.sh
die() {
    echo "$prog: $*" >&2
    exit 1
}
size_mib=${1:-1024}
runs=${2:-5}
cd "$(dirname "$0")/.."
for tool in veritysetup openssl; do
    command -v "$tool" >/dev/null || die "$tool is not installed (Debian: cryptsetup-bin openssl)"
done
if [ -z "${SLATE:-}" ]; then
    cargo build --release --locked -q
    SLATE=$PWD/target/release/slate
fi
work=$(mktemp -d "${TMPDIR:-/var/tmp}/slate-bench-verity.XXXXXX")
trap 'rm -rf "$work"' EXIT
openssl enc -aes-128-ctr -nosalt -K 000102030405060708090a0b0c0d0e0f -iv 00000000000000000000000000000000 </dev/zero 2>/dev/null |
    head -c $((size_mib << 20)) >"$work/data.img" || true
[ "$(stat -c %s "$work/data.img")" = $((size_mib << 20)) ] || die "could not make the test image"
salt=5a17
uuid=01234567-89ab-cdef-0123-456789abcdef

# Wall time of a command, which must succeed (a failed run is not a measurement).
t() {
    local s e
    s=$(date +%s.%N)
    "$@" >/dev/null 2>"$work/err" || {
        echo "$prog: $* failed:" >&2
        cat "$work/err" >&2
        exit 1
    }
    e=$(date +%s.%N)
    echo "$e - $s" | bc
}
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
cat "$work/data.img" >/dev/null
ours=() theirs=()
for _ in $(seq "$runs"); do
    theirs+=("$(t veritysetup format "$work/data.img" "$work/theirs.img" --salt $salt --uuid $uuid)")
    ours+=("$(t "$SLATE" verity "$work/data.img" "$work/ours.img" --salt $salt --uuid $uuid)")
done
cmp -s "$work/ours.img" "$work/theirs.img" || die "the hash trees differ"
s=$(printf '%s\n' "${ours[@]}" | median)
v=$(printf '%s\n' "${theirs[@]}" | median)
echo "image: $size_mib MiB, runs: $runs, hash trees identical"
printf 'slate verity:        %6.3f s  %7.1f MiB/s\n' "$s" "$(echo "$size_mib / $s" | bc -l)"
printf 'veritysetup format:  %6.3f s  %7.1f MiB/s\n' "$v" "$(echo "$size_mib / $v" | bc -l)"
printf 'throughput ratio slate/veritysetup: %.2f (goal >= 0.9)\n' "$(echo "$v / $s" | bc -l)"
