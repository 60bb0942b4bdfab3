"""deploy/k8s/base: the trainer pool (`tailor-trainer`: Deployment, Service, HPA) beside the
serving pool, on each overlay and with the monitoring component. Strictly validated like the
rest; beyond the schema, the wiring: the trainers share the serving pods' store, settings and
image, have their own resources and HPA, no serving Service or PDB selects them (nor theirs
the serving pods: the base's common labels must not merge the two selectors), and the
ServiceMonitor scrapes both."""
from __future__ import annotations

import os

import pytest
import yaml

from service.settings import Settings
from tests.deploy.test_k8s_manifests import K8S, tool, validate
from tests.deploy.test_monitoring_manifests import COMPONENT as MONITORING, strict_operator_check



def render(tmp_path, overlay, components):
    import subprocess

    (tmp_path / "kustomization.yaml").write_text(yaml.safe_dump({
        "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
        "resources": [os.path.relpath(K8S / "overlays" / overlay, tmp_path)],
        "components": [os.path.relpath(c, tmp_path) for c in components]}))
    out = subprocess.run([tool("kubectl"), "kustomize", "--load-restrictor",
                          "LoadRestrictionsNone", str(tmp_path)],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return [d for d in yaml.safe_load_all(out.stdout) if d]


@pytest.fixture(params=["cpu", "gpu"])
def rendered(request, tmp_path):
    docs = render(tmp_path, request.param, [MONITORING])
    return request.param, tmp_path, docs, {(d["kind"], d["metadata"]["name"]): d for d in docs}


def pod(dep):
    spec = dep["spec"]["template"]["spec"]
    (c,) = spec["containers"]
    return spec, c


def selects(selector: dict, labels: dict) -> bool:
    return selector.items() <= labels.items()


def test_strictly_valid(rendered):
    _, tmp_path, docs, _ = rendered
    core = [d for d in docs if not d["apiVersion"].startswith("monitoring.coreos.com/")]
    path = tmp_path / "core.yaml"
    path.write_text(yaml.safe_dump_all(core))
    result = validate(path)
    assert result.returncode == 0, result.stdout + result.stderr
    for d in docs:
        if d["apiVersion"].startswith("monitoring.coreos.com/"):
            strict_operator_check(d)


def test_trainers_share_store_settings_and_image_with_serving(rendered):
    overlay, _, _, k = rendered
    serve_spec, serve = pod(k[("Deployment", "tailor")])
    train_spec, train = pod(k[("Deployment", "tailor-trainer")])
    assert train["image"] == serve["image"] == f"tailor:{overlay}"
    assert train["envFrom"] == serve["envFrom"]  # the same (hashed) settings ConfigMap
    env = {e["name"]: e.get("value") for e in train["env"]}
    assert env["TAILOR_ROLE"] == "train"
    cm = next(d for (kind, name), d in k.items() if kind == "ConfigMap" and name.startswith("tailor-settings"))
    settings = {**cm["data"], **{n: v for n, v in env.items() if n.startswith("TAILOR_")}}
    assert Settings.from_env(settings).role == "train"
    serve_env = {e["name"]: e.get("value") for e in serve["env"]}
    assert Settings.from_env({**cm["data"], "TAILOR_ROLE": serve_env["TAILOR_ROLE"]}).role == "serve"

    def claim_at(spec, c, path):
        vols = {v["name"]: v for v in spec["volumes"]}
        mount = next(m for m in c["volumeMounts"] if m["mountPath"] == path)
        return vols[mount["name"]]["persistentVolumeClaim"]["claimName"]

    store = cm["data"]["TAILOR_STORE_PATH"]
    assert claim_at(train_spec, train, store) == claim_at(serve_spec, serve, store) == "tailor-store"
    assert k[("PersistentVolumeClaim", "tailor-store")]["spec"]["accessModes"] == ["ReadWriteMany"]
    for probe, path in (("startupProbe", "/readyz"), ("readinessProbe", "/readyz"), ("livenessProbe", "/livez")):
        assert train[probe]["httpGet"]["path"] == path
    assert train_spec["securityContext"]["runAsNonRoot"] and train["securityContext"]["readOnlyRootFilesystem"]
    assert "nvidia.com/gpu" not in train["resources"]["limits"]  # trainers stay on CPU nodes
    assert "nodeSelector" not in train_spec
    # their own resources: a LoRA job loads its own backbone copy and trains it
    mem = {k: int(v.rstrip("Gi")) for k, v in train["resources"]["limits"].items() if k == "memory"}
    assert mem["memory"] >= 4 and train["resources"]["requests"] != serve["resources"]["requests"]
    # SIGTERM hands the job in hand back; the grace period covers stopping the training worker
    assert train_spec["terminationGracePeriodSeconds"] >= 60


def test_serving_and_training_pods_are_selected_apart(rendered):
    _, _, _, k = rendered
    serve_labels = k[("Deployment", "tailor")]["spec"]["template"]["metadata"]["labels"]
    train_labels = k[("Deployment", "tailor-trainer")]["spec"]["template"]["metadata"]["labels"]
    assert selects(k[("Service", "tailor")]["spec"]["selector"], serve_labels)
    assert not selects(k[("Service", "tailor")]["spec"]["selector"], train_labels)
    assert selects(k[("Service", "tailor-trainer")]["spec"]["selector"], train_labels)
    assert not selects(k[("Service", "tailor-trainer")]["spec"]["selector"], serve_labels)
    assert not selects(k[("PodDisruptionBudget", "tailor")]["spec"]["selector"]["matchLabels"], train_labels)
    dep = k[("Deployment", "tailor-trainer")]
    assert selects(dep["spec"]["selector"]["matchLabels"], train_labels)
    assert not selects(dep["spec"]["selector"]["matchLabels"], serve_labels)
    hpa = k[("HorizontalPodAutoscaler", "tailor-trainer")]["spec"]
    assert hpa["scaleTargetRef"]["name"] == "tailor-trainer" and 1 <= hpa["minReplicas"] <= hpa["maxReplicas"]
    sm = k[("ServiceMonitor", "tailor")]["spec"]["selector"]["matchLabels"]
    for svc in ("tailor", "tailor-trainer"):  # Prometheus scrapes both pools
        assert selects(sm, k[("Service", svc)]["metadata"]["labels"])
