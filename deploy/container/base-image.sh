#!/usr/bin/env bash
# Make a stand-in for the `python:3.11-slim` base image that `bentoml containerize` builds
# FROM, for machines that reach no image registry: a minimal Debian bookworm made with
# debootstrap, with Python 3.11, pip and uv, carrying this host's CA certificates so that
# pip/uv can reach the package index from inside the image build.
#
# A user with a registry never needs this: the normal base is pulled.
#   usage: deploy/container/base-image.sh [image-name]   (default docker.io/library/python:3.11-slim)
set -euo pipefail
IMAGE=${1:-docker.io/library/python:3.11-slim}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
HERE=$(cd "$(dirname "$0")" && pwd)
export CONTAINERS_CONF=${CONTAINERS_CONF:-$HERE/containers.conf}

if podman image exists "$IMAGE"; then
  if [ "$(podman image inspect -f '{{index .Labels "org.tailor.stand-in"}}' "$IMAGE")" = "1" ]; then
    echo "base image $IMAGE (stand-in) already present"
  else
    echo "base image $IMAGE (the real one) present: no stand-in needed"
  fi
  exit 0
fi

work=$(mktemp -d /var/tmp/tailor-base.XXXXXX)
trap 'rm -rf "$work"' EXIT
root="$work/rootfs"
echo "debootstrap bookworm into $root ..."
debootstrap --variant=minbase --include=python3.11,python3-pip,ca-certificates \
  bookworm "$root" "$MIRROR" >"$work/debootstrap.log" 2>&1 || { tail -30 "$work/debootstrap.log"; exit 1; }

# This host's CA bundle: pip/uv inside the build must trust what the host trusts.
cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"
# The image is a container base, not a managed system: pip may install (as python:3.11-slim).
rm -f "$root"/usr/lib/python3*/EXTERNALLY-MANAGED
ln -sf python3.11 "$root/usr/bin/python"
chroot "$root" apt-get clean
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/usr/share/doc/* "$root"/usr/share/man/*

tar -C "$root" -c . | podman import \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt' \
  --change 'ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt' \
  --change 'ENV UV_NATIVE_TLS=1' \
  --change 'LABEL org.tailor.stand-in=1' \
  --change 'CMD ["python3"]' \
  - "$IMAGE" >/dev/null
echo "built stand-in base $IMAGE: $(podman image inspect -f '{{.Size}}' "$IMAGE") bytes"
