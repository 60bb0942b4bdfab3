#!/usr/bin/env bash
# Debian packages the audio tests and benchmark speak and listen with: espeak-ng and flite
# synthesize spoken words (the synthetic voices a few-shot audio adapter is trained on), and
# asterisk-core-sounds-en-wav holds real human recordings of digits (what the benchmark tests
# on). Idempotent: installs only what is missing.
set -euo pipefail
need=()
for pkg in espeak-ng flite asterisk-core-sounds-en-wav; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need+=("$pkg")
done
if ((${#need[@]})); then
  echo "installing: ${need[*]}"
  "$(dirname "$0")/apt-install.sh" "${need[@]}"
fi
