"""deploy/k8s/components/scale-out: Tailor with no ReadWriteMany volume, the adapter store
and the job queue configured from a Secret. Rendered on each overlay with kustomize and
validated strictly (as tests/deploy/test_k8s_manifests.py does); beyond the schema: no
PersistentVolumeClaim is left nor referenced, both pools read the Secret, and the settings
the pods end up with are ones the service accepts (a PostgreSQL queue)."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import yaml

from service.settings import Settings
from tests.deploy.test_k8s_manifests import K8S, tool, validate

COMPONENT = K8S / "components" / "scale-out"


def render(tmp_path: Path, overlay: str) -> list[dict]:
    (tmp_path / "kustomization.yaml").write_text(yaml.safe_dump({
        "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
        "resources": [os.path.relpath(K8S / "overlays" / overlay, tmp_path)],
        "components": [os.path.relpath(COMPONENT, tmp_path)]}))
    out = subprocess.run([tool("kubectl"), "kustomize", "--load-restrictor",
                          "LoadRestrictionsNone", str(tmp_path)],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    (tmp_path / "out.yaml").write_text(out.stdout)
    return [d for d in yaml.safe_load_all(out.stdout) if d]


@pytest.mark.parametrize("overlay", ["cpu", "gpu"])
def test_scale_out_drops_the_rwx_volume_and_reads_the_secret(tmp_path, overlay):
    docs = render(tmp_path, overlay)
    result = validate(tmp_path / "out.yaml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert not [d for d in docs if d["kind"] == "PersistentVolumeClaim"]
    secret = next(d for d in docs if d["kind"] == "Secret"
                  and d["metadata"]["name"] == "tailor-scale-out")["stringData"]
    assert secret["TAILOR_QUEUE_URL"].startswith("postgresql://")
    assert secret["TAILOR_STORE_URL"].startswith("s3://")
    assert {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION"} <= set(secret)
    cm = next(d for d in docs if d["kind"] == "ConfigMap"
              and d["metadata"]["name"].startswith("tailor-settings"))
    deployments = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Deployment"}
    assert set(deployments) == {"tailor", "tailor-trainer"}
    for name, dep in deployments.items():
        pod = dep["spec"]["template"]["spec"]
        assert not any("persistentVolumeClaim" in v for v in pod["volumes"]), name
        (c,) = pod["containers"]
        volumes = {v["name"]: v for v in pod["volumes"]}
        mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
        assert "emptyDir" in volumes[mounts[cm["data"]["TAILOR_STORE_PATH"]]], name
        assert {"secretRef": {"name": "tailor-scale-out"}} in c["envFrom"], name
        assert {"configMapRef": {"name": cm["metadata"]["name"]}} in c["envFrom"], name
        env = {e["name"]: e["value"] for e in c["env"] if e["name"].startswith("TAILOR_")}
        tailor = {k: v for k, v in secret.items() if k.startswith("TAILOR_")}
        settings = Settings.from_env({**cm["data"], **tailor, **env})
        assert settings.store_url == secret["TAILOR_STORE_URL"]
        assert settings.queue_url.get_secret_value() == secret["TAILOR_QUEUE_URL"]
