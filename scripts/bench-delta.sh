#!/bin/bash
# Delta downloads (issue 12): bytes a device running OLD downloads to get NEW, for the image
# pairs of tests/fixtures/delta-pairs.gen.sh, by slate and by the standard tools.
#
#   scripts/bench-delta.sh [WORKDIR]      (default target/bench-delta; SLATE=BIN skips cargo)
#
# Per pair, NEW is bundled at 64 KiB and at 1 MiB chunks, then:
#   slate    `slate diff OLD NEW.slate --json` .downloaded: every HTTP body byte, signed head
#            included, of all bundle artifacts (rootfs, kernel, initrd, boot, sbom)
#   casync   `casync make` (default chunking: 64 KiB average, zstd) of OLD and of NEW, each
#            into its own store: compressed size of the chunks NEW's index names that OLD's store
#            lacks, plus NEW's index (what `casync extract --seed=OLD` fetches); then the
#            extract is run with the seed and its output compared with NEW
#   zchunk   `zck` (default chunking) of OLD and NEW, `zck_delta_size OLD.zck NEW.zck` ("Would
#            download N": the missing chunks plus NEW's header, which zckdl fetches first)
#   xdelta3  size of `xdelta3 -9 -e -B <OLD size> -s OLD NEW`
#   full     the NEW bundle's length
# casync, zchunk and xdelta3 see one blob per side: rootfs.ext4 + vmlinuz + initrd.img
# concatenated (for the unrelated pair OLD is the random slot image alone). Those three cover
# rootfs + kernel + initrd; slate and full cover the whole bundle.
# If `slate extract --seed` exists, it also times a full and a delta extract of the rootfs from
# nginx on 127.0.0.1 (median of 3) and checks the bytes nginx sent against `slate diff`.
set -euo pipefail
export LC_ALL=C TZ=UTC
prog=bench-delta.sh
die() {
    echo "$prog: $*" >&2
    exit 1
}
[ $# -le 1 ] || {
    echo "usage: $prog [WORKDIR]" >&2
    exit 2
}
cd "$(dirname "$0")/.."
root=$PWD
work=${1:-target/bench-delta}
mkdir -p "$work" || die "$work: cannot create the directory"
work=$(realpath "$work")
for tool in casync zck zck_delta_size xdelta3 jq python3; do
    command -v "$tool" >/dev/null || die "$tool is not installed (Debian: casync zchunk xdelta3 jq python3)"
done
if [ -z "${SLATE:-}" ]; then
    cargo build --release --locked -q || die "cargo build failed"
    SLATE=${CARGO_TARGET_DIR:-$root/target}/release/slate
fi
slate=$(realpath "$SLATE")
[ -x "$slate" ] || die "$slate: not executable"
t_start=$(date +%s.%N)

[ -e "$work/key.pub" ] || "$slate" keygen "$work/key" >/dev/null || die "slate keygen failed"
pairs=$("$root/tests/fixtures/delta-pairs.gen.sh" "$slate" "$work/pairs" "$work/key.pub")
have_diff=0
"$slate" diff --help >/dev/null 2>&1 && have_diff=1
have_seed=0
"$slate" extract --help 2>/dev/null | grep -q -- '--seed' && have_seed=1

# blob SIDE_DIR_OR_IMAGE OUT: the bytes the other tools compare.
blob() {
    [ -e "$2" ] && return 0
    if [ -d "$1" ]; then
        cat "$1/rootfs.ext4" "$1/vmlinuz" "$1/initrd.img" >"$2.tmp"
    else
        cp "$1" "$2.tmp"
    fi
    mv "$2.tmp" "$2"
}
size() { stat -c %s "$1"; }
# chunks in store $2 (a fresh store of one index) missing from store $1: total bytes.
store_missing() {
    python3 - "$1" "$2" <<'PY'
import os, sys
def chunks(store):
    out = {}
    for d, _, files in os.walk(store):
        for f in files:
            if f.endswith(".cacnk"):
                out[f] = os.path.getsize(os.path.join(d, f))
    return out
old, new = chunks(sys.argv[1]), chunks(sys.argv[2])
print(sum(s for f, s in new.items() if f not in old), len([f for f in new if f not in old]), len(new))
PY
}

cas=$work/casync
mkdir -p "$cas" "$work/bundles" "$work/blobs"
rows=()
while IFS=$'\t' read -r pair old new _; do
    echo "$prog: $pair" >&2
    for cs in 64K 1M; do
        b=$work/bundles/$pair-$cs.slate
        "$slate" bundle --quiet "$new" --key "$work/key.key" --chunk-size $cs -o "$b" >/dev/null ||
            die "slate bundle $new --chunk-size $cs failed"
    done
    full64=$(size "$work/bundles/$pair-64K.slate")
    full1m=$(size "$work/bundles/$pair-1M.slate")
    s64=n/a s1m=n/a
    if [ $have_diff = 1 ]; then
        for cs in 64K 1M; do
            j=$("$slate" diff "$old" "$work/bundles/$pair-$cs.slate" --json) || die "slate diff $old $pair-$cs failed"
            echo "$j" >"$work/bundles/$pair-$cs.diff.json"
            d=$(jq -er .downloaded <<<"$j") || die "slate diff $pair-$cs: no .downloaded in $j"
            if [ $cs = 64K ]; then s64=$d; else s1m=$d; fi
        done
    fi

    oname=$(basename "$old")
    [ "$oname" = base ] || oname=$pair-old
    ob=$work/blobs/$oname.blob nb=$work/blobs/$pair.blob
    blob "$old" "$ob"
    blob "$new" "$nb"

    # casync
    if [ ! -e "$cas/$oname.caibx" ]; then
        rm -rf "$cas/$oname.castr"
        casync make --store="$cas/$oname.castr" "$cas/$oname.caibx" "$ob" >/dev/null || die "casync make $ob failed"
    fi
    rm -rf "$cas/$pair.castr" "$cas/$pair.caibx"
    casync make --store="$cas/$pair.castr" "$cas/$pair.caibx" "$nb" >/dev/null || die "casync make $nb failed"
    read -r cmiss cmissn cn < <(store_missing "$cas/$oname.castr" "$cas/$pair.castr")
    cidx=$(size "$cas/$pair.caibx")
    casync=$((cmiss + cidx))
    rm -f "$cas/out.blob"
    casync extract --store="$cas/$pair.castr" --seed="$ob" "$cas/$pair.caibx" "$cas/out.blob" >/dev/null 2>&1 ||
        die "casync extract --seed $ob failed"
    cmp -s "$cas/out.blob" "$nb" || die "casync extract of $pair differs from NEW"
    rm -f "$cas/out.blob"

    # zchunk
    [ -e "$work/blobs/$oname.zck" ] || zck -o "$work/blobs/$oname.zck" "$ob" >/dev/null || die "zck $ob failed"
    zck -o "$work/blobs/$pair.zck" "$nb" >/dev/null || die "zck $nb failed"
    zl=$(zck_delta_size "$work/blobs/$oname.zck" "$work/blobs/$pair.zck") || die "zck_delta_size failed for $pair"
    zchunk=$(sed -n 's/^Would download \([0-9]*\) of .*/\1/p' <<<"$zl")
    [ -n "$zchunk" ] || die "zck_delta_size: unexpected output: $zl"

    # xdelta3
    win=$(size "$ob")
    [ "$win" -ge 16777216 ] || win=16777216
    xdelta3 -9 -e -f -B "$win" -s "$ob" "$nb" "$work/blobs/$pair.xd3" || die "xdelta3 failed for $pair"
    xd=$(size "$work/blobs/$pair.xd3")

    rows+=("$pair $full64 $full1m $s64 $s1m $casync $zchunk $xd $cmissn $cn")
done <<<"$pairs"

pct() { # A B -> A/B in %
    [ "$1" = n/a ] && { echo n/a; return; }
    awk -v a="$1" -v b="$2" 'BEGIN { v = 100 * a / b; printf(v < 1 ? "%.3f%%" : (v < 10 ? "%.2f%%" : "%.1f%%"), v) }'
}
times() { # A B -> A/B as a factor
    [ "$1" = n/a ] && { echo n/a; return; }
    awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2fx", a / b }'
}
echo
echo "Bytes downloaded (slate, full: whole bundle incl. signed head; casync, zchunk, xdelta3: rootfs + kernel + initrd)"
echo
echo "| pair | full 1 MiB | full 64 KiB | slate 64 KiB | slate 1 MiB | casync (new chunks of all) | zchunk | xdelta3 |"
echo "|---|---|---|---|---|---|---|---|"
for r in "${rows[@]}"; do
    read -r p f64 f1m s64 s1m c z x cm cn <<<"$r"
    echo "| $p | $f1m | $f64 | $s64 | $s1m | $c ($cm of $cn) | $z | $x |"
done
echo
echo "Ratios: against the full bundle (slate: its own chunk size's bundle; others: the 1 MiB bundle), and slate against casync"
echo
echo "| pair | slate 64 KiB | slate 1 MiB | casync | zchunk | xdelta3 | slate 64 KiB / casync | slate 1 MiB / casync |"
echo "|---|---|---|---|---|---|---|---|"
for r in "${rows[@]}"; do
    read -r p f64 f1m s64 s1m c z x _ _ <<<"$r"
    echo "| $p | $(pct "$s64" "$f64") | $(pct "$s1m" "$f1m") | $(pct "$c" "$f1m") | $(pct "$z" "$f1m") | $(pct "$x" "$f1m") | $(times "$s64" "$c") | $(times "$s1m" "$c") |"
done
[ $have_diff = 1 ] || echo "(slate columns n/a: this slate has no \`diff\` command)"

if [ $have_seed = 1 ]; then
    # Full vs delta install of the rootfs from nginx on 127.0.0.1, file-added pair, 64 KiB chunks.
    command -v nginx >/dev/null || die "nginx is not installed"
    ng=$work/nginx
    rm -rf "$ng" && mkdir -p "$ng/www" "$ng/tmp"
    cp "$work/bundles/file-added-64K.slate" "$ng/www/new.slate"
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    cat >"$ng/nginx.conf" <<CONF
daemon off;
worker_processes 1;
pid $ng/nginx.pid;
error_log $ng/error.log;
events { worker_connections 64; }
http {
    log_format bytes '\$status "\$http_range" \$body_bytes_sent';
    access_log $ng/access.log bytes;
    client_body_temp_path $ng/tmp; proxy_temp_path $ng/tmp; fastcgi_temp_path $ng/tmp;
    uwsgi_temp_path $ng/tmp; scgi_temp_path $ng/tmp;
    server { listen 127.0.0.1:$port; root $ng/www; }
}
CONF
    nginx -c "$ng/nginx.conf" -p "$ng" &
    ngpid=$!
    trap 'kill $ngpid 2>/dev/null || true' EXIT
    for _ in $(seq 50); do [ -e "$ng/nginx.pid" ] && break; sleep 0.1; done
    url=http://127.0.0.1:$port/new.slate
    seed=$work/pairs/base/rootfs.ext4
    run_t() { # prints seconds; the command's stdout goes to $ng/last.json
        local s e
        s=$(date +%s.%N)
        "$@" >"$ng/last.json" 2>"$ng/last.err" || die "$* failed: $(tail -n 1 "$ng/last.err")"
        e=$(date +%s.%N)
        awk -v a="$s" -v b="$e" 'BEGIN { printf "%.3f\n", b - a }'
    }
    median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
    full_t=() delta_t=()
    for _ in 1 2 3; do
        full_t+=("$(run_t "$slate" extract --quiet "$url" --pubkey "$work/key.pub" --artifact rootfs -o "$ng/full.out")")
        : >"$ng/access.log"
        delta_t+=("$(run_t "$slate" extract --quiet "$url" --pubkey "$work/key.pub" --seed "$seed" --artifact rootfs -o "$ng/delta.out" --json)")
    done
    cmp -s "$ng/delta.out" "$work/pairs/file-added/rootfs.ext4" || die "delta extract output differs from NEW's rootfs"
    sent=$(awk '{s += $NF} END {print s + 0}' "$ng/access.log")
    reported=$(jq -r .downloaded "$ng/last.json")
    predicted=n/a
    [ $have_diff = 1 ] && predicted=$("$slate" diff "$seed" "$work/bundles/file-added-64K.slate" --artifact rootfs --json | jq -r .downloaded)
    echo
    echo "Install of the rootfs from nginx (file-added, 64 KiB chunks), median of 3"
    echo
    echo "| extract | time | bytes |"
    echo "|---|---|---|"
    echo "| full | $(printf '%s\n' "${full_t[@]}" | median) s | $(size "$ng/www/new.slate") (bundle) |"
    echo "| delta, --seed base rootfs | $(printf '%s\n' "${delta_t[@]}" | median) s | nginx sent $sent, extract reported $reported, diff predicted $predicted |"
else
    echo
    echo "(no full vs delta install timing: this slate's extract has no --seed)"
fi
t_end=$(date +%s.%N)
echo
awk -v a="$t_start" -v b="$t_end" 'BEGIN { printf "total: %.0f s\n", b - a }'
