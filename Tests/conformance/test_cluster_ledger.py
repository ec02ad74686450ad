"""Several router processes on one PostgreSQL ledger: concurrent spending, a ledger outage and
a killed node. Nothing may be overspent, lost or charged twice.

These run in CI (which starts PostgreSQL); without a database configured they are skipped."""
import http.client
import json
import os
import signal
import tempfile
import threading
import time

import pytest

from cluster import (ADMIN_KEY, PrivatePostgres, RouterNode, cli, fresh_database, psql, start_simulator, wait_until)

pytestmark = pytest.mark.skipif(not os.environ.get("SIGNALBOX_TEST_DATABASE_URL") and not os.environ.get("CI"),
                                reason="no PostgreSQL configured for this run")

MODEL = "anthropic/claude-opus-4.5"  # pricey, so a small balance runs out in a few dozen requests
BODY = {"model": MODEL, "max_tokens": 60, "messages": [{"role": "user", "content": "Tell me about ledgers"}]}


def funded_account(database_url, amount):
    cli("migrate", database_url=database_url)
    account = cli("accounts", "create", "--name", "Shared", database_url=database_url)["id"]
    cli("credits", "grant", "--account", account, "--amount", amount, database_url=database_url)
    key = cli("keys", "create", "--account", account, database_url=database_url)
    return account, key


def money(text):
    """Ledger decimals as integer nano-dollars, so sums compare exactly."""
    whole, _, fraction = str(text).partition(".")
    sign = -1 if whole.startswith("-") else 1
    return sign * (abs(int(whole or "0")) * 10**9 + int((fraction + "0" * 9)[:9]))


def cost_nanos(reply):
    return round(reply["usage"]["cost"] * 10**9)


def ledger_facts(database_url, account):
    charges = psql(database_url, f"SELECT COUNT(*), COALESCE(SUM(amount), 0) FROM transfers WHERE debit_account = '{account}' AND kind = 'charge'")
    count, total = (int(x) for x in charges.split("|"))
    generations = int(psql(database_url, f"SELECT COALESCE(SUM(cost), 0) FROM generations WHERE account_id = '{account}'"))
    balance, held = (int(x) for x in psql(database_url, f"SELECT balance, held FROM balances WHERE account_id = '{account}'").split("|"))
    pending = int(psql(database_url, f"SELECT COUNT(*) FROM holds WHERE account_id = '{account}' AND status = 'pending'"))
    duplicates = int(psql(database_url, "SELECT COUNT(*) FROM (SELECT generation_id FROM transfers WHERE kind = 'charge' "
                                        "GROUP BY generation_id HAVING COUNT(*) > 1) d"))
    return dict(charges=count, charged=total, generation_costs=generations, balance=balance, held=held, pending=pending,
                duplicates=duplicates)


class Watch(threading.Thread):
    """Samples the account's balance row while load runs: it must never go below zero, nor may
    the holds and leases on it ever exceed it."""

    def __init__(self, database_url, account):
        super().__init__(daemon=True)
        self.database_url, self.account = database_url, account
        self.samples, self.violations, self.running = 0, [], True

    def run(self):
        while self.running:
            try:
                balance, held = (int(x) for x in psql(self.database_url,
                                 f"SELECT balance, held FROM balances WHERE account_id = '{self.account}'").split("|"))
                self.samples += 1
                if balance < 0 or held > balance:
                    self.violations.append((balance, held))
            except Exception:
                pass  # the ledger may be down on purpose
            time.sleep(0.05)


def test_three_nodes_exhaust_one_account_without_overspending():
    workdir = tempfile.mkdtemp(prefix="signalbox-cluster-")
    database_url = fresh_database(os.environ["SIGNALBOX_TEST_DATABASE_URL"])
    account, key = funded_account(database_url, "0.05")
    sim = start_simulator(workdir)
    nodes = [RouterNode(f"node-{i}", database_url, sim.url, workdir, ["--hold-ttl", "6", "--lease-slice", "0.004"])
             for i in range(3)]
    try:
        # A charge shows on the node that served it as soon as the response ends, and on the others at once.
        status, first = nodes[0].call("POST", "/chat/completions", key["key"], BODY)
        assert status == 200
        for node in nodes:
            assert money(str(node.call("GET", "/key", key["key"])[1]["data"]["usage"])) == cost_nanos(first)

        results, lock = [], threading.Lock()

        def spend(node):
            refused_since = None
            deadline = time.time() + 90
            while time.time() < deadline:
                status, body = node.call("POST", "/chat/completions", key["key"], BODY)
                with lock:
                    results.append((status, body))
                if status == 200:
                    refused_since = None
                    continue
                assert status == 402, body
                refused_since = refused_since or time.time()
                if time.time() - refused_since > 3:  # idle leases elsewhere are given back within ~1.5 s
                    return
                time.sleep(0.05)

        watch = Watch(database_url, account)
        watch.start()
        threads = [threading.Thread(target=spend, args=(node,)) for node in nodes for _ in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        watch.running = False
        watch.join()
        served = [body for status, body in results if status == 200] + [first]
        refusals = [body for status, body in results if status == 402]
        assert len(served) > 10 and refusals
        assert "afford" in refusals[-1]["error"]["message"] or "Insufficient" in refusals[-1]["error"]["message"]

        print(f"\n3 nodes: {len(served)} served, {len(refusals)} refused (402), {watch.samples} balance samples")
        for node in nodes:
            node.stop()  # graceful: in-flight settles, leases are given back
        facts = ledger_facts(database_url, account)
        assert watch.samples > 10 and watch.violations == []
        assert facts["duplicates"] == 0
        assert facts["charges"] == len(served)
        assert facts["charged"] == facts["generation_costs"] == sum(cost_nanos(body) for body in served)
        assert facts["balance"] == money("0.05") - facts["charged"] >= 0
        assert facts["pending"] == 0 and facts["held"] == 0
        assert facts["balance"] < money("0.0025")  # exhausted: not even one more worst case fits
        assert cli("ledger", "verify", database_url=database_url)["consistent"] is True
    finally:
        for process in nodes + [sim]:
            process.stop(signal.SIGKILL)


def test_a_key_revoked_on_one_node_is_refused_by_every_node_within_a_second():
    workdir = tempfile.mkdtemp(prefix="signalbox-cluster-")
    database_url = fresh_database(os.environ["SIGNALBOX_TEST_DATABASE_URL"])
    account, _ = funded_account(database_url, "1")
    sim = start_simulator(workdir)
    nodes = [RouterNode(f"node-{i}", database_url, sim.url, workdir) for i in range(3)]
    try:
        status, created = nodes[0].call("POST", "/keys", ADMIN_KEY, {"name": "short-lived", "account": account})
        assert status == 201 or status == 200, created
        new_key, key_hash = created["key"], created["data"]["hash"]
        for node in nodes:  # created on node 0, usable everywhere at once
            assert node.call("GET", "/key", new_key)[0] == 200
        assert nodes[1].call("PATCH", f"/keys/{key_hash}", ADMIN_KEY, {"disabled": True})[0] == 200
        revoked_at = time.time()
        wait_until(lambda: all(node.call("GET", "/key", new_key)[0] == 401 for node in nodes), 3, "revocation everywhere")
        assert time.time() - revoked_at < 1.5
    finally:
        for process in nodes + [sim]:
            process.stop(signal.SIGKILL)


def test_postgres_stopped_and_restarted_mid_load_loses_and_doubles_nothing():
    workdir = tempfile.mkdtemp(prefix="signalbox-outage-")
    server = PrivatePostgres()
    database_url = fresh_database(server.url)
    account, key = funded_account(database_url, "5")
    sim = start_simulator(workdir)
    nodes = [RouterNode(f"node-{i}", database_url, sim.url, workdir) for i in range(2)]
    try:
        for node in nodes:  # each node takes a lease while the ledger is up
            assert node.call("POST", "/chat/completions", key["key"], BODY)[0] == 200
        results, lock, stop = [], threading.Lock(), threading.Event()

        def load(node):
            while not stop.is_set():
                status, body = node.call("POST", "/chat/completions", key["key"], BODY, timeout=20)
                with lock:
                    results.append((time.time(), status, body))
                time.sleep(0.02)

        threads = [threading.Thread(target=load, args=(node,)) for node in nodes for _ in range(4)]
        for thread in threads:
            thread.start()
        time.sleep(1.5)
        server.stop()
        down_at = time.time()
        wait_until(lambda: all(node.ready()["status"] == "degraded" for node in nodes), 10, "readyz to report the outage")
        time.sleep(2.5)
        server.start()
        up_at = time.time()
        time.sleep(1.5)
        stop.set()
        for thread in threads:
            thread.join()
        wait_until(lambda: all(node.ready()["ledger"] == "ok" and node.ready()["spooled_settlements"] == 0 for node in nodes),
                   30, "the spools to be replayed")

        statuses = {status for _, status, _ in results}
        assert statuses <= {200, 503}, statuses
        during = [(status, body) for at, status, body in results if down_at + 0.5 < at < up_at]
        assert any(status == 200 for status, _ in during), "leases keep serving while the ledger is down"
        refused = [body for _, status, body in results if status == 503]
        assert all(body["error"]["metadata"]["reason"] == "ledger_unavailable" for body in refused)

        print(f"\noutage: {len(results)} requests, {len(during)} while down "
              f"({sum(1 for status, _ in during if status == 200)} served from leases), {len(refused)} refused with 503")
        for node in nodes:
            node.stop()
        served = [body for _, status, body in results if status == 200]
        facts = ledger_facts(database_url, account)
        assert facts["duplicates"] == 0
        assert facts["charges"] == len(served) + 2
        served_ids = {body["id"] for body in served}
        stored = set(psql(database_url, f"SELECT generation_id FROM transfers WHERE kind = 'charge' AND debit_account = '{account}'").split())
        assert served_ids <= stored
        assert facts["charged"] == facts["generation_costs"]
        assert facts["pending"] == 0 and facts["held"] == 0
        assert cli("ledger", "verify", database_url=database_url)["consistent"] is True
    finally:
        for process in nodes + [sim]:
            process.stop(signal.SIGKILL)
        server.close()


def test_a_node_killed_mid_stream_charges_nothing_for_it_and_its_lease_expires():
    workdir = tempfile.mkdtemp(prefix="signalbox-kill-")
    database_url = fresh_database(os.environ["SIGNALBOX_TEST_DATABASE_URL"])
    account, key = funded_account(database_url, "1")
    sim = start_simulator(workdir, inter_token_ms=100)
    victim, survivor = (RouterNode(name, database_url, sim.url, workdir, ["--hold-ttl", "4"]) for name in ("victim", "survivor"))
    try:
        status, done = victim.call("POST", "/chat/completions", key["key"], dict(BODY, max_tokens=5))
        assert status == 200
        connection = http.client.HTTPConnection("127.0.0.1", victim.port, timeout=10)
        connection.request("POST", "/api/v1/chat/completions", json.dumps(dict(BODY, stream=True)),
                           {"Authorization": f"Bearer {key['key']}", "Content-Type": "application/json"})
        response = connection.getresponse()
        generation = response.getheader("X-Generation-Id")
        chunks = 0
        while chunks < 4:
            if response.fp.readline().startswith(b"data: {"):
                chunks += 1
        victim.stop(signal.SIGKILL)
        facts = ledger_facts(database_url, account)
        assert facts["pending"] == 1 and facts["held"] > 0  # the dead node's lease
        # The survivor's upkeep voids the lease once it expires: the credit comes back.
        wait_until(lambda: ledger_facts(database_url, account)["pending"] == 0, 15, "the dead node's lease to expire")
        facts = ledger_facts(database_url, account)
        assert facts["held"] == 0
        assert facts["charges"] == 1 and facts["charged"] == cost_nanos(done)  # the finished request, not the killed one
        assert psql(database_url, f"SELECT COUNT(*) FROM transfers WHERE generation_id = '{generation}'") == "0"
        assert facts["balance"] == money("1") - cost_nanos(done)
        assert cli("ledger", "verify", database_url=database_url)["consistent"] is True
        survivor.stop()
    finally:
        for process in (victim, survivor, sim):
            process.stop(signal.SIGKILL)
