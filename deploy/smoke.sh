#!/usr/bin/env bash
# Container smoke test: build the bento and its image, run the image the way the Kubernetes
# Deployment runs it (non-root, read-only root filesystem, writable /tmp and BentoML home,
# the store mounted at /data/store), then: wait for /readyz, create an adapter, predict,
# scrape /metrics, check the serving process is not root, SIGTERM it while creates are in
# flight and check it exits within its grace period with every acknowledged adapter intact
# in the mounted store.
#
# Needs root and podman (deploy/install-tools.sh installs it). Where no registry is reachable
# the python:3.11-slim base is replaced by a local stand-in (deploy/container/base-image.sh).
# If podman cannot run containers here the script says so and FAILS: it never passes by
# skipping.
#   usage: deploy/smoke.sh            env: IMAGE_TAG (tailor:cpu) GRACE_S (60) PYTHON (venv python)
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
IMAGE_TAG=${IMAGE_TAG:-tailor:cpu}
GRACE_S=${GRACE_S:-60}          # = terminationGracePeriodSeconds in deploy/k8s/base/deployment.yaml
READY_TIMEOUT_S=${READY_TIMEOUT_S:-240}
PY=${PYTHON:-$(command -v python3)}
BENTOML=${BENTOML:-$(dirname "$PY")/bentoml}
export CONTAINERS_CONF=${CONTAINERS_CONF:-$HERE/container/containers.conf}
T0=$(date +%s)

step() { printf '\n=== [%4ss] %s\n' "$(( $(date +%s) - T0 ))" "$*"; }
fail() { printf '\nSMOKE TEST FAILED: %s\n' "$*" >&2; exit 1; }

work=$(mktemp -d /var/tmp/tailor-smoke.XXXXXX)
ctr="tailor-smoke-$$"
cleanup() {
  podman rm -f -t 0 "$ctr" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

step "podman can run containers?"
command -v podman >/dev/null || fail "podman is not installed: run deploy/install-tools.sh (as root)"
[ "$(id -u)" = 0 ] || fail "run as root (rootful podman; rootless needs subuid maps this script does not set up)"
podman info >/dev/null 2>"$work/podman-info.err" || {
  cat "$work/podman-info.err" >&2
  fail "PODMAN CANNOT RUN ON THIS MACHINE (podman info failed): the container smoke test did not run"; }
"$HERE/container/base-image.sh" || fail "could not make the stand-in base image"
if ! out=$(podman run --rm docker.io/library/python:3.11-slim python3 -c 'print("ok")' 2>&1) || [ "$out" != ok ]; then
  printf '%s\n' "$out" >&2
  fail "PODMAN CANNOT RUN CONTAINERS ON THIS MACHINE: the container smoke test did not run"
fi

step "bentoml build (offline, isolated BENTOML_HOME)"
export BENTOML_HOME="$work/bentoml-home"
make -C "$ROOT" -s wheels BIN="$(dirname "$PY")"
tag=$(cd "$ROOT" && "$BENTOML" build --output tag | sed -n 's/^__tag__://p')
[ -n "$tag" ] || fail "bentoml build gave no tag"
echo "bento $tag"

step "bentoml containerize -> $IMAGE_TAG"
previous=$(podman image inspect -f '{{.Id}}' "$IMAGE_TAG" 2>/dev/null || true)
"$BENTOML" containerize "$tag" --backend podman --image-tag "$IMAGE_TAG" --opt network=host \
  >"$work/containerize.log" 2>&1 || { tail -40 "$work/containerize.log"; fail "image build failed"; }
podman image inspect -f 'image {{.Id}}: {{.Size}} bytes, user {{.Config.User}}' "$IMAGE_TAG"
# the image this tag named before is now untagged: drop it (3 GB each) unless still in use
if [ -n "$previous" ] && [ "$previous" != "$(podman image inspect -f '{{.Id}}' "$IMAGE_TAG")" ]; then
  podman rmi "$previous" >/dev/null 2>&1 || true
fi

step "run it like the pod spec: non-root, read-only root, store volume"
store="$work/store"; mkdir -p "$store"; chown 1034:1034 "$store"   # fsGroup 1034 in k8s
# a free port BELOW the kernel's ephemeral range: a port the kernel hands out (bind to 0) can
# be taken by one of the test suite's outgoing connections in the seconds before the
# container binds it ("Address already in use" failed CI once)
port=$("$PY" - <<'PYEOF'
import random, socket
try:
    low = int(open("/proc/sys/net/ipv4/ip_local_port_range").read().split()[0])
except OSError:
    low = 32768
for _ in range(200):
    p = random.randrange(10000, max(10001, low))
    with socket.socket() as s:
        try:
            s.bind(("0.0.0.0", p))
        except OSError:
            continue
    print(p)
    break
else:
    raise SystemExit("no free port below the ephemeral range")
PYEOF
)
podman run -d --name "$ctr" --network host \
  --read-only --tmpfs /tmp:rw,size=1g --tmpfs /var/lib/bentoml:rw,size=256m \
  --cap-drop ALL --security-opt no-new-privileges \
  -e PORT="$port" -e BENTOML_HOME=/var/lib/bentoml -e HOME=/tmp -e TMPDIR=/tmp \
  -e TAILOR_STORE_PATH=/data/store -e TAILOR_FORWARD_WORKERS=2 -e TAILOR_TORCH_THREADS=1 \
  -v "$store:/data/store" "$IMAGE_TAG" >/dev/null
url="http://127.0.0.1:$port"

step "wait for /readyz (backbone load)"
deadline=$(( $(date +%s) + READY_TIMEOUT_S ))
until [ "$(curl -s -o /dev/null -w '%{http_code}' "$url/readyz")" = 200 ]; do
  [ "$(podman inspect -f '{{.State.Running}}' "$ctr")" = true ] || { podman logs "$ctr" | tail -40; fail "container exited before ready"; }
  [ "$(date +%s)" -lt "$deadline" ] || { podman logs "$ctr" | tail -40; fail "not ready after ${READY_TIMEOUT_S}s"; }
  sleep 1
done
curl -sf "$url/livez" >/dev/null || fail "/livez"
echo "ready"

step "create an adapter, predict"
examples='[{"text":"the match ended with a late goal","label":"sport"},{"text":"the striker scored twice","label":"sport"},{"text":"the team won the cup","label":"sport"},{"text":"shares fell after the earnings report","label":"business"},{"text":"the central bank raised rates","label":"business"},{"text":"the company announced a merger","label":"business"}]'
code=$(curl -s -o "$work/created.json" -w '%{http_code}' -H 'content-type: application/json' \
  -d "{\"name\":\"smoke\",\"examples\":$examples}" "$url/v1/adapters")
[ "$code" = 201 ] || { cat "$work/created.json"; fail "create answered $code"; }
curl -sf -H 'content-type: application/json' \
  -d '{"adapter":"smoke","inputs":["a goal in the final minute","stocks dropped sharply"]}' \
  "$url/v1/predict" >"$work/pred.json" || fail "predict failed"
"$PY" - "$work/pred.json" <<'PYEOF' || fail "wrong predictions"
import json, sys
p = json.load(open(sys.argv[1]))
labels = [x["label"] for x in p["predictions"]]
print("predict:", p["adapter"], labels)
assert labels == ["sport", "business"], labels
PYEOF

step "scrape /metrics"
curl -sf "$url/metrics" >"$work/metrics.txt" || fail "/metrics"
# one grep: under pipefail, `grep ... | grep -q` fails at random when grep -q exits on its first
# match while the first grep is still writing (SIGPIPE, 141): what failed CI at stop 16
grep -qE '^bentoml_.*endpoint="/v1' "$work/metrics.txt" \
  || { head -20 "$work/metrics.txt"; fail "/metrics has no request metrics for /v1 routes"; }
echo "$(grep -c '^bentoml_' "$work/metrics.txt") bentoml_* samples"

step "the serving processes are not root"
uids=$(podman top "$ctr" huser | tail -n +2 | sort -u | tr '\n' ' ')
echo "host-side users of the container's processes: $uids"
for u in $uids; do [ "$u" != 0 ] && [ "$u" != root ] || fail "a process runs as root"; done
[ "$(podman exec "$ctr" id -u)" = 1034 ] || fail "exec user is not 1034"
podman exec "$ctr" sh -c 'touch /probe 2>/dev/null' && fail "root filesystem is writable"

step "SIGTERM while creates are in flight: exit within ${GRACE_S}s, nothing acknowledged lost"
: >"$work/acked"
( for i in $(seq 1 40); do
    code=$(curl -s -o "$work/c$i.json" -w '%{http_code}' -H 'content-type: application/json' \
      -d "{\"name\":\"smoke\",\"examples\":$examples}" "$url/v1/adapters" || true)
    [ "$code" = 201 ] && "$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["version"])' "$work/c$i.json" >>"$work/acked"
  done ) &
creator=$!
sleep 3
t_term=$(date +%s.%N)
podman kill --signal TERM "$ctr" >/dev/null
if ! timeout "$GRACE_S" podman wait "$ctr" >/dev/null; then
  fail "still running ${GRACE_S}s after SIGTERM (Kubernetes would SIGKILL it)"
fi
t_exit=$(date +%s.%N)
wait "$creator" || true
exit_code=$(podman inspect -f '{{.State.ExitCode}}' "$ctr")
printf 'exited with %s after %.1fs\n' "$exit_code" "$("$PY" -c "print($t_exit - $t_term)")"
[ "$exit_code" = 0 ] || { podman logs "$ctr" | tail -30; fail "exit code $exit_code after SIGTERM"; }

"$PY" - "$store" "$work/acked" <<'PYEOF' || fail "an acknowledged adapter is missing or damaged"
import hashlib, json, sys
from pathlib import Path
store, acked = Path(sys.argv[1]), [1] + [int(v) for v in open(sys.argv[2]).read().split()]
name_dir = store / "tenants" / "default" / "smoke"
for v in acked:
    m = json.loads((name_dir / f"v{v}" / "manifest.json").read_text())
    assert m["version"] == v
    for fname, digest in m["files"].items():
        assert hashlib.sha256((name_dir / f"v{v}" / fname).read_bytes()).hexdigest() == digest, (v, fname)
on_disk = sorted(int(p.name[1:]) for p in name_dir.glob("v*"))
print(f"{len(acked)} acknowledged versions all intact in the store; on disk: {on_disk}")
assert len(acked) >= 2, "too few creates were acknowledged before SIGTERM to test anything"
PYEOF

step "PASSED in $(( $(date +%s) - T0 ))s"
