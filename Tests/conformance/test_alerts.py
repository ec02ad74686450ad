"""Alerts by signed webhook from a real three-node cluster on one PostgreSQL ledger: a local
receiver checks every delivery's HMAC-SHA256 signature and timestamp, and counts deliveries per
event. Each event — an account crossing its balance threshold, a key at 80% of its limit, an
endpoint's circuit opening, an overage, a node dying — arrives exactly once though three nodes saw
it, and a delivery the receiver answers 500 twice arrives a third time. Runs where PostgreSQL is
configured (always in CI)."""
import hashlib
import hmac
import http.server
import json
import os
import signal
import tempfile
import threading
import time
import urllib.error
import urllib.request

import pytest

from cluster import ADMIN_KEY, GossipNode, cli, fresh_database, keygen, wait_until
from conftest import free_port

pytestmark = pytest.mark.skipif(not os.environ.get("SIGNALBOX_TEST_DATABASE_URL") and not os.environ.get("CI"),
                                reason="no PostgreSQL configured for this run")

SECRET = "alert-signing-secret-for-the-tests-0001"


class WebhookReceiver:
    """Verifies each POST's signature and keeps (headers, body, status answered); answers 500 to
    the next `fail_next` posts."""

    def __init__(self):
        self.posts = []
        self.fail_next = 0
        self.lock = threading.Lock()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                timestamp = self.headers["X-Signalbox-Timestamp"]
                expected = "v1=" + hmac.new(SECRET.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
                signed = hmac.compare_digest(expected, self.headers["X-Signalbox-Signature"] or "")
                fresh = abs(time.time() - int(timestamp)) < 300
                with receiver.lock:
                    status = 401 if not (signed and fresh) else 500 if receiver.fail_next > 0 else 200
                    if status == 500:
                        receiver.fail_next -= 1
                    receiver.posts.append({"headers": dict(self.headers), "event": json.loads(body), "status": status})
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/signalbox"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def of(self, predicate):
        with self.lock:
            return [post for post in self.posts if predicate(post["event"])]

    def wait_for(self, predicate, what, seconds=20):
        wait_until(lambda: any(post["status"] == 200 for post in self.of(predicate)), seconds, what)
        time.sleep(2.5)  # any duplicate from another node would arrive within two more looks
        return self.of(predicate)


@pytest.fixture(scope="module")
def alerting():
    receiver = WebhookReceiver()
    workdir = tempfile.mkdtemp(prefix="signalbox-alerts-")
    database_url = fresh_database(os.environ["SIGNALBOX_TEST_DATABASE_URL"])
    cli("migrate", database_url=database_url)
    config = os.path.join(workdir, "signalbox.json")
    with open(config, "w") as file:
        json.dump({"alerts": {"webhooks": [{"url": receiver.url}], "balance_below_usd": "1", "check_interval_seconds": 1}}, file)
    key_file = keygen(os.path.join(workdir, "cluster.key"))
    seed_port = free_port()
    extra = ("--database-url", database_url, "--config", config)
    env = {"SIGNALBOX_ALERT_SECRET": SECRET}
    nodes = [GossipNode("a-1", workdir, key_file, f"127.0.0.1:{seed_port}", gossip_port=seed_port, extra=extra, env=env)]
    nodes += [GossipNode(name, workdir, key_file, f"127.0.0.1:{seed_port}", extra=extra, env=env) for name in ("b-2", "c-3")]
    wait_until(lambda: all(node.ready() for node in nodes), 60, "every node to join")
    wait_until(lambda: all(len([m for m in n.members().values() if m["state"] == "alive"]) == 3 for n in nodes), 20,
               "every node to see three members")
    yield nodes, receiver, database_url
    for node in nodes:
        node.stop(signal.SIGKILL)
    receiver.server.shutdown()


def chat(node, key, extra=None):
    body = dict({"model": "openai/gpt-4o-mini", "max_tokens": 12, "messages": [{"role": "user", "content": "hello"}]}, **(extra or {}))
    request = urllib.request.Request(node.base + "/api/v1/chat/completions", data=json.dumps(body).encode(),
                                     headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def customer(database_url, amount, limit=None):
    account = cli("accounts", "create", "--name", "Alerted", database_url=database_url)["id"]
    cli("credits", "grant", "--account", account, "--amount", amount, database_url=database_url)
    key = cli("keys", "create", "--account", account, *(["--limit", limit] if limit else []), database_url=database_url)
    return account, key["key"], key.get("id") or key.get("data", {}).get("id")


def assert_one_delivery(posts, sender):
    """Every post is one delivery (one delivery id), signed, from `sender`, and exactly one was accepted."""
    assert posts and all(post["status"] != 401 for post in posts), "every post is signed with the shared secret"
    assert len({post["headers"]["X-Signalbox-Delivery"] for post in posts}) == 1, [p["event"] for p in posts]
    assert [post["status"] for post in posts].count(200) == 1
    assert {post["event"]["node"] for post in posts} == {sender}


def test_an_account_crossing_its_threshold_is_one_delivery_retried_after_two_500s(alerting):
    nodes, receiver, database_url = alerting
    account, key, _ = customer(database_url, "1.000005")
    receiver.fail_next = 2
    status, body = chat(nodes[1], key)  # served and settled by b-2; the ledger is shared
    assert status == 200, body
    posts = receiver.wait_for(lambda e: e["type"] == "account.balance_low" and e["data"]["account"] == account,
                              "the balance alert")
    # Elected: the live member with the lowest id reports what every node can see.
    assert_one_delivery(posts, "a-1")
    assert [post["status"] for post in posts] == [500, 500, 200]
    event = posts[-1]["event"]
    assert event["severity"] == "warning" and event["data"]["threshold"] == "1" and float(event["data"]["balance"]) < 1
    assert posts[-1]["headers"]["X-Signalbox-Event"] == "account.balance_low"
    # The elected node's delivery log says so too.
    [record] = [r for r in nodes[0].get("/admin/alerts")["data"] if r["event_id"] == event["id"]]
    assert record["status"] == "delivered" and record["attempts"] == 3 and record["last_response"] == 200
    assert record["destination"] == receiver.url.rsplit("/hooks", 1)[0], "the webhook's path is never shown"


def test_a_key_at_80_percent_of_its_limit_is_one_delivery(alerting):
    nodes, receiver, database_url = alerting
    account, key, _ = customer(database_url, "5", limit="0.00004")
    for _ in range(8):
        status, _ = chat(nodes[2], key)
        if status != 200:
            break
    posts = receiver.wait_for(lambda e: e["type"] == "key.limit_80" and e["data"]["account"] == account, "the key alert")
    assert_one_delivery(posts, "a-1")
    assert posts[-1]["event"]["data"]["percent"] == 80


def test_an_overage_is_one_delivery_from_the_node_that_settled_it(alerting):
    nodes, receiver, database_url = alerting
    _, key, _ = customer(database_url, "5")
    nodes[1].fault(provider="openai", kind="usage", factor=40)  # b-2's provider reports 40× the tokens
    status, body = chat(nodes[1], key)
    assert status == 200, body
    posts = receiver.wait_for(lambda e: e["type"] == "overage.booked" and e["data"]["generation_id"] == body["id"],
                              "the overage alert")
    assert_one_delivery(posts, "b-2")
    assert float(posts[-1]["event"]["data"]["overage"]) > 0


def test_an_endpoint_routed_around_is_one_delivery(alerting):
    nodes, receiver, database_url = alerting
    _, key, _ = customer(database_url, "5")
    nodes[2].fault(provider="openai", kind="status", status=503)  # only c-3's simulator fails
    status, body = chat(nodes[2], key)
    assert status == 200 and body["provider"] == "Azure", body
    posts = receiver.wait_for(lambda e: e["type"] == "provider.circuit_opened", "the circuit alert")
    assert_one_delivery(posts, "a-1")
    assert posts[-1]["event"]["data"]["endpoint"] == "openai/gpt-4o-mini|openai"


def test_a_killed_node_is_one_delivery_though_two_nodes_saw_it_die(alerting):
    nodes, receiver, _ = alerting
    nodes[2].stop(signal.SIGKILL)
    posts = receiver.wait_for(lambda e: e["type"] == "node.dead" and e["data"]["member"] == "c-3", "the node alert", 30)
    assert_one_delivery(posts, "a-1")
    assert posts[-1]["event"]["severity"] == "critical"


def test_a_node_that_loses_its_ledger_reports_it_and_its_spool_growing_old():
    """One node behind a TCP relay to PostgreSQL: the relay is cut, the node serves from its lease
    and spools the charge; it reports the ledger out of reach, then the spool older than its limit."""
    from test_money_invariants import Relay

    from conftest import DEMO_KEY, wait_until_ready
    receiver = WebhookReceiver()
    workdir = tempfile.mkdtemp(prefix="signalbox-alerts-ledger-")
    database_url = fresh_database(os.environ["SIGNALBOX_TEST_DATABASE_URL"])
    cli("migrate", database_url=database_url)
    relay = Relay(int(database_url.split("@", 1)[1].split("/", 1)[0].rsplit(":", 1)[1]))
    config = os.path.join(workdir, "signalbox.json")
    with open(config, "w") as file:
        json.dump({"alerts": {"webhooks": [{"url": receiver.url, "events": ["ledger.unreachable", "ledger.spool_age"]}],
                              "spool_age_seconds": 2, "check_interval_seconds": 1}}, file)
    port = free_port()
    log = open(os.path.join(workdir, "node.log"), "w")
    import subprocess
    from cluster import BINARY
    proc = subprocess.Popen(
        [BINARY, "serve", "--node-id", "solo", "--port", str(port), "--sim-port", str(free_port()), "--data-dir", workdir,
         "--database-url", relay.url(database_url), "--config", config, "--demo-credits", "5", "--drain-delay", "0"],
        stdout=log, stderr=subprocess.STDOUT,
        env=dict(os.environ, SIGNALBOX_ADMIN_KEY=ADMIN_KEY, SIGNALBOX_DEMO_KEY=DEMO_KEY, SIGNALBOX_ALERT_SECRET=SECRET))
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(base, proc, log.name)

        class Solo:  # what chat() needs of a node
            pass
        solo = Solo()
        solo.base = base
        assert chat(solo, DEMO_KEY)[0] == 200  # a lease is taken while the ledger answers
        relay.cut()
        assert chat(solo, DEMO_KEY)[0] == 200  # served from the lease; its charge waits in the spool
        unreachable = receiver.wait_for(lambda e: e["type"] == "ledger.unreachable", "the ledger alert")
        assert_one_delivery(unreachable, "solo")
        assert unreachable[-1]["event"]["severity"] == "critical"
        aged = receiver.wait_for(lambda e: e["type"] == "ledger.spool_age", "the spool alert")
        assert_one_delivery(aged, "solo")
        assert aged[-1]["event"]["data"]["limit_seconds"] == 2 and aged[-1]["event"]["data"]["age_seconds"] >= 2
    finally:
        relay.restore()
        proc.terminate()
        proc.wait(timeout=30)
        receiver.server.shutdown()


@pytest.mark.parametrize("alerts,key", [
    ({"webhooks": [{"url": "hooks.example.com/x"}]}, "alerts.webhooks[0].url"),
    ({"webhooks": [{"url": "https://hooks.example.com/x", "secret_env": "SIGNALBOX_NO_SUCH_SECRET"}]},
     "alerts.webhooks[0].secret_env"),
    ({"webhooks": [{"url": "https://hooks.example.com/x", "events": ["node.exploded"]}]}, "alerts.webhooks[0].events[0]"),
    ({"balance_below_usd": "lots"}, "alerts.balance_below_usd"),
])
def test_an_alert_configuration_the_node_cannot_use_stops_it_at_start_naming_the_key(alerts, key):
    import subprocess
    from cluster import BINARY
    workdir = tempfile.mkdtemp(prefix="signalbox-badalerts-")
    config = os.path.join(workdir, "signalbox.json")
    with open(config, "w") as file:
        json.dump({"alerts": alerts}, file)
    result = subprocess.run(
        [BINARY, "serve", "--port", str(free_port()), "--sim-port", str(free_port()), "--data-dir", workdir, "--config", config],
        env=dict(os.environ, SIGNALBOX_ADMIN_KEY=ADMIN_KEY, SIGNALBOX_ALERT_SECRET=SECRET), capture_output=True, text=True,
        timeout=30)
    assert result.returncode != 0 and key in result.stderr, result.stderr
