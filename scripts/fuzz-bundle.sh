#!/bin/bash
# Fuzzes the bundle reader and manifest parser (fuzz/, cargo-fuzz) for a few
# minutes; not part of CI. Usage: scripts/fuzz-bundle.sh [SECONDS_PER_TARGET]
# (default 60; three targets). Needs cargo-fuzz (`cargo install cargo-fuzz`)
# and a nightly toolchain (`rustup toolchain install nightly`).
#
# A crash leaves its input in fuzz/artifacts/TARGET/. Add it to the
# regression tests in tests/bundle_fuzz.rs before fixing the bug.
set -euo pipefail
cd "$(dirname "$0")/.."
export LC_ALL=C TZ=UTC
secs=${1:-60}

if ! command -v cargo-fuzz >/dev/null; then
    echo "fuzz-bundle: cargo-fuzz is missing: cargo install cargo-fuzz" >&2
    exit 2
fi
if ! rustup run nightly rustc --version >/dev/null 2>&1; then
    echo "fuzz-bundle: a nightly toolchain is needed: rustup toolchain install nightly" >&2
    exit 2
fi

# Seed corpus: a small bundle signed with the key the harness trusts
# (fuzz/fuzz_targets/common.rs: Ed25519 seed of 32 bytes 0x07).
cargo build --release --quiet
slate=target/release/slate
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
{
    echo "-----BEGIN PRIVATE KEY-----"
    { printf '\x30\x2e\x02\x01\x00\x30\x05\x06\x03\x2b\x65\x70\x04\x22\x04\x20'
      head -c 32 /dev/zero | tr '\0' '\7'; } | base64
    echo "-----END PRIVATE KEY-----"
} > "$work/fuzz.key"
build=$work/build
mkdir -p "$build"
{ seq 1 20000; head -c 150000 /dev/zero; seq 5 7 90000; } > "$build/rootfs.img"
head -c 70000 "$slate" > "$build/vmlinuz"
entry() { # NAME FILE
    printf '{"name":"%s","file":"%s","size":%d,"sha256":"%s"}' "$1" "$2" \
        "$(stat -c %s "$build/$2")" "$(sha256sum "$build/$2" | cut -d' ' -f1)"
}
printf '{"format":1,"name":"fuzz","version":"1","compatible":"fuzz","security_version":1,"source_date_epoch":0,"artifacts":[%s,%s],"disk":null,"packages":[]}\n' \
    "$(entry rootfs rootfs.img)" "$(entry kernel vmlinuz)" > "$build/manifest.json"
"$slate" bundle "$build" --key "$work/fuzz.key" --chunk-size 64K -o "$work/seed.slate" >/dev/null
len=$(od -An -tu4 -j16 -N4 "$work/seed.slate" | tr -d ' ')
for t in bundle_reader signed_bundle manifest_parser; do
    mkdir -p "fuzz/corpus/$t"
done
cp "$work/seed.slate" fuzz/corpus/bundle_reader/seed
cp "$work/seed.slate" fuzz/corpus/signed_bundle/seed
dd if="$work/seed.slate" of=fuzz/corpus/manifest_parser/seed bs=1 skip=40 count="$len" status=none

# Leak detection is off: LeakSanitizer reports the per-thread channel context
# that std's mpsc keeps in a thread-local of each worker thread as a leak.
status=0
for t in bundle_reader signed_bundle manifest_parser; do
    echo "=== fuzzing $t for ${secs}s ==="
    if ! cargo +nightly fuzz run "$t" "fuzz/corpus/$t" -- \
        -max_total_time="$secs" -max_len=262144 -rss_limit_mb=2048 -timeout=20 \
        -detect_leaks=0; then
        echo "fuzz-bundle: $t found a problem; see fuzz/artifacts/$t/" >&2
        status=1
    fi
done
exit $status
