"""The deployment files are valid: docker-compose.yml parses and describes the documented
topology (validated with Debian's docker-compose; this machine has no Docker engine)."""
import os
import re
import sys
import tempfile
import shutil
import subprocess

import pytest
import yaml


@pytest.mark.skipif(not shutil.which("docker-compose") and not os.environ.get("CI"), reason="docker-compose not installed")
def test_docker_compose_file_is_valid_and_has_two_regions_of_two_nodes():
    secrets = {"POSTGRES_PASSWORD": "pw-for-the-check", "SIGNALBOX_ADMIN_KEY": "sk-sb-v1-compose-check-admin-000000",
               "SIGNALBOX_DEMO_KEY": "sk-sb-v1-compose-check-demo-0000000"}
    clean = {k: v for k, v in os.environ.items() if k not in secrets}
    # No default secrets: without them compose refuses, naming what is missing.
    refused = subprocess.run(["docker-compose", "-f", "docker-compose.yml", "config"], capture_output=True, text=True,
                             timeout=60, env=clean)
    assert refused.returncode != 0 and "POSTGRES_PASSWORD" in refused.stderr, refused.stderr
    assert "change-me" not in open("docker-compose.yml").read()
    out = subprocess.run(["docker-compose", "-f", "docker-compose.yml", "config"], capture_output=True, text=True, timeout=60,
                         env=dict(clean, **secrets))
    assert out.returncode == 0, out.stderr
    services = yaml.safe_load(out.stdout)["services"]
    assert {"postgres", "migrate", "simulator", "lb-eu", "lb-us"} <= set(services)
    nodes = {name: spec for name, spec in services.items() if name[:3] in ("eu-", "us-")}
    assert sorted(nodes) == ["eu-1", "eu-2", "us-1", "us-2"]
    for name, spec in nodes.items():
        command = spec["command"]
        assert command[command.index("--region") + 1] == name[:2]
        assert "--gossip-bind" in command and "--cluster-key-file" in command
        assert spec["depends_on"]["cluster-key"]["condition"] == "service_completed_successfully"
        # Each node's data directory (its settlement spool) is a named volume, so a restart keeps spooled charges.
        data_dir = command[command.index("--data-dir") + 1]
        mounts = [volume for volume in spec.get("volumes", []) if (volume.get("target") if isinstance(volume, dict) else volume.split(":")[1]) == data_dir]
        assert mounts, f"{name} keeps its spool ({data_dir}) inside the container"
    for region in ("eu", "us"):
        config = open(f"Deploy/nginx/{region}.conf").read()
        assert f"server {region}-1:8080" in config and f"server {region}-2:8080" in config


def test_the_dockerfile_builds_on_a_swift_new_enough_for_every_dependency_and_passes_hadolint():
    check = subprocess.run([sys.executable, "Deploy/check-swift-image.py"], capture_output=True, text=True, timeout=60)
    print("\n" + check.stdout.strip())
    assert check.returncode == 0, check.stdout + check.stderr
    # The check can fail: the Swift 6.1 image the Dockerfile used to name is too old.
    old = os.path.join(tempfile.mkdtemp(), "Dockerfile")
    open(old, "w").write(re.sub(r"FROM swift:[0-9.]+", "FROM swift:6.1", open("Dockerfile").read()))
    assert subprocess.run([sys.executable, "Deploy/check-swift-image.py", "--dockerfile", old], capture_output=True).returncode == 1
    lint = subprocess.run(["hadolint", "Dockerfile"], capture_output=True, text=True, timeout=60)
    assert lint.returncode == 0, lint.stdout + lint.stderr
    dockerfile = open("Dockerfile").read()
    assert re.search(r"^USER \d+", dockerfile, re.MULTILINE), "the runtime image runs as a numeric non-root user"
    assert "swift package resolve" in dockerfile


def test_the_haproxy_configuration_is_valid_and_probes_readyz():
    check = subprocess.run(["haproxy", "-c", "-f", "Deploy/haproxy/haproxy.cfg"], capture_output=True, text=True, timeout=30)
    assert check.returncode == 0, check.stdout + check.stderr
    config = open("Deploy/haproxy/haproxy.cfg").read()
    assert "option httpchk" in config and "uri /readyz" in config
    assert "/readyz" in open("Deploy/nginx/region.conf.template").read()
