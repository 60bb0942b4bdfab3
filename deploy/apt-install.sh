#!/usr/bin/env bash
# `apt-get update` + `apt-get install` of the named Debian packages, one caller at a time.
# The suite's installers (install-chromium.sh, install-prometheus.sh, install-tools.sh for the
# container smoke test, install-datasets.sh) can run at once: the smoke test installs podman in
# the background while the console tests install Chromium, and `make test` runs its workers
# in parallel. apt-get refuses a second caller ("Could not get lock") instead of waiting, so
# every installer goes through this script: a file lock queues them, and apt's own lock
# timeout covers anything else on the machine that runs apt.
# Usage: deploy/apt-install.sh PACKAGE... (root, or sudo when not root).
set -euo pipefail
if [ $# -eq 0 ]; then
  echo "usage: $0 PACKAGE..." >&2
  exit 2
fi
SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
exec 9>"${TMPDIR:-/tmp}/tailor-apt-install.lock"
flock -w 1800 9
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get -o DPkg::Lock::Timeout=600 update -qq
$SUDO apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "$@"
