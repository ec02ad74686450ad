"""Starts a real Signalbox node (embedded default: SQLite ledger, in-process simulator) for the
client-conformance tests, on free loopback ports, and stops it afterwards."""
import json
import os
import random
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request

import pytest

DEMO_KEY = "sk-sb-v1-conformance-demo-0000000000000000000000000000000000000000000000000000"
ADMIN_KEY = "sk-sb-v1-conformance-admin-000000000000000000000000000000000000000000000000000"


_handed_out = set()


def free_port():
    """A port free for both TCP and UDP, below the kernel's ephemeral range (32768+), so a port
    handed to a process is not taken meanwhile by some outgoing connection."""
    while True:
        port = random.randrange(20000, 32000)
        if port in _handed_out:
            continue
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                tcp.bind(("127.0.0.1", port))
                udp.bind(("127.0.0.1", port))
        except OSError:
            continue
        _handed_out.add(port)
        return port


def wait_until_ready(base, proc, log_path, seconds=60):
    """Waits for `base`/readyz to answer 200; fails with the process's log if it exits or takes too long."""
    deadline = time.time() + seconds
    while True:
        try:
            with urllib.request.urlopen(base + "/readyz", timeout=1) as reply:
                if reply.status == 200:
                    return
        except Exception:
            pass
        if proc.poll() is not None or time.time() > deadline:
            raise RuntimeError(f"the node at {base} did not become ready:\n" + open(log_path).read())
        time.sleep(0.1)


class Node:
    def __init__(self, port, sim_port, data_dir):
        self.base = f"http://127.0.0.1:{port}"
        self.api = self.base + "/api/v1"
        self.sim = f"http://127.0.0.1:{sim_port}"
        self.data_dir = data_dir
        self.demo_key = DEMO_KEY
        self.admin_key = ADMIN_KEY

    def sim_request(self, method, path, body=None):
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.sim + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.loads(r.read() or b"null")

    def fault(self, **fault):
        self.sim_request("POST", "/_sim/faults", fault)

    def clear_faults(self):
        self.sim_request("DELETE", "/_sim/faults")

    def sim_stats(self):
        return self.sim_request("GET", "/_sim/stats")["providers"]

    def admin_post(self, path, body):
        req = urllib.request.Request(self.api + path, data=json.dumps(body).encode(), method="POST",
                                     headers={"Authorization": f"Bearer {self.admin_key}", "Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.loads(r.read())

    def funded_key(self, name, credits="1"):
        """A key on an account of its own with `credits` USD granted: for suites that would
        otherwise spend the shared demo account's small balance."""
        account = self.admin_post("/admin/accounts", {"name": name})["id"]
        self.admin_post("/admin/credits", {"account": account, "amount": credits, "kind": "grant"})
        return self.admin_post("/keys", {"name": name, "account": account})["key"]

    def post_raw(self, path, body, key=None, headers=None):
        """POSTs `body` (text sent as written, or a value sent as JSON) to the API; returns
        the status and the parsed answer, errors included."""
        data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
        request = urllib.request.Request(self.api + path, data=data, method="POST",
                                         headers={"Content-Type": "application/json",
                                                  **(headers if headers is not None
                                                     else {"Authorization": f"Bearer {key or self.demo_key}"})})
        try:
            with urllib.request.urlopen(request, timeout=30) as reply:
                return reply.status, json.loads(reply.read())
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read())

    def get(self, path, key=None):
        req = urllib.request.Request(self.api + path, headers={"Authorization": f"Bearer {key or self.demo_key}"})
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.loads(r.read())


@pytest.fixture(scope="session")
def node():
    binary = os.environ.get("SIGNALBOX_BIN", ".build/debug/signalbox")
    data_dir = tempfile.mkdtemp(prefix="signalbox-conformance-")
    port, sim_port = free_port(), free_port()
    env = dict(os.environ, SIGNALBOX_DEMO_KEY=DEMO_KEY, SIGNALBOX_ADMIN_KEY=ADMIN_KEY)
    log = open(os.path.join(data_dir, "server.log"), "w")
    proc = subprocess.Popen(
        [binary, "serve", "--port", str(port), "--sim-port", str(sim_port), "--data-dir", data_dir,
         "--demo-credits", "0.05", "--load-balancing", "catalog-order", "--first-token-timeout", "3", "--stall-timeout", "2",
         "--drain-delay", "0"],
        stdout=log, stderr=subprocess.STDOUT, env=env)
    n = Node(port, sim_port, data_dir)
    wait_until_ready(n.base, proc, log.name)
    yield n
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
    # After every suite that used this node: no key it was given or minted is in its log.
    log.close()
    text = open(log.name).read()
    for secret in (DEMO_KEY, ADMIN_KEY):
        assert secret not in text and secret[len("sk-sb-v1-"):] not in text, "a key reached the node's log"


@pytest.fixture(scope="module")
def key(node, request):
    """A key on an account of the test module's own, funded with $1: suites that spend use it
    instead of the shared demo account's small balance."""
    return node.funded_key(request.module.__name__.removeprefix("test_").replace("_", "-"))


@pytest.fixture(autouse=True)
def no_faults(node):
    node.clear_faults()
    yield
    node.clear_faults()
