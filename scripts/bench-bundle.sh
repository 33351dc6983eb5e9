#!/bin/bash
# Benchmarks signed bundles against the standard tools, side by side:
#  1. sha256 throughput of `slate verify` vs `openssl sha256` on the same data
#     (a 1 GiB incompressible artifact, so hashing dominates; and a 100 MiB ext4
#     image of system files, which adds zstd decompression);
#  2. `slate bundle` vs `rauc bundle` (verity format) of the same 100 MiB image;
#  3. peak RSS of `slate verify` on a bundle of more than 1 GiB.
# Prints ratios; record them in docs/benchmarks.md. Usage:
#   scripts/bench-bundle.sh [WORKDIR]     (default: a temp dir, removed after;
#   CHUNK=1M bundles the verify inputs at that chunk size instead of the default)
# Needs hyperfine, openssl, e2fsprogs, rauc and squashfs-tools (for rauc), jq.
# Run it on an otherwise idle machine: slate uses every core, openssl one.
set -euo pipefail
cd "$(dirname "$0")/.."
export LC_ALL=C TZ=UTC
repo=$PWD

for tool in hyperfine openssl mke2fs jq /usr/bin/time; do
    command -v "$tool" >/dev/null || { echo "bench-bundle: $tool is missing" >&2; exit 2; }
done
if [ $# -ge 1 ]; then
    work=$1
    mkdir -p "$work"
else
    work=$(mktemp -d)
    trap 'rm -rf "$work"' EXIT
fi

cargo build --release --quiet
slate=$repo/target/release/slate
cd "$work"

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
entry() { # DIR NAME FILE
    printf '{"name":"%s","file":"%s","size":%d,"sha256":"%s"}' "$2" "$3" \
        "$(stat -c %s "$1/$3")" "$(openssl sha256 -r "$1/$3" | cut -d' ' -f1)"
}
build_manifest() { # DIR FILE
    printf '{"format":1,"name":"bench","version":"1.0.0","compatible":"slate-bench","security_version":1,"source_date_epoch":0,"artifacts":[%s],"disk":null,"packages":[]}\n' \
        "$(entry "$1" rootfs "$2")" > "$1/manifest.json"
}

echo "bench-bundle: preparing inputs in $work"
# A 100 MiB ext4 image filled with ~80 MiB of this system's files: real
# binaries, libraries and documentation, in a fixed order.
if [ ! -f img/rootfs.ext4 ]; then
    rm -rf img tree && mkdir -p img tree
    find /usr/bin /usr/lib/x86_64-linux-gnu /usr/share/doc -maxdepth 2 -type f -size -8M \
        2>/dev/null | sort > files.txt || true
    total=0
    while read -r f; do
        [ "$total" -gt $((80 << 20)) ] && break
        mkdir -p "tree$(dirname "$f")" && cp "$f" "tree$(dirname "$f")/"
        total=$((total + $(stat -c %s "$f")))
    done < files.txt
    truncate -s 100M img/rootfs.ext4
    mke2fs -q -F -t ext4 -d tree img/rootfs.ext4
    rm -rf tree
fi
build_manifest img rootfs.ext4
# 1 GiB of random bytes: zstd stores them, so verify is all hashing.
if [ ! -f rnd/rootfs.img ]; then
    mkdir -p rnd
    openssl rand -out rnd/rootfs.img $((1 << 30))
fi
build_manifest rnd rootfs.img
[ -f k.key ] || "$slate" keygen k >/dev/null
"$slate" bundle img --key k.key ${CHUNK:+--chunk-size "$CHUNK"} -o img.slate >/dev/null
"$slate" bundle rnd --key k.key ${CHUNK:+--chunk-size "$CHUNK"} -o rnd.slate >/dev/null

echo
echo "== 1. sha256 throughput: slate verify vs openssl sha256 (same data) =="
hyperfine -N --warmup 1 --runs 7 --export-json v-rnd.json \
    "$slate verify rnd.slate --pubkey k.pub" "openssl sha256 rnd/rootfs.img" | grep -E "Time|±|^Benchmark"
t_slate=$(jq -r '.results[0].mean' v-rnd.json)
t_ossl=$(jq -r '.results[1].mean' v-rnd.json)
cpu() { jq -r ".results[$2] | \"\(.user + .system)\"" "$1"; }
r_rnd=$(ratio "$t_ossl" "$t_slate")
hyperfine -N --warmup 1 --runs 10 --export-json v-img.json \
    "$slate verify img.slate --pubkey k.pub" "openssl sha256 img/rootfs.ext4" | grep -E "Time|±|^Benchmark"
t_slate_img=$(jq -r '.results[0].mean' v-img.json)
t_ossl_img=$(jq -r '.results[1].mean' v-img.json)
r_img=$(ratio "$t_ossl_img" "$t_slate_img")

echo
echo "== 2. bundle 100 MiB rootfs: slate bundle vs rauc bundle =="
r_bundle=n/a
if command -v rauc >/dev/null && command -v mksquashfs >/dev/null; then
    mkdir -p rauc-in
    cp img/rootfs.ext4 rauc-in/rootfs.ext4
    printf '[update]\ncompatible=slate-bench\nversion=1.0.0\n\n[bundle]\nformat=verity\n\n[image.rootfs]\nfilename=rootfs.ext4\n' \
        > rauc-in/manifest.raucm
    [ -f rauc.key ] || openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
        -keyout rauc.key -out rauc.crt -days 3650 -subj /CN=slate-bench 2>/dev/null
    hyperfine --runs 3 --export-json b.json \
        --prepare "rm -f s.slate r.raucb" \
        "$slate bundle img --key k.key -o s.slate" \
        "rauc bundle --cert rauc.crt --key rauc.key rauc-in r.raucb" 2>/dev/null | grep -E "Time|±|^Benchmark"
    t_sb=$(jq -r '.results[0].mean' b.json)
    t_rb=$(jq -r '.results[1].mean' b.json)
    r_bundle=$(ratio "$t_sb" "$t_rb")
    "$slate" bundle img --key k.key -o s.slate >/dev/null
    echo "sizes: slate $(stat -c %s s.slate) bytes, rauc $(stat -c %s r.raucb) bytes"
else
    echo "skipped: rauc or mksquashfs (squashfs-tools) is not installed"
fi

echo
echo "== 3. peak RSS of slate verify on a $(stat -c %s rnd.slate)-byte bundle =="
/usr/bin/time -v "$slate" verify rnd.slate --pubkey k.pub 2> rss.txt >/dev/null
rss_kib=$(awk -F: '/Maximum resident set size/ { gsub(/ /, "", $2); print $2 }' rss.txt)
echo "peak RSS: $((rss_kib / 1024)) MiB"

echo
echo "== summary ($(date -u +%F), $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), load $(cut -d' ' -f1-3 /proc/loadavg)) =="
printf 'verify vs openssl sha256, 1 GiB random:    %s s vs %s s -> throughput ratio %sx (goal >= 0.9)\n' \
    "$(printf %.3f "$t_slate")" "$(printf %.3f "$t_ossl")" "$r_rnd"
printf '  CPU time (user+sys):                     %s s vs %s s (verify hashes every byte twice:\n' \
    "$(printf %.3f "$(cpu v-rnd.json 0)")" "$(printf %.3f "$(cpu v-rnd.json 1)")"
printf '  each chunk, and the whole artifact, on separate cores)\n'
printf 'verify vs openssl sha256, 100 MiB ext4:    %s s vs %s s -> throughput ratio %sx (includes zstd)\n' \
    "$(printf %.3f "$t_slate_img")" "$(printf %.3f "$t_ossl_img")" "$r_img"
if [ "$r_bundle" != n/a ]; then
    printf 'bundle vs rauc bundle, 100 MiB ext4:       %s s vs %s s -> time ratio %sx (goal <= 1.0)\n' \
        "$(printf %.2f "$t_sb")" "$(printf %.2f "$t_rb")" "$r_bundle"
fi
printf 'verify peak RSS, >= 1 GiB bundle:          %s MiB (goal < 64)\n' "$((rss_kib / 1024))"
