#!/usr/bin/env bash
# Debian's Prometheus server and promtool, for the monitoring tests (tests/promserver.py starts a
# real Prometheus that scrapes a real `bentoml serve`; promtool checks the alert rules).
# Idempotent: installs only what is missing. Needs root (apt); no service is started (the
# package's postinst finds no init system in a container; the tests start their own).
set -euo pipefail
if command -v prometheus >/dev/null && command -v promtool >/dev/null; then
  exit 0
fi
echo "installing: prometheus (Debian; brings promtool)"
"$(dirname "$0")/apt-install.sh" prometheus
