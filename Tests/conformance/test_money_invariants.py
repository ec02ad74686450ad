"""The bank suite: real router processes on one PostgreSQL, clients spending one small account,
upstreams that lie about usage or ignore max_tokens, a slow and a stopped database, skewed clocks,
killed nodes and damaged spools. A checker samples every customer balance every 50 ms: none may go
below zero or hold more than it has. At the end, what clients were told they paid equals the
charges and the generations' costs, nothing is charged twice, no hold is left, and `ledger verify`
finds every invariant intact.

These run in CI (which starts PostgreSQL); without a database configured they are skipped."""
import base64
import decimal
import json
import os
import random
import signal
import socket
import struct
import tempfile
import threading
import time
import urllib.error
import urllib.request

import pytest

from cluster import ADMIN_KEY, PrivatePostgres, RouterNode, cli, fresh_database, psql, start_simulator, wait_until
from conftest import free_port

pytestmark = pytest.mark.skipif(not os.environ.get("SIGNALBOX_TEST_DATABASE_URL") and not os.environ.get("CI"),
                                reason="no PostgreSQL configured for this run")


def nanos(value):
    """A decimal amount (text or Decimal) as integer nano-dollars, exactly."""
    return int(decimal.Decimal(str(value)).scaleb(9).to_integral_exact())


def request(node, body, key, idempotency=None, timeout=60):
    """(status, JSON or SSE text, headers) for a chat request; JSON numbers parse as Decimal, never float."""
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    if idempotency:
        headers["Idempotency-Key"] = idempotency
    req = urllib.request.Request(node.api + "/chat/completions", data=json.dumps(body).encode(), headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as response:
            raw = response.read().decode()
            parsed = raw if body.get("stream") else json.loads(raw, parse_float=decimal.Decimal)
            return response.status, parsed, dict(response.headers)
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}", parse_float=decimal.Decimal), dict(error.headers)


def reported_cost(status, reply):
    """What the client was told it paid: `usage.cost` of an answer or of a stream's usage chunk."""
    if status != 200:
        return 0
    if isinstance(reply, str):
        for line in reply.splitlines():
            if line.startswith("data: {") and '"usage"' in line:
                usage = json.loads(line[6:], parse_float=decimal.Decimal).get("usage")
                if usage:
                    return nanos(usage["cost"])
        return 0
    return nanos(reply["usage"]["cost"])


class Checker(threading.Thread):
    """Samples every customer balance every 50 ms; records any below zero or holding more than it has."""

    def __init__(self, database_url):
        super().__init__(daemon=True)
        self.database_url = database_url
        self.samples, self.violations, self.minimum, self.running = 0, [], None, True

    def run(self):
        while self.running:
            try:
                row = psql(self.database_url, """
                    SELECT COUNT(*) FILTER (WHERE balance < 0 OR held > balance OR held < 0),
                      COALESCE(MIN(balance) FILTER (WHERE balance <> 0 OR held <> 0), 0)
                    FROM balances WHERE account_id NOT LIKE 'platform:%' AND account_id NOT LIKE 'provider:%'""")
                bad, minimum = (int(x) for x in row.split("|"))
                self.samples += 1
                self.minimum = minimum if self.minimum is None else min(self.minimum, minimum)
                if bad:
                    self.violations.append(psql(self.database_url, """
                        SELECT account_id, balance, held FROM balances WHERE account_id NOT LIKE 'platform:%'
                          AND account_id NOT LIKE 'provider:%' AND (balance < 0 OR held > balance)"""))
            except Exception:
                pass  # the ledger may be down or slow on purpose
            time.sleep(0.05)

    def stop(self):
        self.running = False
        self.join()


class Relay:
    """A TCP relay in front of PostgreSQL: `delay` (seconds, or a (low, high) range) holds each
    chunk in each direction, so a round trip costs twice it; `cut()` drops every connection and
    refuses new ones until `restore()`."""

    def __init__(self, target_port, delay=0.0):
        self.target_port, self.delay, self.open = target_port, delay, True
        self.port = free_port()
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", self.port))
        self.listener.listen(64)
        self.connections, self.lock = [], threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if not self.open:
                client.close()
                continue
            try:
                server = socket.create_connection(("127.0.0.1", self.target_port))
            except OSError:
                client.close()
                continue
            with self.lock:
                self.connections += [client, server]
            for source, target in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(source, target), daemon=True).start()

    def _pump(self, source, target):
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    break
                delay = self.delay if not isinstance(self.delay, tuple) else random.uniform(*self.delay)
                if delay:
                    time.sleep(delay)
                target.sendall(data)
        except OSError:
            pass
        for sock in (source, target):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def url(self, database_url):
        tail = database_url.split("@", 1)[1].split("/", 1)[1]
        return f"postgres://postgres@127.0.0.1:{self.port}/{tail}"

    def cut(self):
        self.open = False
        with self.lock:
            for sock in self.connections:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                    sock.close()
                except OSError:
                    pass
            self.connections = []

    def restore(self):
        self.open = True

    def close(self):
        self.cut()
        self.listener.close()


def funded(database_url, amount, keys=1):
    cli("migrate", database_url=database_url)
    account = cli("accounts", "create", "--name", "Bank", database_url=database_url)["id"]
    cli("credits", "grant", "--account", account, "--amount", amount, database_url=database_url)
    return account, [cli("keys", "create", "--account", account, database_url=database_url)["key"] for _ in range(keys)]


def final_checks(database_url, account, replies, checker):
    """The closing audit: every figure the issue names, asserted and returned for the printout."""
    charges = psql(database_url, f"SELECT COUNT(*), COALESCE(SUM(amount), 0) FROM transfers WHERE debit_account = '{account}' AND kind = 'charge'")
    count, charged = (int(x) for x in charges.split("|"))
    generation_costs = int(psql(database_url, f"SELECT COALESCE(SUM(cost), 0) FROM generations WHERE account_id = '{account}'"))
    duplicates = int(psql(database_url, "SELECT COUNT(*) FROM (SELECT generation_id FROM transfers WHERE kind = 'charge' "
                                        "GROUP BY generation_id HAVING COUNT(*) > 1) d"))
    pending = int(psql(database_url, "SELECT COUNT(*) FROM holds WHERE status = 'pending'"))
    balance, held = (int(x) for x in psql(database_url, f"SELECT balance, held FROM balances WHERE account_id = '{account}'").split("|"))
    overage = -int(psql(database_url, "SELECT COALESCE(SUM(balance), 0) FROM balances WHERE account_id = 'platform:overage'"))
    told = sum(reported_cost(status, reply) for status, reply in replies)
    verify = cli("ledger", "verify", database_url=database_url)
    assert checker.samples >= 3, "the checker never sampled the ledger"
    assert checker.violations == [], checker.violations
    assert duplicates == 0
    assert pending == 0 and held == 0, "holds left behind"
    assert balance >= 0
    assert charged == generation_costs, (charged, generation_costs)
    assert told == charged, f"clients were told {told}, the ledger charged {charged}"
    assert verify["consistent"] is True and all(item["holds"] for item in verify["invariants"]), verify
    return dict(charges=count, charged=charged, overage=overage, balance=balance, minimum=checker.minimum, samples=checker.samples)


def settle_nodes(nodes):
    """Graceful stops: in-flight requests settle, spools replay, leases are given back."""
    for node in nodes:
        wait_until(lambda: node.ready() is None or node.ready().get("spooled_settlements", 0) == 0, 60, f"{node.name}'s spool")
        node.stop()


PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n" + bytes(64)).decode()


def adversarial_bodies():
    """Requests that multiply output or defeat a byte-per-token estimate, in turn."""
    emoji = "😀🎉🚀" * 40 + "漢字かな한국어" * 30 + bytes(random.randrange(256) for _ in range(200)).decode("latin-1")
    return [
        {"model": "openai/gpt-4o-mini", "max_tokens": 120, "messages": [{"role": "user", "content": "hi " * 300}]},
        {"model": "openai/gpt-4o-mini", "max_tokens": 60, "messages": [{"role": "user", "content": emoji}]},
        {"model": "openai/gpt-4o-mini", "max_tokens": 40, "messages": [{"role": "user", "content": [
            {"type": "text", "text": "describe"}] + [{"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}}] * 6}]},
        {"model": "openai/gpt-4o-mini", "n": 64, "max_tokens": 30, "messages": [{"role": "user", "content": "many answers"}]},
        {"model": "openai/gpt-4o-mini", "max_tokens": 1, "messages": [{"role": "user", "content": "a big list"}],
         "response_format": {"type": "json_schema", "json_schema": {"name": "big", "schema": {
             "type": "array", "minItems": 2000, "items": {"type": "string"}}}}},
        {"model": "anthropic/claude-haiku-4.5", "max_tokens": 50, "messages": [
            {"role": "system", "content": [{"type": "text", "text": "You are careful. " * 200, "cache_control": {"type": "ephemeral"}}]},
            {"role": "user", "content": "and now?"}]},
        {"model": "anthropic/claude-haiku-4.5", "max_tokens": 8, "stream": True, "messages": [{"role": "user", "content": "overshoot"}]},
    ]


def spend_until_refused(nodes, keys, bodies, clients=6, refused_for=3.0, limit=120.0):
    """Clients cycle through `bodies` across the nodes until every one has been refused (402) for
    `refused_for` seconds; returns [(status, reply)]."""
    replies, lock = [], threading.Lock()

    def client(index):
        node, key = nodes[index % len(nodes)], keys[index % len(keys)]
        refused_since, turn, deadline = None, index, time.time() + limit
        while time.time() < deadline:
            body = bodies[turn % len(bodies)]
            turn += 1
            status, reply, _ = request(node, body, key)
            with lock:
                replies.append((status, reply))
            if status == 200:
                refused_since = None
                continue
            assert status in (402, 429), (status, reply)
            refused_since = refused_since or time.time()
            if time.time() - refused_since > refused_for:
                return
            time.sleep(0.05)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return replies


def test_lying_and_runaway_upstreams_never_overspend_a_small_account():
    workdir = tempfile.mkdtemp(prefix="signalbox-bank-")
    database_url = fresh_database(os.environ["SIGNALBOX_TEST_DATABASE_URL"])
    account, keys = funded(database_url, "0.05", keys=2)
    sim = start_simulator(workdir)
    # OpenAI reports 40 times the tokens it served; Anthropic ignores max_tokens.
    for fault in ({"provider": "openai", "kind": "usage", "factor": 40}, {"provider": "anthropic", "kind": "overshoot"}):
        urllib.request.urlopen(urllib.request.Request(sim.url + "/_sim/faults", data=json.dumps(fault).encode(),
                                                      headers={"Content-Type": "application/json"}), timeout=5).read()
    nodes = [RouterNode(f"bank-{i}", database_url, sim.url, workdir, ["--hold-ttl", "8", "--lease-slice", "0.004"]) for i in range(3)]
    checker = Checker(database_url)
    checker.start()
    try:
        replies = spend_until_refused(nodes, keys, adversarial_bodies())
        checker.stop()
        settle_nodes(nodes)
        served = sum(1 for status, _ in replies if status == 200)
        refused = sum(1 for status, _ in replies if status == 402)
        assert served > 10 and refused > 0
        choices = [len(reply["choices"]) for status, reply in replies if status == 200 and not isinstance(reply, str)]
        assert 64 in choices or any(status == 402 and "afford" in reply["error"]["message"] for status, reply in replies
                                    if isinstance(reply, dict) and "error" in reply)
        facts = final_checks(database_url, account, replies, checker)
        assert facts["overage"] > 0, "an upstream over-reporting 40x must cost the operator, not the client"
        print(f"\nbank: {served} served, {refused} refused, charged {facts['charged']} n$, overage {facts['overage']} n$, "
              f"min balance {facts['minimum']} n$ over {facts['samples']} samples")
    finally:
        checker.running = False
        for process in nodes + [sim]:
            process.stop(signal.SIGKILL)


def test_one_idempotency_key_sent_to_three_nodes_at_once_runs_and_charges_once():
    workdir = tempfile.mkdtemp(prefix="signalbox-bank-")
    database_url = fresh_database(os.environ["SIGNALBOX_TEST_DATABASE_URL"])
    account, (key,) = funded(database_url, "1")
    sim = start_simulator(workdir, inter_token_ms=30)
    nodes = [RouterNode(f"idem-{i}", database_url, sim.url, workdir) for i in range(3)]
    checker = Checker(database_url)
    checker.start()
    try:
        body = {"model": "openai/gpt-4o-mini", "max_tokens": 20, "messages": [{"role": "user", "content": "exactly once"}]}
        results = [None] * 3

        def send(index):
            results[index] = request(nodes[index], body, key, idempotency="bank-once")

        threads = [threading.Thread(target=send, args=(i,)) for i in range(3)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        statuses = sorted(status for status, _, _ in results)
        assert statuses.count(200) >= 1 and set(statuses) <= {200, 409}, statuses
        ids = {reply["id"] for status, reply, _ in results if status == 200}
        assert len(ids) == 1, ids
        # The retries that lost the race get the first answer now.
        replay = [request(node, body, key, idempotency="bank-once") for node in nodes]
        assert {reply["id"] for _, reply, _ in replay} == ids
        # A different body under the same key is refused and charges nothing.
        status, reply, _ = request(nodes[0], dict(body, max_tokens=21), key, idempotency="bank-once")
        assert status == 422 and reply["error"]["metadata"]["error_type"] == "idempotency_key_reused"
        checker.stop()
        settle_nodes(nodes)
        first = next((status, reply) for status, reply, _ in results if status == 200)
        facts = final_checks(database_url, account, [first], checker)
        assert facts["charges"] == 1
    finally:
        checker.running = False
        for process in nodes + [sim]:
            process.stop(signal.SIGKILL)


def test_a_takeover_while_the_first_owners_settlement_waits_in_its_spool_charges_once():
    """Node A answers, but its ledger connection is cut: the charge waits in A's spool and A
    cannot renew the claim. The client's retry on B after the stale window takes the key over
    and is charged. When A's spool replays, its settlement is a recorded conflict: the operator's
    overage, never a second charge."""
    workdir = tempfile.mkdtemp(prefix="signalbox-bank-")
    server_url = os.environ["SIGNALBOX_TEST_DATABASE_URL"]
    database_url = fresh_database(server_url)
    account, (key,) = funded(database_url, "1")
    relay = Relay(int(server_url.rsplit(":", 1)[1].split("/")[0]))
    sim = start_simulator(workdir, inter_token_ms=100)
    a = RouterNode("owner", relay.url(database_url), sim.url, workdir, ["--hold-ttl", "4"])
    b = RouterNode("retry", database_url, sim.url, workdir, ["--hold-ttl", "4"])
    checker = Checker(database_url)
    checker.start()
    try:
        warm = {"model": "openai/gpt-4o-mini", "max_tokens": 5, "messages": [{"role": "user", "content": "warm"}]}
        warmed = request(a, warm, key)  # A takes a lease while its ledger is reachable
        assert warmed[0] == 200
        body = {"model": "openai/gpt-4o-mini", "max_tokens": 20, "messages": [{"role": "user", "content": "charge me once"}]}
        result = {}
        thread = threading.Thread(target=lambda: result.update(first=request(a, body, key, idempotency="takeover")))
        thread.start()
        time.sleep(0.3)
        relay.cut()
        thread.join()
        status, first, _ = result["first"]
        assert status == 200  # served from A's lease; its charge is in A's spool
        wait_until(lambda: a.ready()["spooled_settlements"] >= 1, 20, "A to spool the charge")
        time.sleep(5)  # past the stale window: A could not renew its claim
        status, retried, _ = request(b, body, key, idempotency="takeover")
        assert status == 200 and retried["id"] != first["id"]
        relay.restore()
        wait_until(lambda: a.ready()["spooled_settlements"] == 0, 30, "A's spool to replay")
        conflict = psql(database_url, f"SELECT cost FROM generations WHERE id = '{first['id']}'")
        assert conflict == "0", "the taken-over owner's generation records no charge"
        overage = psql(database_url, f"SELECT COUNT(*) FROM transfers WHERE generation_id = '{first['id']}' AND kind = 'overage'")
        assert int(overage) >= 1
        checker.stop()
        settle_nodes([a, b])
        facts = final_checks(database_url, account, [warmed[:2], (200, retried)], checker)
        assert facts["charges"] == 2  # the warm-up and the retry; never the first owner's
        print(f"\ntakeover: first owner's settlement replayed as overage {facts['overage']} n$, one charge for the key")
    finally:
        checker.running = False
        for process in (a, b, sim):
            process.stop(signal.SIGKILL)
        relay.close()


def test_a_stream_longer_than_the_stale_window_keeps_its_claim():
    workdir = tempfile.mkdtemp(prefix="signalbox-bank-")
    database_url = fresh_database(os.environ["SIGNALBOX_TEST_DATABASE_URL"])
    account, (key,) = funded(database_url, "1")
    sim = start_simulator(workdir, inter_token_ms=100)
    nodes = [RouterNode(f"long-{i}", database_url, sim.url, workdir, ["--hold-ttl", "3"]) for i in range(2)]
    checker = Checker(database_url)
    checker.start()
    try:
        # A schema demanding a long array: 60 tokens at 100 ms each, about 6 s of stream.
        body = {"model": "openai/gpt-4o-mini", "stream": True, "max_tokens": 60, "messages": [{"role": "user", "content": "a long list"}],
                "response_format": {"type": "json_schema", "json_schema": {"name": "list", "schema": {
                    "type": "array", "minItems": 200, "items": {"type": "string"}}}}}
        result = {}
        thread = threading.Thread(target=lambda: result.update(first=request(nodes[0], body, key, idempotency="long")))
        started = time.time()
        thread.start()
        time.sleep(4)  # past the 3 s stale window, still streaming
        assert thread.is_alive(), "the stream should outlast the stale window"
        status, _, _ = request(nodes[1], body, key, idempotency="long")
        assert status == 409, "a renewed claim is not taken over"
        thread.join()
        assert time.time() - started > 3
        status, stream, headers = result["first"]
        assert status == 200 and "[DONE]" in stream
        status, replay, replay_headers = request(nodes[1], body, key, idempotency="long")
        assert status == 200 and replay_headers.get("X-Generation-Id") == headers.get("X-Generation-Id")
        checker.stop()
        settle_nodes(nodes)
        facts = final_checks(database_url, account, [(200, stream)], checker)
        assert facts["charges"] == 1
    finally:
        checker.running = False
        for process in nodes + [sim]:
            process.stop(signal.SIGKILL)


@pytest.mark.parametrize("offset", ["+10m", "-10m"])
def test_a_node_ten_minutes_off_voids_no_lease_and_overspends_nothing(offset):
    import shutil
    if not shutil.which("faketime"):
        pytest.fail("this test needs faketime; .ci/run installs it (apt-get install faketime)")
    workdir = tempfile.mkdtemp(prefix="signalbox-bank-")
    database_url = fresh_database(os.environ["SIGNALBOX_TEST_DATABASE_URL"])
    account, keys = funded(database_url, "0.05", keys=2)
    sim = start_simulator(workdir)
    nodes = [RouterNode(f"clock-{i}", database_url, sim.url, workdir, ["--hold-ttl", "6", "--lease-slice", "0.004"])
             for i in range(2)]
    nodes.append(RouterNode("skewed", database_url, sim.url, workdir, ["--hold-ttl", "6", "--lease-slice", "0.004"],
                            wrapper=("faketime", "-f", offset), env={"FAKETIME_DONT_FAKE_MONOTONIC": "1"}))
    checker = Checker(database_url)
    checker.start()
    try:
        body = [{"model": "openai/gpt-4o", "max_tokens": 60, "messages": [{"role": "user", "content": "tick tock"}]}]
        replies = spend_until_refused(nodes, keys, body)
        checker.stop()
        # No lease was voided under its owner: nothing landed on an expired reservation.
        early = psql(database_url, "SELECT COUNT(*) FROM transfers WHERE memo LIKE 'beyond an expired reservation%'")
        assert early == "0", f"{early} settlements found their lease voided early"
        settle_nodes(nodes)
        facts = final_checks(database_url, account, replies, checker)
        served = sum(1 for status, _ in replies if status == 200)
        print(f"\nclock {offset}: {served} served, min balance {facts['minimum']} n$, balance {facts['balance']} n$")
    finally:
        checker.running = False
        for process in nodes + [sim]:
            process.stop(signal.SIGKILL)


def test_a_slow_database_commits_without_spooling_or_stranding_locks():
    workdir = tempfile.mkdtemp(prefix="signalbox-bank-")
    server_url = os.environ["SIGNALBOX_TEST_DATABASE_URL"]
    database_url = fresh_database(server_url)
    account, keys = funded(database_url, "0.2", keys=2)
    relay = Relay(int(server_url.rsplit(":", 1)[1].split("/")[0]), delay=(0.05, 0.15))  # 100–300 ms a round trip
    sim = start_simulator(workdir)
    nodes = [RouterNode(f"slow-{i}", relay.url(database_url), sim.url, workdir, ["--lease-slice", "0.01"]) for i in range(3)]
    checker = Checker(database_url)
    checker.start()
    try:
        body = [{"model": "openai/gpt-4o-mini", "max_tokens": 40, "messages": [{"role": "user", "content": "slowly"}]}]
        replies, lock, stop = [], threading.Lock(), time.time() + 20

        def client(index):
            while time.time() < stop:
                result = request(nodes[index % 3], body[0], keys[index % 2])
                with lock:
                    replies.append(result[:2])

        threads = [threading.Thread(target=client, args=(i,)) for i in range(9)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        for node in nodes:
            assert node.ready()["ledger"] == "ok", node.ready()
        outage = [node.output().count("spooling settlements") for node in nodes]
        checker.stop()
        locks = psql(server_url, "SELECT COUNT(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
                                 "WHERE a.state = 'idle in transaction'")
        settle_nodes(nodes)
        served = sum(1 for status, _ in replies if status == 200)
        assert served > 30 and set(status for status, _ in replies) <= {200, 402}
        assert outage == [0, 0, 0], f"settlements were spooled on a merely slow database: {outage}"
        assert locks == "0"
        facts = final_checks(database_url, account, replies, checker)
        print(f"\nslow database (100–300 ms round trips): {served} served in 20 s, no spooling, balance {facts['balance']} n$")
    finally:
        checker.running = False
        for process in nodes + [sim]:
            process.stop(signal.SIGKILL)
        relay.close()


def test_postgres_stopped_longer_than_the_hold_ttl_while_nodes_serve_from_leases():
    workdir = tempfile.mkdtemp(prefix="signalbox-bank-")
    server = PrivatePostgres()
    database_url = fresh_database(server.url)
    account, keys = funded(database_url, "0.05", keys=2)
    sim = start_simulator(workdir)
    nodes = [RouterNode(f"down-{i}", database_url, sim.url, workdir, ["--hold-ttl", "4", "--lease-slice", "0.01"]) for i in range(2)]
    checker = Checker(database_url)
    checker.start()
    try:
        body = {"model": "openai/gpt-4o-mini", "max_tokens": 40, "messages": [{"role": "user", "content": "outage"}]}
        replies, lock, stop = [], threading.Lock(), threading.Event()
        for node in nodes:  # each node takes a lease while the ledger is up
            replies.append(request(node, body, keys[0])[:2])
            assert replies[-1][0] == 200

        def client(index):
            while not stop.is_set():
                result = request(nodes[index % 2], body, keys[index % 2], timeout=20)
                with lock:
                    replies.append(result[:2])
                time.sleep(0.02)

        threads = [threading.Thread(target=client, args=(i,)) for i in range(4)]
        for thread in threads:
            thread.start()
        time.sleep(1)
        server.stop()
        time.sleep(8)  # twice the hold TTL
        server.start()
        time.sleep(3)
        stop.set()
        for thread in threads:
            thread.join()
        wait_until(lambda: all(node.ready()["spooled_settlements"] == 0 for node in nodes), 60, "the spools to replay")
        checker.stop()
        settle_nodes(nodes)
        served = sum(1 for status, _ in replies if status == 200)
        assert set(status for status, _ in replies) <= {200, 402, 503}
        facts = final_checks(database_url, account, replies, checker)
        print(f"\noutage past the TTL: {served} served, overage {facts['overage']} n$, balance {facts['balance']} n$")
    finally:
        checker.running = False
        for process in nodes + [sim]:
            process.stop(signal.SIGKILL)
        server.close()


def crc32c(data):
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
    return crc ^ 0xFFFFFFFF


def spool_record(settlement):
    payload = json.dumps({"settlement": settlement, "spooledAt": int(time.time() * 1000)}).encode()
    return b"SBS1" + struct.pack("<II", len(payload), crc32c(payload)) + payload


def spool_records(path):
    data, records, offset = open(path, "rb").read(), [], 0
    while offset + 12 <= len(data) and data[offset:offset + 4] == b"SBS1":
        length = struct.unpack("<I", data[offset + 4:offset + 8])[0]
        records.append(json.loads(data[offset + 12:offset + 12 + length]))
        offset += 12 + length
    return records


@pytest.mark.parametrize("restart_after_ttl", [False, True])
def test_a_node_killed_with_a_full_spool_replays_it_whole_despite_a_torn_tail_and_a_poison_record(restart_after_ttl):
    workdir = tempfile.mkdtemp(prefix="signalbox-bank-")
    server_url = os.environ["SIGNALBOX_TEST_DATABASE_URL"]
    database_url = fresh_database(server_url)
    account, (key,) = funded(database_url, "1")
    relay = Relay(int(server_url.rsplit(":", 1)[1].split("/")[0]))
    sim = start_simulator(workdir)
    node = RouterNode("spooler", relay.url(database_url), sim.url, workdir, ["--hold-ttl", "4", "--lease-slice", "0.05"])
    checker = Checker(database_url)
    checker.start()
    try:
        body = {"model": "openai/gpt-4o-mini", "max_tokens": 20, "messages": [{"role": "user", "content": "spool me"}]}
        before = request(node, body, key)[:2]
        assert before[0] == 200
        relay.cut()
        replies = [request(node, body, key)[:2] for _ in range(8)]
        served = [reply for status, reply in replies if status == 200]
        assert len(served) >= 3, replies
        wait_until(lambda: node.ready()["spooled_settlements"] == len(served), 20, "the charges to be spooled")
        node.stop(signal.SIGKILL)
        spool = os.path.join(node.data_dir, "settlements.spool")
        records = spool_records(spool)
        assert len(records) == len(served)
        # A poison record at the head (an account the ledger does not know) and a torn tail.
        poison = json.loads(json.dumps(records[0]["settlement"]))
        poison["generation"]["id"] = "gen-poison"
        poison["generation"]["accountID"] = "no-such-account"
        for transfer in poison["transfers"]:
            transfer["idempotencyKey"] = "charge:gen-poison"
            transfer["debitAccount"] = "no-such-account"
        poison["reservation"] = None
        body_bytes = open(spool, "rb").read()
        torn = spool_record(records[-1]["settlement"])[:40]
        open(spool, "wb").write(spool_record(poison) + body_bytes + torn)
        if restart_after_ttl:
            time.sleep(6)  # the dead node's lease expires by the ledger's clock; the restarted node voids it
        relay.restore()
        node.start()
        wait_until(lambda: node.ready()["spooled_settlements"] == 0, 30, "the spool to replay")
        log = node.output()
        assert "the settlement spool was damaged" in log and "torn_tail_bytes" in log
        rejected = spool_records(spool + ".rejected")
        assert [record["settlement"]["generation"]["id"] for record in rejected] == ["gen-poison"]
        assert "no-such-account" in rejected[0]["reason"]
        stored = set(psql(database_url, f"SELECT generation_id FROM transfers WHERE kind = 'charge' AND debit_account = '{account}'").split())
        assert {reply["id"] for reply in served} <= stored, "a spooled charge was lost"
        checker.stop()
        node.stop()
        facts = final_checks(database_url, account, [before] + replies, checker)
        print(f"\nkilled with {len(served)} spooled (restart {'after' if restart_after_ttl else 'before'} the TTL): "
              f"all replayed, poison set aside, overage {facts['overage']} n$")
    finally:
        checker.running = False
        for process in (node, sim):
            process.stop(signal.SIGKILL)
        relay.close()


def test_sustained_load_longer_than_the_ttl_renews_returns_and_expires_leases():
    workdir = tempfile.mkdtemp(prefix="signalbox-bank-")
    database_url = fresh_database(os.environ["SIGNALBOX_TEST_DATABASE_URL"])
    account, keys = funded(database_url, "2", keys=2)
    sim = start_simulator(workdir)
    nodes = [RouterNode(f"busy-{i}", database_url, sim.url, workdir, ["--hold-ttl", "4", "--lease-slice", "0.02"]) for i in range(3)]
    checker = Checker(database_url)
    checker.start()
    try:
        body = {"model": "openai/gpt-4o-mini", "max_tokens": 30, "messages": [{"role": "user", "content": "keep going"}]}
        replies, lock, stop = [], threading.Lock(), time.time() + 14

        def client(index):
            while time.time() < stop:
                result = request(nodes[index % 3], body, keys[index % 2])
                with lock:
                    replies.append(result[:2])

        threads = [threading.Thread(target=client, args=(i,)) for i in range(9)]
        for thread in threads:
            thread.start()
        # Under load, upkeep still renews: no lease in use expires.
        time.sleep(7)
        expired_in_use = psql(database_url, "SELECT COUNT(*) FROM holds WHERE status = 'voided' AND amount > 0")
        for thread in threads:
            thread.join()
        nodes[2].stop(signal.SIGKILL)  # its lease is voided once it expires, by another node's upkeep
        wait_until(lambda: psql(database_url, "SELECT COUNT(*) FROM holds WHERE status = 'pending' "
                                              "AND id LIKE 'lease:busy-2:%'") == "0", 20, "the dead node's lease to expire")
        time.sleep(3)  # idle leases are given back
        idle = psql(database_url, "SELECT COUNT(*) FROM holds WHERE status = 'pending'")
        checker.stop()
        served = sum(1 for status, _ in replies if status == 200)
        early = psql(database_url, "SELECT COUNT(*) FROM transfers WHERE memo LIKE 'beyond an expired reservation%'")
        assert early == "0" and expired_in_use == "0"
        assert idle == "0", f"{idle} idle leases were not given back"
        settle_nodes(nodes[:2])
        facts = final_checks(database_url, account, replies, checker)
        print(f"\nsustained 14 s at a 4 s TTL: {served} served, balance {facts['balance']} n$")
    finally:
        checker.running = False
        for process in nodes + [sim]:
            process.stop(signal.SIGKILL)
