#!/bin/bash
# slate's full test suite: lints, unit and integration tests, and the QEMU
# boot and update scenarios. As root it installs what it needs with apt;
# otherwise it lists what is missing and the tests that need it skip.
set -euo pipefail
cd "$(dirname "$0")/.."
export LC_ALL=C TZ=UTC

# Debian packages the tests use as independent checkers and as the VM.
PACKAGES=(qemu-system-x86 ovmf e2fsprogs dosfstools mtools gdisk openssl zstd cpio util-linux python3 man-db bash bmap-tools dmsetup
    apt-utils gpg python3-venv openssh-client iproute2 nginx cryptsetup-bin systemd-container
    systemd-boot-efi binutils sbsigntool)

missing=()
for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    if [ "$(id -u)" = 0 ]; then
        echo "qemu-test: installing ${missing[*]}"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    else
        echo "qemu-test: missing packages (tests needing them will skip): ${missing[*]}" >&2
        echo "qemu-test: install them with: sudo apt-get install ${missing[*]}" >&2
    fi
fi

step() { printf '\n=== %s ===\n' "$*"; }

# Every skipped test is recorded here and listed at the end. In CI (CI=true)
# everything the tests need is installed above, so a skip is a failure.
export SLATE_SKIP_LOG="$PWD/target/test-skips.log"
mkdir -p target
: > "$SLATE_SKIP_LOG"
if [ "${CI:-}" = true ]; then
    export SLATE_REQUIRE_ALL_TESTS=1
fi
skip_summary() {
    local n
    n=$(wc -l < "$SLATE_SKIP_LOG" 2>/dev/null || echo 0)
    printf '\n=== skipped tests: %s ===\n' "$n"
    [ "$n" = 0 ] || sort "$SLATE_SKIP_LOG"
}
trap skip_summary EXIT

# The independent SPDX validator (PyPI spdx-tools) for tests/sbom.rs, in a
# virtualenv under target/.
step "spdx-tools (PyPI) in target/spdx-venv"
if [ ! -x target/spdx-venv/bin/pyspdxtools ]; then
    python3 -m venv target/spdx-venv
    target/spdx-venv/bin/pip install -q spdx-tools
fi
export SLATE_PYSPDXTOOLS=$PWD/target/spdx-venv/bin/pyspdxtools

# virt-fw-vars (PyPI virt-firmware) enrolls slate's Secure Boot keys in an
# OVMF variable store for tests/secure_boot.rs.
step "virt-firmware (PyPI) in target/fw-venv"
if [ ! -x target/fw-venv/bin/virt-fw-vars ]; then
    python3 -m venv target/fw-venv
    target/fw-venv/bin/pip install -q virt-firmware
fi
export SLATE_VIRT_FW_VARS=$PWD/target/fw-venv/bin/virt-fw-vars

# python-tuf (PyPI tuf, the TUF reference implementation, with cryptography
# for its ed25519 keys) for tests/channel.rs: it reads slate's channel
# repositories and writes one slate reads.
step "tuf (PyPI) in target/tuf-venv"
if [ ! -x target/tuf-venv/bin/python ] || ! target/tuf-venv/bin/python -c 'import tuf.ngclient, cryptography' 2>/dev/null; then
    python3 -m venv target/tuf-venv
    target/tuf-venv/bin/pip install -q tuf cryptography
fi
export SLATE_TUF_PYTHON=$PWD/target/tuf-venv/bin/python

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy (release configuration, and with fault points)"
cargo clippy --all-targets --locked -- -D warnings
cargo clippy --all-targets --locked --features fault-injection -- -D warnings

# Test builds carry the agent's fault points (src/agent/fault.rs): the
# images the tests build embed this very binary as their agent.
step "cargo test (unit, integration, QEMU and fault scenarios)"
cargo test --locked --all-targets --features fault-injection --no-fail-fast

# The README's quick start, literally: build the default recipe and boot it.
step "slate build recipes/minimal.toml + slate qemu"
slate=target/debug/slate
[ -e keys/dev.pub ] || "$slate" keygen keys/dev
stale_lock=
if ! "$slate" build recipes/minimal.toml --locked 2>&1 | tee target/minimal-build.log; then
    if ! grep -q "cannot obtain" target/minimal-build.log; then
        exit 1
    fi
    # The committed lock names packages that no source has any more (the
    # archive dropped them and the snapshot service is unreachable): report it
    # as what it is. The lock's survival is tested with the local archive
    # (tests/local_archive.rs); SLATE_STRICT_LOCK=1 makes a stale lock fatal.
    stale_lock=$(grep "cannot obtain" target/minimal-build.log | head -1)
    echo "qemu-test: STALE LOCK: recipes/minimal.lock: $stale_lock" >&2
    [ -z "${SLATE_STRICT_LOCK:-}" ] || exit 1
    echo "qemu-test: booting the README image from a lock resolved today, in a copy (the committed lock is not changed)" >&2
    rm -rf target/stale-lock && mkdir -p target/stale-lock/recipes
    cp recipes/minimal.toml target/stale-lock/recipes/
    ln -sfn "$PWD/keys" target/stale-lock/keys
    "$slate" build target/stale-lock/recipes/minimal.toml --out-dir out/minimal
fi
"$slate" qemu out/minimal/disk.img --snapshot --expect healthy:A --expect committed:A --timeout 240

echo
if [ -n "$stale_lock" ]; then
    echo "qemu-test: all tests passed, but recipes/minimal.lock is STALE: $stale_lock"
else
    echo "qemu-test: all tests passed"
fi
