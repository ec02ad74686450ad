"""What an operator meets first (issue 16): the drain balancers see on SIGTERM, database
connection failures that say why, secrets that stay secret, configuration that says no, and
limits on what an unauthenticated client can hold. Real processes, a real PostgreSQL."""
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request

import pytest

from cluster import BINARY, Process, wait_until
from conftest import free_port

DEMO_KEY = "sk-sb-v1-operations-demo-00000000000000000000000000000000000000000000000000000"
ADMIN_KEY = "sk-sb-v1-operations-admin-0000000000000000000000000000000000000000000000000000"


class EmbeddedNode(Process):
    """A node of the embedded default (SQLite, in-process simulator) in a directory of its own."""

    def __init__(self, extra=(), env=None, wait=True):
        self.workdir = tempfile.mkdtemp(prefix="signalbox-ops-")
        self.data_dir = os.path.join(self.workdir, "data")
        self.port, self.sim_port = free_port(), free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.sim = f"http://127.0.0.1:{self.sim_port}"
        environment = {"SIGNALBOX_DEMO_KEY": DEMO_KEY, "SIGNALBOX_ADMIN_KEY": ADMIN_KEY, **(env or {})}
        super().__init__([BINARY, "serve", "--port", str(self.port), "--sim-port", str(self.sim_port),
                          "--data-dir", self.data_dir, "--load-balancing", "catalog-order", *extra],
                         os.path.join(self.workdir, "node.log"), env=environment)
        if wait:
            wait_until(lambda: self.readyz()[0] == 200, 60, "the node to be ready")

    def readyz(self):
        """(status, None) of /readyz; (None, error) when the connection fails."""
        try:
            with urllib.request.urlopen(self.base + "/readyz", timeout=2) as response:
                return response.status, None
        except urllib.error.HTTPError as error:
            return error.code, None
        except (urllib.error.URLError, ConnectionError, socket.timeout) as error:
            return None, error

    def fault(self, **fault):
        request = urllib.request.Request(self.sim + "/_sim/faults", data=json.dumps(fault).encode(), method="POST",
                                         headers={"Content-Type": "application/json"})
        urllib.request.urlopen(request, timeout=5).read()

    def stream(self, result, timeout=60):
        body = json.dumps({"model": "openai/gpt-4o-mini", "stream": True,
                           "messages": [{"role": "user", "content": "hi"}]}).encode()
        request = urllib.request.Request(self.base + "/api/v1/chat/completions", data=body, headers={
            "Authorization": f"Bearer {DEMO_KEY}", "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                result["body"] = response.read().decode()
        except Exception as error:  # noqa: BLE001 - the test asserts on what it got
            result["error"] = error

    def close(self):
        self.stop(signal.SIGKILL)
        shutil.rmtree(self.workdir, ignore_errors=True)


class ReadyzPoller(threading.Thread):
    """Polls /readyz every 50 ms and records (time, status or 'refused')."""

    def __init__(self, node):
        super().__init__(daemon=True)
        self.node, self.seen, self.halt = node, [], threading.Event()

    def run(self):
        while not self.halt.is_set():
            status, _ = self.node.readyz()
            self.seen.append((time.time(), status or "refused"))
            time.sleep(0.05)

    def finish(self):
        self.halt.set()
        self.join()


def test_sigterm_keeps_accepting_with_readyz_503_for_the_drain_delay_while_a_stream_finishes():
    node = EmbeddedNode(extra=["--drain-delay", "3", "--drain-timeout", "20"])
    try:
        node.fault(provider="openai", kind="slow", delay_ms=5_000, count=1)
        result = {}
        streamer = threading.Thread(target=node.stream, args=(result,))
        streamer.start()
        time.sleep(0.5)
        poller = ReadyzPoller(node)
        poller.start()
        time.sleep(0.3)
        terminated_at = time.time()
        node.proc.send_signal(signal.SIGTERM)
        code = node.proc.wait(30)
        exited_after = time.time() - terminated_at
        streamer.join(10)
        poller.finish()
        after = [(t - terminated_at, status) for t, status in poller.seen if t >= terminated_at + 0.1]
        during_delay = [status for t, status in after if t < 2.7]
        after_delay = [status for t, status in after if t > 3.5]
        print(f"\nSIGTERM, 3 s drain delay, a 5 s stream in flight: exit {code} after {exited_after:.1f} s; "
              f"/readyz during the delay {sorted(set(during_delay))} ({len(during_delay)} polls), after it "
              f"{sorted(set(map(str, after_delay)))}")
        assert during_delay and set(during_delay) == {503}, during_delay
        assert after_delay and set(after_delay) == {"refused"}
        assert "[DONE]" in result.get("body", ""), result
        assert code == 0
        assert 4.0 <= exited_after < 10, exited_after
    finally:
        node.close()


def test_sigterm_with_nothing_in_flight_exits_zero_after_the_delay_and_a_stream_past_the_drain_timeout_is_cut():
    idle = EmbeddedNode(extra=["--drain-delay", "2"])
    try:
        started = time.time()
        idle.proc.send_signal(signal.SIGTERM)
        assert idle.proc.wait(20) == 0
        idle_exit = time.time() - started
    finally:
        idle.close()
    assert 2.0 <= idle_exit < 5, idle_exit

    busy = EmbeddedNode(extra=["--drain-delay", "1", "--drain-timeout", "2"])
    try:
        busy.fault(provider="openai", kind="slow", delay_ms=30_000, count=1)
        result = {}
        streamer = threading.Thread(target=busy.stream, args=(result,))
        streamer.start()
        time.sleep(0.5)
        started = time.time()
        busy.proc.send_signal(signal.SIGTERM)
        code = busy.proc.wait(30)
        busy_exit = time.time() - started
        streamer.join(10)
        print(f"\nidle node: exit 0 after {idle_exit:.1f} s (2 s delay); a 30 s stream against a 1 s delay and 2 s "
              f"drain timeout: exit {code} after {busy_exit:.1f} s, client got {result.get('error') or 'a body'}")
        assert code == 0
        assert 3.0 <= busy_exit < 8, busy_exit
        assert "[DONE]" not in result.get("body", "")
        # The cut request charged nothing and its reservation went back with the node's lease.
        balance = json.loads(subprocess.run([BINARY, "ledger", "balance", "--account", "demo", "--data-dir", busy.data_dir,
                                             "--json"], check=True, capture_output=True, text=True).stdout)
        verify = subprocess.run([BINARY, "ledger", "verify", "--data-dir", busy.data_dir], capture_output=True, text=True)
        print(f"after the cut: demo balance {balance}; ledger verify exit {verify.returncode}")
        assert verify.returncode == 0, verify.stdout + verify.stderr
        assert balance == {"balance": "10", "available": "10"}, balance
    finally:
        busy.close()


def chat_through(base, key=DEMO_KEY, timeout=10):
    body = json.dumps({"model": "openai/gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}).encode()
    request = urllib.request.Request(base + "/api/v1/chat/completions", data=body, headers={
        "Authorization": f"Bearer {key}", "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return response.status


def test_haproxy_from_deploy_takes_a_draining_node_out_on_readyz_before_its_listener_closes():
    """Deploy/haproxy/haproxy.cfg as shipped (its server and bind lines pointed at two local
    nodes): a SIGTERM to one node under steady traffic fails no request."""
    if not shutil.which("haproxy"):
        pytest.fail("haproxy is not installed (.ci/run installs it)")
    nodes = [EmbeddedNode(extra=["--drain-delay", "5"]), EmbeddedNode()]
    workdir = tempfile.mkdtemp(prefix="signalbox-haproxy-")
    port = free_port()
    shipped = open("Deploy/haproxy/haproxy.cfg").read()
    lines = [line for line in shipped.splitlines() if not line.strip().startswith(("server ", "bind "))]
    stats = os.path.join(workdir, "stats.sock")
    config = "\n".join(lines).replace("frontend api", f"frontend api\n  bind 127.0.0.1:{port}")
    config = config.replace("global\n", f"global\n  stats socket {stats} level admin\n", 1)
    config += "".join(f"\n  server n{i} 127.0.0.1:{node.port} check" for i, node in enumerate(nodes)) + "\n"
    path = os.path.join(workdir, "haproxy.cfg")
    open(path, "w").write(config)
    assert subprocess.run(["haproxy", "-c", "-f", path], capture_output=True).returncode == 0
    balancer = subprocess.Popen(["haproxy", "-f", path], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        base = f"http://127.0.0.1:{port}"
        wait_until(lambda: chat_through(base) == 200, 20, "haproxy to pass requests")
        time.sleep(2.5)  # both nodes checked up (rise 2, inter 1 s)
        outcomes, halt = [], threading.Event()

        def traffic():
            while not halt.is_set():
                try:
                    outcomes.append(chat_through(base))
                except urllib.error.HTTPError as error:
                    outcomes.append(error.code)
                except Exception as error:  # noqa: BLE001
                    outcomes.append(repr(error))
                time.sleep(0.02)

        def server_state():
            """(status, check_status) of n0 from HAProxy's stats socket."""
            with socket.socket(socket.AF_UNIX) as control:
                control.connect(stats)
                control.sendall(b"show stat\n")
                text = b"".join(iter(lambda: control.recv(65536), b"")).decode()
            header = text.splitlines()[0].lstrip("# ").split(",")
            for line in text.splitlines()[1:]:
                row = dict(zip(header, line.split(",")))
                if row.get("svname") == "n0":
                    return row["status"], row["check_status"]

        states = []

        def watch():
            while not halt.is_set():
                states.append((time.time(), *server_state()))
                time.sleep(0.1)

        threads = [threading.Thread(target=traffic) for _ in range(4)] + [threading.Thread(target=watch)]
        for thread in threads:
            thread.start()
        time.sleep(1)
        before = len(outcomes)
        terminated_at = time.time()
        nodes[0].proc.send_signal(signal.SIGTERM)
        assert nodes[0].proc.wait(30) == 0
        exited_at = time.time()
        time.sleep(2)
        halt.set()
        for thread in threads:
            thread.join()
        failed = [outcome for outcome in outcomes if outcome != 200]
        down = next(((t, check) for t, status, check in states if status.startswith("DOWN")), None)
        print(f"\nHAProxy (Deploy/haproxy/haproxy.cfg) over two nodes, one SIGTERMed with a 5 s drain delay: "
              f"{len(outcomes)} requests ({len(outcomes) - before} after the signal), {len(failed)} failed; HAProxy "
              f"marked it down {down[0] - terminated_at:.1f} s after the signal ({down[1]}), it exited after "
              f"{exited_at - terminated_at:.1f} s" if down else f"\nnever marked down: {states[-3:]}")
        assert len(outcomes) - before > 50
        assert not failed, failed[:5]
        # Taken out by its /readyz answering 503 (a layer-7 status), not by a refused connection.
        assert down and down[1] == "L7STS" and down[0] < exited_at - 1, down
    finally:
        balancer.terminate()
        balancer.wait(10)
        for node in nodes:
            node.close()
        shutil.rmtree(workdir, ignore_errors=True)
