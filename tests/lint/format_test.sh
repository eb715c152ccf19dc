#!/usr/bin/env bash
# Fails when a C++ source differs from what clang-format (with the checked-in .clang-format) makes.
set -euo pipefail
cd "${IMAGEFS_SOURCE_DIR:?}"
command -v clang-format >/dev/null || { echo "clang-format missing: run scripts/setup"; exit 1; }
mapfile -t files < <(git ls-files -co --exclude-standard '*.h' '*.cpp' 2>/dev/null || find . -path ./build -prune -o \( -name '*.h' -o -name '*.cpp' \) -print)
[ ${#files[@]} -gt 0 ] || { echo "no sources found"; exit 1; }
clang-format --dry-run -Werror "${files[@]}"
echo "clang-format: ${#files[@]} files clean"
