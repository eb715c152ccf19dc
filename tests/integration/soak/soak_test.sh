#!/usr/bin/env bash
# CTest's short run of scripts/soak (label integration): 75 s of load with seed 1, the defaults.
# A longer run is `scripts/soak --minutes N` (docs/RELIABILITY.md).
set -euo pipefail
src=${IMAGEFS_SOURCE_DIR:-$(cd "$(dirname "$0")/../../.." && pwd)}
exec "$src/scripts/soak" --seconds "${IMAGEFS_SOAK_SECONDS:-75}" --seed 1
