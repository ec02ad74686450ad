"""The systemd unit in Deploy/systemd: `systemd-analyze verify` finds nothing to say about it, its
sandbox scores as well exposed as a network service can, the flags it passes exist, and its
ExecReload (SIGHUP) makes a running node re-read its cluster key file at once."""
import json
import os
import re
import shlex
import signal
import subprocess
import tempfile
import time
import urllib.request

from conftest import ADMIN_KEY, free_port, wait_until_ready

BINARY = os.path.abspath(os.environ.get("SIGNALBOX_BIN", ".build/debug/signalbox"))
UNIT = os.path.join(os.path.dirname(__file__), "..", "..", "Deploy", "systemd", "signalbox.service")


def unit_for_this_machine(directory):
    """The unit with ExecStart pointing at the binary built here (verify checks the path exists)."""
    text = open(UNIT).read().replace("/usr/local/bin/signalbox", BINARY)
    path = os.path.join(directory, "signalbox.service")
    with open(path, "w") as f:
        f.write(text)
    return path


def test_the_unit_verifies_cleanly_and_is_sandboxed():
    with tempfile.TemporaryDirectory() as directory:
        path = unit_for_this_machine(directory)
        out = subprocess.run(["systemd-analyze", "verify", path], capture_output=True, text=True, timeout=60)
        # verify exits 0 on unknown keys too, saying so on stderr: anything it says about the unit fails.
        said = [line for line in (out.stdout + out.stderr).splitlines() if "signalbox.service" in line]
        assert out.returncode == 0 and said == [], out.stdout + out.stderr
        security = subprocess.run(["systemd-analyze", "security", "--offline=yes", path], capture_output=True, text=True, timeout=60)
        exposure = float(re.search(r"Overall exposure level for signalbox.service: ([0-9.]+)", security.stdout + security.stderr).group(1))
        print(f"systemd-analyze security: exposure {exposure} (0 best, 10 worst)")
        assert exposure <= 2.0, security.stdout
    text = open(UNIT).read()
    for setting in ("User=signalbox", "ProtectSystem=strict", "StateDirectory=signalbox", "NoNewPrivileges=yes",
                    "Restart=on-failure", "ExecReload=/bin/kill -HUP $MAINPID"):
        assert setting in text, setting
    # Every flag ExecStart passes is one `serve` knows.
    command = shlex.split(re.search(r"^ExecStart=(.*)$", text, re.M).group(1))
    usage = subprocess.run([BINARY, "serve", "--help"], capture_output=True, text=True).stdout
    for flag in (word for word in command if word.startswith("--")):
        assert flag in usage, flag


def test_the_units_own_command_starts_a_node_that_joins_and_serves():
    """ExecStart as shipped, with only the paths, the host name and the example files' values
    filled in: a node that starts, joins (its own gossip address as seed) and is ready."""
    workdir = tempfile.mkdtemp(prefix="signalbox-unit-")
    text = open(UNIT).read()
    command = re.search(r"^ExecStart=(.*)$", text, re.M).group(1)
    examples = os.path.dirname(UNIT)
    config = json.load(open(os.path.join(examples, "signalbox.json.example")))
    port, gossip = free_port(), free_port()
    config["server"].update(host="127.0.0.1", port=port)
    config["use_simulator"] = True  # no provider to call here
    config["drain"]["delay_seconds"] = 0
    config_path = os.path.join(workdir, "signalbox.json")
    json.dump(config, open(config_path, "w"))
    key_file = os.path.join(workdir, "cluster.key")
    subprocess.run([BINARY, "cluster", "keygen", "--out", key_file], check=True, capture_output=True)
    node_env = dict(line.split("=", 1) for line in open(os.path.join(examples, "node.env.example")).read().splitlines()
                    if line and not line.startswith("#"))
    node_env.update(GOSSIP_BIND=f"127.0.0.1:{gossip}", GOSSIP_ADVERTISE=f"127.0.0.1:{gossip}", SEEDS=f"127.0.0.1:{gossip}")
    secrets = open(os.path.join(examples, "signalbox.env.example")).read()
    assert "SIGNALBOX_ADMIN_KEY=REPLACE" in secrets  # a placeholder that the node refuses, checked below
    for name, value in node_env.items():
        command = command.replace("${" + name + "}", value)
    command = (command.replace("/usr/local/bin/signalbox", BINARY).replace("/etc/signalbox/signalbox.json", config_path)
               .replace("%S/signalbox", os.path.join(workdir, "state")).replace("%H", "unit-host")
               .replace("/etc/signalbox/cluster.key", key_file))
    assert "${" not in command and "%" not in command, command
    args = shlex.split(command) + ["--sim-port", str(free_port())]
    refused = subprocess.run(args, capture_output=True, text=True, timeout=60,
                             env=dict(os.environ, SIGNALBOX_ADMIN_KEY="REPLACE-WITH-THE-OPERATOR-ADMIN-KEY"))
    assert refused.returncode != 0 and "SIGNALBOX_ADMIN_KEY" in refused.stdout + refused.stderr
    log = os.path.join(workdir, "node.log")
    node = subprocess.Popen(args, stdout=open(log, "w"), stderr=subprocess.STDOUT, env=dict(os.environ, SIGNALBOX_ADMIN_KEY=ADMIN_KEY))
    try:
        wait_until_ready(f"http://127.0.0.1:{port}", node, log)
        lines = [json.loads(line) for line in open(log).read().splitlines()]  # --log-format json: every line parses
        assert any(line["message"] == "serving" for line in lines)
    finally:
        node.terminate()
        node.wait(timeout=20)


def test_sighup_rereads_the_cluster_key_file_at_once():
    workdir = tempfile.mkdtemp(prefix="signalbox-sighup-")
    old, new = os.path.join(workdir, "old.key"), os.path.join(workdir, "new.key")
    for path in (old, new):
        subprocess.run([BINARY, "cluster", "keygen", "--out", path], check=True, capture_output=True)
    key_file = os.path.join(workdir, "cluster.key")
    with open(key_file, "w") as f:
        f.write(open(old).read())
    port = free_port()
    log = open(os.path.join(workdir, "node.log"), "w")
    node = subprocess.Popen(
        [BINARY, "serve", "--port", str(port), "--sim-port", str(free_port()), "--data-dir", os.path.join(workdir, "data"),
         "--node-id", "hup-1", "--gossip-bind", f"127.0.0.1:{free_port()}", "--cluster-key-file", key_file, "--drain-delay", "0"],
        stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ, SIGNALBOX_ADMIN_KEY=ADMIN_KEY))
    try:
        def keyring():
            request = urllib.request.Request(f"http://127.0.0.1:{port}/api/v1/admin/cluster/keyring",
                                             headers={"Authorization": f"Bearer {ADMIN_KEY}"})
            with urllib.request.urlopen(request, timeout=5) as reply:
                return json.loads(reply.read())["data"]
        deadline = time.time() + 60
        while True:
            try:
                before = keyring()
                break
            except Exception:
                assert node.poll() is None and time.time() < deadline, open(log.name).read()
                time.sleep(0.1)
        # The new key first (send with it), the old one still accepted.
        with open(key_file, "w") as f:
            f.write(open(new).read().strip() + "\n" + open(old).read())
        started = time.time()
        node.send_signal(signal.SIGHUP)
        while keyring()["sends_with"] == before["sends_with"]:
            assert time.time() - started < 3, "SIGHUP did not reload the key file (the periodic re-read takes up to 10 s)"
            time.sleep(0.05)
        after = keyring()
        print(f"SIGHUP: sending with the new key after {time.time() - started:.2f} s")
        assert len(after["accepts"]) == 2 and before["sends_with"] in after["accepts"]
        assert node.poll() is None, "SIGHUP must not stop the node"
        assert "cluster key file changed" in open(log.name).read()
    finally:
        node.terminate()
        node.wait(timeout=20)
