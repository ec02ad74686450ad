"""Regions and data residency with real processes: two regions on one PostgreSQL ledger. A pinned
request is served only by its region's endpoints, forwarded to a live node of its region, or
refused — never served out of region. Runs where PostgreSQL is configured (always in CI)."""
import json
import os
import signal
import subprocess
import tempfile
import urllib.error
import urllib.request

import pytest

from cluster import GossipNode, cli, fresh_database, keygen, wait_until
from conftest import free_port
from otlp import Receiver, attributes

pytestmark = pytest.mark.skipif(not os.environ.get("SIGNALBOX_TEST_DATABASE_URL") and not os.environ.get("CI"),
                                reason="no PostgreSQL configured for this run")


def chat(node, key, model="mistralai/ministral-14b-2512", headers=None):
    body = {"model": model, "max_tokens": 10, "messages": [{"role": "user", "content": "Where am I served?"}]}
    request = urllib.request.Request(node.base + "/api/v1/chat/completions", data=json.dumps(body).encode(),
                                     headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json",
                                              **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=30, context=node.context) as response:
            return response.status, dict(response.headers), json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), json.loads(error.read())


@pytest.fixture
def regions():
    workdir = tempfile.mkdtemp(prefix="signalbox-regions-")
    database_url = fresh_database(os.environ["SIGNALBOX_TEST_DATABASE_URL"])
    cli("migrate", database_url=database_url)
    key_file = keygen(os.path.join(workdir, "cluster.key"))
    seed_port = free_port()
    extra = ("--database-url", database_url)
    # Both nodes export traces: a forwarded request is one trace across the two.
    receiver = Receiver()
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url, "OTEL_BSP_SCHEDULE_DELAY": "500"}
    eu = GossipNode("eu-1", workdir, key_file, f"127.0.0.1:{seed_port}", gossip_port=seed_port, region="eu", extra=extra,
                    env=env)
    us = GossipNode("us-1", workdir, key_file, f"127.0.0.1:{seed_port}", region="us", extra=extra, env=env)
    wait_until(lambda: eu.ready() and us.ready() and len(us.members()) == 2, 60, "both regions to join")
    yield eu, us, database_url, receiver
    for node in (eu, us):
        node.stop(signal.SIGKILL)
    receiver.server.shutdown()


def account(database_url, region=None):
    args = ["accounts", "create", "--name", "Resident"] + (["--region", region] if region else [])
    account = cli(*args, database_url=database_url)["id"]
    cli("credits", "grant", "--account", account, "--amount", "5", database_url=database_url)
    return account


def test_a_pinned_request_is_forwarded_to_its_region_and_served_only_there(regions):
    eu, us, database_url, receiver = regions
    resident = account(database_url, region="eu")
    key = cli("keys", "create", "--account", resident, database_url=database_url)["key"]

    trace_id, client_span = os.urandom(16), os.urandom(8)
    traceparent = {"traceparent": f"00-{trace_id.hex()}-{client_span.hex()}-01"}
    status, headers, body = chat(us, key, headers=traceparent)  # arrives in us, belongs in eu
    assert status == 200, body
    assert headers.get("X-Signalbox-Served-By") == "eu-1"
    # One trace across both regions: us's request span, its forward span, and under that eu's
    # request span with its attempt, which the eu endpoint served.
    spans = {span.name + "@" + resource["service.instance.id"]: span
             for resource, span in receiver.trace(trace_id, count=7, seconds=10)}
    arrived, forward = spans["POST /api/v1/chat/completions@us-1"], spans["forward eu@us-1"]
    served = spans["POST /api/v1/chat/completions@eu-1"]
    assert arrived.parent_span_id == client_span and forward.parent_span_id == arrived.span_id
    assert served.parent_span_id == forward.span_id
    attempt = spans["chat mistralai/ministral-14b-2512@eu-1"]
    assert attempt.parent_span_id == served.span_id and attributes(attempt.attributes)["gen_ai.system"] == "mistral"
    assert attributes(served.attributes)["signalbox.region"] == "eu"
    assert body["provider"] == "Mistral"  # the eu endpoint; Together and Fireworks (us) are never used
    status, _, body = chat(eu, key)
    assert status == 200 and body["provider"] == "Mistral"
    # A model with no endpoint in the region is refused, not served elsewhere.
    status, _, body = chat(eu, key, model="openai/gpt-4o-mini")
    assert status == 404 and body["error"]["metadata"]["region"] == "eu"

    # Unpinned accounts are served where they arrive.
    free = cli("keys", "create", "--account", account(database_url), database_url=database_url)["key"]
    status, headers, body = chat(us, free, model="openai/gpt-4o-mini")
    assert status == 200 and "X-Signalbox-Served-By" not in headers

    # A key's own pin overrides its account's.
    us_key = cli("keys", "create", "--account", resident, "--region", "us", database_url=database_url)["key"]
    status, headers, body = chat(eu, us_key)
    assert status == 200 and headers.get("X-Signalbox-Served-By") == "us-1" and body["provider"] in ("Together", "Fireworks")

    # With no live node in eu, the request is refused with a clear error.
    eu.stop(signal.SIGTERM)
    wait_until(lambda: us.members()["eu-1"]["state"] == "left", 10, "eu-1 to leave")
    status, _, body = chat(us, key)
    assert status == 503 and body["error"]["metadata"]["reason"] == "region_unavailable"
    served = cli("ledger", "entries", "--account", resident, "--kind", "charge", database_url=database_url)
    assert {entry["provider"] for entry in served} <= {"mistral", "together", "fireworks"}
    assert [e for e in served if e["provider"] == "mistral"] and len(served) == 3


def test_the_free_tier_limit_holds_across_three_nodes(regions):
    import threading
    import time
    eu, us, database_url, _ = regions
    third = GossipNode("eu-2", eu.workdir, eu.key_file, eu.gossip, region="eu", extra=("--database-url", database_url))
    try:
        wait_until(lambda: third.ready() and len([m for m in us.members().values() if m["state"] == "alive"]) == 3, 30, "a third node")
        key = cli("keys", "create", "--account", account(database_url), database_url=database_url)["key"]
        if time.time() % 60 > 45:  # the per-minute window must not roll over mid-test
            time.sleep(61 - time.time() % 60)
        statuses, lock = [], threading.Lock()

        def hammer(node):
            for _ in range(15):
                status, _, body = chat(node, key, model="mistralai/mistral-nemo:free")
                with lock:
                    statuses.append((status, body))

        threads = [threading.Thread(target=hammer, args=(node,)) for node in (eu, us, third) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        admitted = sum(1 for status, _ in statuses if status == 200)
        limited = [body for status, body in statuses if status == 429]
        print(f"\nfree tier across 3 nodes: {admitted} of 90 admitted against a limit of 20 a minute")
        assert 20 <= admitted <= 20 + 3  # the documented overshoot: requests admitted within one push
        assert len(limited) == 90 - admitted
        assert "20 requests per minute" in limited[0]["error"]["message"]
    finally:
        third.stop(signal.SIGKILL)


def make_ca_and_certificate(workdir):
    """A throwaway CA and a certificate for 127.0.0.1 signed by it (openssl)."""
    def run(*args):
        subprocess.run(["openssl", *args], check=True, capture_output=True)
    ca_key, ca, key, csr, cert = (os.path.join(workdir, name) for name in ("ca.key", "ca.pem", "node.key", "node.csr", "node.pem"))
    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", ca_key, "-out", ca, "-days", "1", "-subj", "/CN=signalbox test CA")
    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", csr, "-subj", "/CN=127.0.0.1")
    extensions = os.path.join(workdir, "san.cnf")
    open(extensions, "w").write("subjectAltName=IP:127.0.0.1\n")
    run("x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial", "-out", cert, "-days", "1", "-extfile", extensions)
    return ca, cert, key


def test_forwarding_between_nodes_runs_over_tls():
    workdir = tempfile.mkdtemp(prefix="signalbox-tls-")
    ca, cert, key = make_ca_and_certificate(workdir)
    database_url = fresh_database(os.environ["SIGNALBOX_TEST_DATABASE_URL"])
    cli("migrate", database_url=database_url)
    key_file = keygen(os.path.join(workdir, "cluster.key"))
    seed_port = free_port()
    extra = ("--database-url", database_url, "--tls-cert", cert, "--tls-key", key, "--peer-ca-file", ca)
    eu = GossipNode("eu-1", workdir, key_file, f"127.0.0.1:{seed_port}", gossip_port=seed_port, region="eu", extra=extra)
    us = GossipNode("us-1", workdir, key_file, f"127.0.0.1:{seed_port}", region="us", extra=extra)
    try:
        wait_until(lambda: eu.ready() and us.ready() and len(us.members()) == 2, 60, "both regions to join over HTTPS")
        assert eu.base.startswith("https://")
        resident = account(database_url, region="eu")
        api_key = cli("keys", "create", "--account", resident, database_url=database_url)["key"]
        status, headers, body = chat(us, api_key)
        assert status == 200, body
        assert headers.get("X-Signalbox-Served-By") == "eu-1"
        # Plain HTTP to a TLS node gets nowhere: the key would otherwise cross in cleartext.
        with pytest.raises(Exception):
            urllib.request.urlopen(f"http://127.0.0.1:{eu.port}/readyz", timeout=5).read()
    finally:
        for node in (eu, us):
            node.stop(signal.SIGKILL)


def post(node, key, path, body, headers=None):
    request = urllib.request.Request(node.base + "/api/v1" + path, data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json", **(headers or {"Authorization": f"Bearer {key}"})})
    try:
        with urllib.request.urlopen(request, timeout=30, context=node.context) as response:
            return response.status, dict(response.headers), json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), json.loads(error.read())


def test_every_front_of_a_pinned_key_is_forwarded_on_its_own_route(regions):
    """A key pinned to eu, arriving in us on Messages, Responses, legacy completions or
    embeddings, is served in eu on the same route and answered in that route's shape."""
    eu, us, database_url, _ = regions
    resident = account(database_url, region="eu")
    key = cli("keys", "create", "--account", resident, database_url=database_url)["key"]
    model, ask = "mistralai/ministral-14b-2512", "Where am I served?"
    calls = [
        ("/messages", {"model": model, "max_tokens": 10, "messages": [{"role": "user", "content": ask}]}, {"x-api-key": key},
         lambda body: body["type"] == "message" and body["content"][0]["text"]),
        ("/responses", {"model": model, "input": ask, "max_output_tokens": 10}, None,
         lambda body: body["object"] == "response" and body["output"][0]["type"] == "message"),
        ("/completions", {"model": model, "prompt": ask, "max_tokens": 10}, None,
         lambda body: body["object"] == "text_completion" and body["choices"][0]["text"]),
        ("/embeddings", {"model": "mistralai/mistral-embed", "input": ask}, None,
         lambda body: body["object"] == "list" and len(body["data"][0]["embedding"]) == 1024),
    ]
    for path, body, headers, shaped in calls:
        status, reply_headers, reply = post(us, key, path, body, headers)
        assert status == 200, (path, reply)
        assert reply_headers.get("X-Signalbox-Served-By") == "eu-1", path
        assert shaped(reply), (path, reply)
        assert reply["provider"] == "Mistral", path
