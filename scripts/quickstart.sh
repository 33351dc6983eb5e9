#!/bin/bash
# Build the minimal image and boot it in QEMU until its slot is committed.
# On a fresh Debian 12 machine, as root it installs what it needs.
set -euo pipefail
cd "$(dirname "$0")/.."
need=()
for p in qemu-system-x86 ovmf; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need+=("$p")
done
if ((${#need[@]})); then
    if [ "$(id -u)" = 0 ]; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}"
    else
        echo "quickstart: please install: ${need[*]}" >&2
        exit 1
    fi
fi
cargo build --release --locked
slate=target/release/slate
[ -e keys/dev.pub ] || "$slate" keygen keys/dev
# The committed lock is used as is (--locked): its packages come from the
# cache, a vendor directory (vendor/minimal, made by `slate vendor`), the
# archive, or the Debian snapshot of the day the lock was resolved.
args=(--locked)
[ -d vendor/minimal ] && args+=(--vendor vendor/minimal)
"$slate" build recipes/minimal.toml "${args[@]}"
exec "$slate" qemu out/minimal/disk.img --snapshot --expect healthy:A --expect committed:A
