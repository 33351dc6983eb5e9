#!/bin/bash
# Boot-time benchmark: the floor (a disk built with standard tools: OVMF ->
# systemd-boot, timeout 0 -> Debian cloud kernel `quiet` -> busybox
# initramfs that loads virtio, mounts an ext4 root read-only and powers off),
# booted N times by plain QEMU, QEMU start -> exit, side by side with:
#   - the same floor disk booted by `slate qemu` (runner overhead);
#   - [HOOK] slate's own image, out/minimal/disk.img, if it has been built:
#     power-on -> `committed` on slot A from `slate qemu --json` timestamps.
# Runs are interleaved so a busy machine slows every column alike.
#
# Usage: scripts/bench-boot.sh [N]    (default N=5)
# Env:   SLATE_QEMU_ACCEL=tcg|kvm (default tcg)
#        SLATE=path/to/slate (default: cargo build, target/debug/slate)
#        SLATE_IMAGE=path/to/disk.img (default out/minimal/disk.img)
set -euo pipefail
cd "$(dirname "$0")/.."
export LC_ALL=C TZ=UTC

runs=${1:-5}
work=tests/work/bench-boot
mkdir -p "$work"

if [ -z "${SLATE:-}" ]; then
    cargo build -q
    SLATE=target/debug/slate
fi
image=${SLATE_IMAGE:-out/minimal/disk.img}

floor=$work/floor.img
bash tests/fixtures/floor-disk.gen.sh floor "$floor"

ovmf=${SLATE_OVMF_DIR:-/usr/share/OVMF}
# TCG unless asked otherwise, for both columns alike.
accel=${SLATE_QEMU_ACCEL:-tcg}
export SLATE_QEMU_ACCEL=$accel
cpu=()
[ "$accel" = kvm ] && cpu=(-cpu host)
# The same machine as `slate qemu` builds (src/qemu/command.rs): keep in sync.
qemu_floor() {
    cp "$ovmf/OVMF_VARS_4M.fd" "$work/vars.fd"
    qemu-system-x86_64 -nodefaults -no-user-config -machine q35 -accel "$accel" "${cpu[@]}" -m 512 \
        -display none -monitor none -serial stdio \
        -drive "if=pflash,format=raw,unit=0,readonly=on,file=$ovmf/OVMF_CODE_4M.fd" \
        -drive "if=pflash,format=raw,unit=1,file=$work/vars.fd" \
        -drive "if=none,id=system,format=raw,cache=writethrough,snapshot=on,file=$floor" \
        -device virtio-blk-pci,drive=system,bootindex=0 \
        -device i6300esb -action watchdog=reset \
        </dev/null >"$work/floor-console.log" 2>&1
}

now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f\n", b - a }'; }
median() { sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else printf "%.3f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
# The "t" of the first JSON event named $1 on stdin.
event_t() { grep -m1 "\"event\":\"$1\"" | sed -E 's/.*"t":([0-9.]+).*/\1/'; }

: >"$work/floor.times"
: >"$work/floor-cpu.times"
: >"$work/slate-floor.times"
: >"$work/slate-floor-booted.times"
: >"$work/image.times"

for i in $(seq 1 "$runs"); do
    t0=$(now)
    # CPU seconds (user + sys) too: TCG boots are CPU-bound, so this is
    # roughly what an idle host would take, however busy this one is.
    TIMEFORMAT='%U %S'
    { time qemu_floor; } 2>"$work/floor.cpu"
    t1=$(now)
    floor_s=$(secs "$t0" "$t1")
    awk '{ printf "%.3f\n", $1 + $2 }' "$work/floor.cpu" >>"$work/floor-cpu.times"
    grep -q 'SLATE-EVENT {"event":"booted"' "$work/floor-console.log" ||
        { echo "bench-boot: the floor disk did not boot; console:" >&2; cat "$work/floor-console.log" >&2; exit 1; }
    echo "$floor_s" >>"$work/floor.times"

    t0=$(now)
    "$SLATE" qemu "$floor" --snapshot --json >"$work/slate-floor.json" 2>"$work/slate-floor.err"
    t1=$(now)
    secs "$t0" "$t1" >>"$work/slate-floor.times"
    event_t booted <"$work/slate-floor.json" >>"$work/slate-floor-booted.times"
    line="run $i/$runs: floor ${floor_s} s, floor via slate qemu $(tail -n1 "$work/slate-floor.times") s"

    # ---- HOOK: slate's own image (built by `slate build recipes/minimal.toml`) ----
    if [ -f "$image" ]; then
        if "$SLATE" qemu "$image" --snapshot --expect committed:A --json --timeout 300 \
            >"$work/image.json" 2>"$work/image.err"; then
            t=$(event_t committed <"$work/image.json")
            echo "$t" >>"$work/image.times"
            line="$line, slate image power-on -> committed ${t} s"
        else
            echo "bench-boot: $image did not reach committed:A:" >&2
            tail -n 45 "$work/image.err" >&2
            exit 1
        fi
    fi
    echo "$line"
done

floor_med=$(median <"$work/floor.times")
slate_floor_med=$(median <"$work/slate-floor.times")
booted_med=$(median <"$work/slate-floor-booted.times")
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }

echo
echo "boot benchmark: $runs runs, $accel, $(nproc) cores, $(date -u +%F), load average at end:$(cut -d" " -f1-3 /proc/loadavg | sed "s/^/ /")"
printf '%-52s %8s %6s\n' "what" "median" "ratio"
printf '%-52s %7ss %6s\n' "floor, plain QEMU: start -> exit" "$floor_med" "1.00"
printf '%-52s %7ss %6s\n' "floor, plain QEMU: CPU time (user + sys)" "$(median <"$work/floor-cpu.times")" "-"
printf '%-52s %7ss %6s\n' "floor via slate qemu: start -> exit" "$slate_floor_med" "$(ratio "$slate_floor_med" "$floor_med")"
printf '%-52s %7ss %6s\n' "floor via slate qemu: start -> root mounted (booted)" "$booted_med" "$(ratio "$booted_med" "$floor_med")"
if [ -s "$work/image.times" ]; then
    image_med=$(median <"$work/image.times")
    printf '%-52s %7ss %6s\n' "slate image: power-on -> committed:A" "$image_med" "$(ratio "$image_med" "$floor_med")"
    echo "goal: slate image <= 1.10x the floor"
else
    echo "(no $image: build it with 'slate build recipes/minimal.toml' to compare)"
fi
