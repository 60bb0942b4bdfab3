#!/usr/bin/env bash
# Debian packages the container smoke test needs: podman/buildah (no Docker engine here),
# runc (the runtime that works in these sandboxes), debootstrap (stand-in base image),
# and friends. Idempotent: installs only what is missing.
set -euo pipefail
need=()
for pkg in podman buildah runc debootstrap uidmap fuse-overlayfs ca-certificates curl; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need+=("$pkg")
done
if ((${#need[@]})); then
  echo "installing: ${need[*]}"
  "$(dirname "$0")/apt-install.sh" "${need[@]}"
fi
