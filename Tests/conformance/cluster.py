"""Real processes for multi-node tests: private PostgreSQL servers, fresh databases, a shared
simulator and router nodes pointed at one ledger."""
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
import uuid

from conftest import free_port

BINARY = os.environ.get("SIGNALBOX_BIN", ".build/debug/signalbox")


def _as_postgres(command):
    """Runs a shell command as the postgres user when we are root (PostgreSQL refuses root)."""
    if os.geteuid() == 0:
        return subprocess.run(["su", "postgres", "-s", "/bin/sh", "-c", command], check=True, capture_output=True, text=True)
    return subprocess.run(["/bin/sh", "-c", command], check=True, capture_output=True, text=True)


class PrivatePostgres:
    """A PostgreSQL server of the test's own, so the test can stop and restart it."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="signalbox-pg-")
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres")
        self.port = free_port()
        _as_postgres(f"initdb -D '{self.dir}/data' -U postgres --auth=trust >/dev/null")
        self.start()
        self.url = f"postgres://postgres@127.0.0.1:{self.port}/postgres"

    def start(self):
        _as_postgres(f"pg_ctl -D '{self.dir}/data' -l '{self.dir}/log' -w -o "
                     f"\"-p {self.port} -k '{self.dir}' -c listen_addresses=127.0.0.1\" start >/dev/null")

    def stop(self):
        _as_postgres(f"pg_ctl -D '{self.dir}/data' -m fast -w stop >/dev/null")

    def close(self):
        try:
            self.stop()
        except subprocess.CalledProcessError:
            pass
        shutil.rmtree(self.dir, ignore_errors=True)


def fresh_database(server_url):
    """A new, empty database on the server; returns its URL."""
    name = "signalbox_cluster_" + uuid.uuid4().hex[:12]
    subprocess.run(["psql", server_url, "-q", "-c", f"CREATE DATABASE {name}"], check=True)
    return server_url.rsplit("/", 1)[0] + "/" + name


def psql(url, sql):
    out = subprocess.run(["psql", url, "-At", "-c", sql], check=True, capture_output=True, text=True)
    return out.stdout.strip()


def cli(*args, database_url):
    out = subprocess.run([BINARY, *args, "--database-url", database_url, "--json"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


class Process:
    def __init__(self, args, log_path, env=None):
        self.log_path = log_path
        self.log = open(log_path, "a")
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT, env=dict(os.environ, **(env or {})))

    def output(self):
        self.log.flush()
        return open(self.log_path).read()

    def stop(self, sig=signal.SIGTERM, timeout=20):
        # A wrapper (faketime, taskset) may have started the node as its child: signal the children too.
        subprocess.run(["pkill", f"-{int(sig)}", "-P", str(self.proc.pid)], capture_output=True)
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def wait_until(check, timeout, what):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if check():
                return
        except Exception:
            pass
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def start_simulator(workdir, first_token_ms=20, inter_token_ms=2):
    port = free_port()
    sim = Process([BINARY, "sim-provider", "--port", str(port), "--first-token-ms", str(first_token_ms),
                   "--inter-token-ms", str(inter_token_ms)], os.path.join(workdir, "sim.log"))
    sim.url = f"http://127.0.0.1:{port}"
    wait_until(lambda: urllib.request.urlopen(sim.url + "/_sim/stats", timeout=1).status == 200, 30, "the simulator")
    return sim


ADMIN_KEY = "sk-sb-v1-cluster-admin-0000000000000000000000000000000000000000000000000000000"


class RouterNode(Process):
    """A router node on a shared PostgreSQL ledger and a shared simulator. `wrapper` runs it
    under another program (faketime); `start()` starts it again after a stop, same port and data."""

    def __init__(self, name, database_url, sim_url, workdir, extra=(), wrapper=(), env=None, wait=True):
        self.name = name
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.api = self.base + "/api/v1"
        self.data_dir = os.path.join(workdir, name)
        os.makedirs(self.data_dir, exist_ok=True)
        self.args = [*wrapper, BINARY, "serve", "--node-id", name, "--port", str(self.port), "--database-url", database_url,
                     "--sim-url", sim_url, "--data-dir", self.data_dir, "--demo-credits", "0",
                     "--load-balancing", "catalog-order", "--drain-delay", "0", *extra]
        self.log_file, self.env = os.path.join(workdir, name + ".log"), dict({"SIGNALBOX_ADMIN_KEY": ADMIN_KEY}, **(env or {}))
        self.start(wait=wait)

    def start(self, wait=True):
        Process.__init__(self, self.args, self.log_file, env=self.env)
        if wait:
            wait_until(lambda: self.ready() is not None, 60, f"node {self.name}")

    def ready(self):
        try:
            with urllib.request.urlopen(self.base + "/readyz", timeout=2) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError:
            return None

    def call(self, method, path, key, body=None, timeout=30):
        """(status, JSON body) for an API call; errors are returned, not raised."""
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.api + path, data=data, method=method,
                                         headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read() or b"{}")


def keygen(path):
    subprocess.run([BINARY, "cluster", "keygen", "--out", path], check=True, capture_output=True)
    return path


class GossipNode(Process):
    """A router node in cluster mode with its own in-process simulator, so a provider can fail
    behind one node only. `ip` puts its gossip (UDP and TCP) on an address of its own in
    127.0.0.0/8, so firewall rules can tell nodes apart; its HTTP API stays on 127.0.0.1."""

    def __init__(self, name, workdir, key_file, seeds, gossip_port=None, region="eu", extra=(), ip="127.0.0.1", wrapper=(),
                 env=None):
        self.name, self.workdir, self.key_file, self.seeds, self.region = name, workdir, key_file, seeds, region
        self.ip, self.wrapper, self.env = ip, list(wrapper), dict(env or {})
        self.port, self.sim_port = free_port(), free_port()
        self.gossip_port = gossip_port or free_port()
        # HTTPS when the node is given a certificate: clients trust the test CA (`--peer-ca-file`).
        self.context = None
        if "--tls-cert" in extra:
            import ssl
            self.context = ssl.create_default_context(cafile=extra[list(extra).index("--peer-ca-file") + 1])
        self.base = f"{'https' if self.context else 'http'}://127.0.0.1:{self.port}"
        self.data_dir = os.path.join(workdir, name)
        os.makedirs(self.data_dir, exist_ok=True)
        self.extra = extra
        self.start()

    def start(self):
        super().__init__([*self.wrapper, BINARY, "serve", "--node-id", self.name, "--region", self.region, "--port", str(self.port),
                          "--sim-port", str(self.sim_port), "--data-dir", self.data_dir, "--load-balancing", "catalog-order",
                          "--gossip-bind", f"{self.ip}:{self.gossip_port}", "--seeds", self.seeds,
                          "--cluster-key-file", self.key_file, "--drain-delay", "0", "--demo-credits", "10", *self.extra],
                         os.path.join(self.workdir, self.name + ".log"), env=dict({"SIGNALBOX_ADMIN_KEY": ADMIN_KEY}, **self.env))
        self.started_at = time.time()

    @property
    def gossip(self):
        return f"{self.ip}:{self.gossip_port}"

    @property
    def pid(self):
        return self.proc.pid

    def get(self, path, key=ADMIN_KEY, timeout=5):
        request = urllib.request.Request(self.base + "/api/v1" + path, headers={"Authorization": f"Bearer {key}"})
        with urllib.request.urlopen(request, timeout=timeout, context=self.context) as response:
            return json.loads(response.read())

    def put(self, path, body):
        request = urllib.request.Request(self.base + "/api/v1" + path, data=json.dumps(body).encode(), method="PUT",
                                         headers={"Authorization": f"Bearer {ADMIN_KEY}", "Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=5, context=self.context) as response:
            return json.loads(response.read())

    def members(self):
        return {m["id"]: m for m in self.get("/admin/cluster/members")["data"]}

    def states(self):
        """Member id → state, as this node sees them."""
        return {m["id"]: m["state"] for m in self.get("/admin/cluster/members")["data"]}

    def ready(self):
        try:
            with urllib.request.urlopen(self.base + "/readyz", timeout=2, context=self.context) as response:
                return response.status == 200
        except Exception:
            return False

    def readyz(self):
        """(status code, body) of /readyz."""
        try:
            with urllib.request.urlopen(self.base + "/readyz", timeout=2, context=self.context) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read() or b"{}")

    def demo_key(self):
        return open(os.path.join(self.data_dir, "demo-key")).read().strip()

    def chat(self, extra=None, timeout=30):
        body = dict({"model": "openai/gpt-4o-mini", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}, **(extra or {}))
        request = urllib.request.Request(self.base + "/api/v1/chat/completions", data=json.dumps(body).encode(),
                                         headers={"Authorization": f"Bearer {self.demo_key()}", "Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=timeout, context=self.context) as response:
            return json.loads(response.read())

    def fault(self, **fault):
        request = urllib.request.Request(f"http://127.0.0.1:{self.sim_port}/_sim/faults", data=json.dumps(fault).encode(),
                                         headers={"Content-Type": "application/json"})
        urllib.request.urlopen(request, timeout=5).read()

    def metrics(self):
        """Prometheus samples as {'name{labels}': value}."""
        text = urllib.request.urlopen(self.base + "/metrics", timeout=5, context=self.context).read().decode()
        samples = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                samples[name] = float(value)
        return samples

    def metric(self, name, default=0.0):
        return self.metrics().get(name, default)
