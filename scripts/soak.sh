#!/bin/bash
# Soak: N update/rollback cycles in a row on one disk (default 100),
# alternating a good bundle (committed) and an unhealthy one (rolled back),
# with the full device check after each cycle: phase, floor, slot records,
# failed list and boot counter on /data, the running slot's bytes, the ESP.
set -euo pipefail
cd "$(dirname "$0")/.."
export LC_ALL=C TZ=UTC SLATE_SOAK_CYCLES="${1:-100}"
exec cargo test --locked --features fault-injection --test soak \
    update_and_rollback_cycles_on_one_disk -- --nocapture
