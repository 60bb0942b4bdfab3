#!/usr/bin/env bash
# Debian's Chromium, for the console's browser tests (tests/e2e/test_console_e2e.py drives it with
# Playwright from PyPI at /usr/bin/chromium; `playwright install` is never run: no browser is
# downloaded). Idempotent: installs only what is missing. Needs root (apt).
set -euo pipefail
if [ -x /usr/bin/chromium ]; then
  exit 0
fi
echo "installing: chromium (Debian)"
"$(dirname "$0")/apt-install.sh" chromium
