#!/usr/bin/env bash
# Debian packages that carry data sets for the vision backbone and benchmarks:
# dataset-fashion-mnist -> /usr/share/datasets/fashion-mnist/*.gz (idx format, 70,000 images).
# Idempotent: installs only what is missing (needs root when something is).
set -euo pipefail
need=()
for pkg in dataset-fashion-mnist; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need+=("$pkg")
done
if ((${#need[@]})); then
  echo "installing: ${need[*]}"
  "$(dirname "$0")/apt-install.sh" "${need[@]}"
fi
