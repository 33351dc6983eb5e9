#!/bin/bash
# Power-cut torture: cut the power at N seeded points of the install window
# (default 50) and check that every restart boots a healthy, committed slot
# and the update completes. Each trial prints its kill point.
set -euo pipefail
cd "$(dirname "$0")/.."
export SLATE_POWER_CUT_TRIALS="${1:-50}"
exec cargo test --release --test qemu_scenarios power_cuts -- --nocapture
