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
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}"
fi
