"""The deployment files are valid: docker-compose.yml parses and describes the documented
topology (validated with Debian's docker-compose; this machine has no Docker engine)."""
import os
import shutil
import subprocess

import pytest
import yaml


@pytest.mark.skipif(not shutil.which("docker-compose") and not os.environ.get("CI"), reason="docker-compose not installed")
def test_docker_compose_file_is_valid_and_has_two_regions_of_two_nodes():
    out = subprocess.run(["docker-compose", "-f", "docker-compose.yml", "config"], capture_output=True, text=True, timeout=60)
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
