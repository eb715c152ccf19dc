#!/usr/bin/env bash
# Keeps the dependency rule of docs/ARCHITECTURE.md true: a module includes only the headers of
# modules it may use, and only fs/ includes libfuse.
set -euo pipefail
cd "${IMAGEFS_SOURCE_DIR:?}"

# module: the modules whose headers it may include (besides its own and common/).
declare -A allowed=(
  [common]=""
  [store]=""
  [registry]="store"
  [overlay]="store"
  [cpio]="overlay store init"
  [init]=""
  [erofs]="cpio overlay store init"
  [fs]="registry store overlay cpio erofs init"
  [cli]="fs registry store overlay cpio erofs init"
)
modules="common store registry overlay cpio erofs init fs cli"

failures=0
for m in $modules; do
  [ -d "$m" ] || continue
  while IFS= read -r line; do
    file=${line%%:*}
    inc=$(sed -E 's/.*#include "([a-z]+)\/.*/\1/' <<<"$line")
    [ "$inc" = "$m" ] || [ "$inc" = common ] && continue
    case " ${allowed[$m]} " in
      *" $inc "*) ;;
      *) echo "FAIL: $file includes $inc/ but $m/ may use only: ${allowed[$m]:-common}"; failures=$((failures + 1)) ;;
    esac
  done < <(grep -HE '^#include "[a-z]+/' -r "$m" --include='*.h' --include='*.cpp' || true)
  if [ "$m" != fs ]; then
    if grep -rlE '#include <fuse' "$m" --include='*.h' --include='*.cpp'; then
      echo "FAIL: only fs/ may include libfuse headers"; failures=$((failures + 1))
    fi
  fi
done
echo "module dependencies: $failures violation(s)"
[ "$failures" -eq 0 ]
