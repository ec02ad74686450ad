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
        self.log = open(log_path, "w")
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT, env=dict(os.environ, **(env or {})))

    def output(self):
        self.log.flush()
        return open(self.log_path).read()

    def stop(self, sig=signal.SIGTERM, timeout=20):
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
    def __init__(self, name, database_url, sim_url, workdir, extra=()):
        self.name = name
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.api = self.base + "/api/v1"
        data_dir = os.path.join(workdir, name)
        os.makedirs(data_dir, exist_ok=True)
        super().__init__([BINARY, "serve", "--node-id", name, "--port", str(self.port), "--database-url", database_url,
                          "--sim-url", sim_url, "--data-dir", data_dir, "--demo-credits", "0",
                          "--load-balancing", "catalog-order", *extra], os.path.join(workdir, name + ".log"),
                         env={"SIGNALBOX_ADMIN_KEY": ADMIN_KEY})
        wait_until(lambda: self.ready() is not None, 60, f"node {name}")

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
