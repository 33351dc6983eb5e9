#!/bin/bash
# Power-cut torture: N random power cuts in a row on one disk (default 50),
# each in a seeded point of a 16 s window after `installing` (the install,
# the reboot, the trial boot), each followed by a restart that must finish
# the update and by the full device check. Prints each kill point and the
# phase it hit, then the count by phase.
set -euo pipefail
cd "$(dirname "$0")/.."
export LC_ALL=C TZ=UTC SLATE_POWER_CUTS="${1:-50}" SLATE_POWER_CUT_ONE_DISK=1
exec cargo test --locked --features fault-injection --test soak \
    power_cuts_in_a_row_on_one_disk -- --nocapture
