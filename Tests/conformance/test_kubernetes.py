"""The Kubernetes manifests in Deploy/kubernetes, validated offline: each region's overlay is
rendered (a small kustomize for the features the files use: resources, namespace, labels, images
and JSON 6902 patches), and every object is checked against the schema of a pinned Kubernetes
version (kubernetes-validate, strict: no unknown fields). Then what the router needs of them:
stable node ids, probes on /readyz and /healthz, a grace period longer than the drain, a headless
gossip Service, a PodDisruptionBudget, a migrate Job, and a configuration the binary accepts."""
import copy
import json
import os
import shutil
import subprocess
import tempfile

import kubernetes_validate
import pytest
import yaml

ROOT = os.path.join(os.path.dirname(__file__), "..", "..", "Deploy", "kubernetes")
KUBERNETES_VERSION = "1.32.0"
BINARY = os.environ.get("SIGNALBOX_BIN", ".build/debug/signalbox")
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "PersistentVolume", "StorageClass"}


def apply_patch(document, operations):
    for operation in operations:
        parts = [part.replace("~1", "/").replace("~0", "~") for part in operation["path"].lstrip("/").split("/")]
        parent = document
        for part in parts[:-1]:
            parent = parent[int(part)] if isinstance(parent, list) else parent[part]
        last = parts[-1]
        if operation["op"] in ("replace", "add"):
            if isinstance(parent, list):
                index = len(parent) if last == "-" else int(last)
                if operation["op"] == "add":
                    parent.insert(index, operation["value"])
                else:
                    assert index < len(parent), operation
                    parent[index] = operation["value"]
            else:
                assert operation["op"] == "add" or last in parent, operation
                parent[last] = operation["value"]
        elif operation["op"] == "remove":
            del parent[int(last) if isinstance(parent, list) else last]
        else:
            raise AssertionError(f"unsupported patch operation {operation['op']}")


def render(directory):
    """The objects `kustomize build directory` makes, for the features these files use."""
    with open(os.path.join(directory, "kustomization.yaml")) as f:
        kustomization = yaml.safe_load(f)
    known = {"apiVersion", "kind", "resources", "namespace", "labels", "images", "patches"}
    assert set(kustomization) <= known, f"{directory}: a kustomize feature this test does not render: {set(kustomization) - known}"
    objects = []
    for resource in kustomization.get("resources", []):
        path = os.path.join(directory, resource)
        if os.path.isdir(path):
            objects += render(path)
        else:
            with open(path) as f:
                objects += [doc for doc in yaml.safe_load_all(f) if doc]
    for label in kustomization.get("labels", []):
        for obj in objects:
            obj.setdefault("metadata", {}).setdefault("labels", {}).update(label["pairs"])
    if "namespace" in kustomization:
        for obj in objects:
            if obj["kind"] not in CLUSTER_SCOPED:
                obj["metadata"]["namespace"] = kustomization["namespace"]
    for image in kustomization.get("images", []):
        for obj in objects:
            spec = obj.get("spec", {}).get("template", {}).get("spec", {})
            for container in spec.get("containers", []) + spec.get("initContainers", []):
                name, _, _ = container["image"].partition(":")
                if name == image["name"]:
                    container["image"] = f"{image.get('newName', name)}:{image['newTag']}"
    for patch in kustomization.get("patches", []):
        targets = [o for o in objects if o["kind"] == patch["target"]["kind"] and o["metadata"]["name"] == patch["target"]["name"]]
        assert len(targets) == 1, patch["target"]
        apply_patch(targets[0], yaml.safe_load(patch["patch"]))
    return objects


def overlays():
    return sorted(os.listdir(os.path.join(ROOT, "overlays")))


@pytest.mark.parametrize("region", overlays())
def test_every_object_of_each_region_is_valid_for_the_pinned_kubernetes(region):
    objects = render(os.path.join(ROOT, "overlays", region))
    kinds = sorted(o["kind"] for o in objects)
    assert kinds == sorted(["ConfigMap", "Job", "Namespace", "PodDisruptionBudget", "Secret", "Secret", "Service", "Service",
                            "StatefulSet"])
    for obj in objects:
        kubernetes_validate.validate(copy.deepcopy(obj), KUBERNETES_VERSION, strict=True)
    assert all(o["metadata"].get("namespace") == f"signalbox-{region}" for o in objects if o["kind"] != "Namespace")
    # Where kubectl is at hand, its kustomize renders the same objects.
    if shutil.which("kubectl"):
        out = subprocess.run(["kubectl", "kustomize", os.path.join(ROOT, "overlays", region)], capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
        theirs = {(o["kind"], o["metadata"]["name"]): o for o in yaml.safe_load_all(out.stdout) if o}
        ours = {(o["kind"], o["metadata"]["name"]): o for o in objects}
        assert theirs.keys() == ours.keys()
        for key in ours:
            assert theirs[key].get("spec") == ours[key].get("spec"), key


@pytest.mark.parametrize("region", overlays())
def test_the_nodes_are_stable_members_that_drain_before_they_stop(region):
    objects = {(o["kind"], o["metadata"]["name"]): o for o in render(os.path.join(ROOT, "overlays", region))}
    nodes = objects[("StatefulSet", "signalbox")]
    pod = nodes["spec"]["template"]["spec"]
    container = pod["containers"][0]
    args = {a.split("=", 1)[0]: a.split("=", 1)[1] for a in container["args"][1:]}
    env = {e["name"]: e for e in container["env"]}
    # The node id is the pod's name, which a StatefulSet keeps across restarts.
    assert args["--node-id"] == "$(POD_NAME)" and env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert args["--region"] == region
    assert args["--gossip-advertise"] == "$(POD_IP):7946"
    assert all(seed.endswith(":7946") for seed in args["--seeds"].split(","))
    assert nodes["spec"]["serviceName"] == "signalbox-gossip"
    # Probes: ready on /readyz (503 while draining), alive on /healthz.
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    # Secrets come from the Secret, never the ConfigMap.
    secret = objects[("Secret", "signalbox-secrets")]
    for name in ("SIGNALBOX_DATABASE_URL", "SIGNALBOX_ADMIN_KEY"):
        assert env[name]["valueFrom"]["secretKeyRef"]["key"] in secret["stringData"]
    config = json.loads(objects[("ConfigMap", "signalbox-config")]["data"]["signalbox.json"])
    # Real providers, with their keys from a Secret (the simulator is for trying the router out).
    assert config["use_simulator"] is False
    assert [e["secretRef"]["name"] for e in container["envFrom"]] == ["signalbox-provider-keys"]
    assert ("Secret", "signalbox-provider-keys") in objects
    # A placeholder admin key is refused at start instead of working as a known key.
    assert not secret["stringData"]["admin-key"].startswith("sk-")
    # The grace period covers the preStop pause, the drain delay, the drain timeout and settling.
    pre_stop = int(container["lifecycle"]["preStop"]["exec"]["command"][1])
    drain = config["drain"]["delay_seconds"] + config["drain"]["timeout_seconds"]
    assert pod["terminationGracePeriodSeconds"] >= pre_stop + drain + 10
    # Gossip: a headless Service that also publishes pods that are not ready yet (they must join first).
    gossip = objects[("Service", "signalbox-gossip")]
    assert gossip["spec"]["clusterIP"] == "None" and gossip["spec"]["publishNotReadyAddresses"] is True
    assert {p["protocol"] for p in gossip["spec"]["ports"]} == {"UDP", "TCP"}
    assert objects[("PodDisruptionBudget", "signalbox")]["spec"]["maxUnavailable"] == 1
    migrate = objects[("Job", "signalbox-migrate")]["spec"]["template"]["spec"]["containers"][0]
    assert migrate["args"] == ["migrate"] and migrate["image"] == container["image"]
    # Hardened: not root, no privilege escalation, a read-only root filesystem.
    assert pod["securityContext"]["runAsNonRoot"] and container["securityContext"]["readOnlyRootFilesystem"]
    # The configuration file is one the binary accepts.
    with tempfile.NamedTemporaryFile("w", suffix=".json") as f:
        json.dump(config, f)
        f.flush()
        out = subprocess.run([BINARY, "config", "check", f.name], capture_output=True, text=True, timeout=30)
        assert out.returncode == 0, out.stdout + out.stderr
