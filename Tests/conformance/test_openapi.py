"""The OpenAPI document: a node serves Docs/openapi.json at /api/v1/openapi.json, and schemathesis
(PyPI) fuzzes a live node against it with a bounded number of examples per operation — no 5xx,
every status and content type documented, every answer matching its schema, and no operation that
needs a key answering without one. (Every registered route is in the document: the Swift test
OpenAPIDocumentTests checks that against the router.)"""
import json
import os
import subprocess
import tempfile
import urllib.request

import pytest

from conftest import ADMIN_KEY, DEMO_KEY, free_port, wait_until_ready

BINARY = os.environ.get("SIGNALBOX_BIN", ".build/debug/signalbox")
DOCUMENT = os.path.join(os.path.dirname(__file__), "..", "..", "Docs", "openapi.json")
CHECKS = "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance"


@pytest.fixture(scope="module")
def api_node():
    workdir = tempfile.mkdtemp(prefix="signalbox-openapi-")
    port, sim_port = free_port(), free_port()
    log = open(os.path.join(workdir, "log"), "w")
    proc = subprocess.Popen(
        [BINARY, "serve", "--port", str(port), "--sim-port", str(sim_port), "--data-dir", os.path.join(workdir, "data"),
         "--demo-credits", "5", "--drain-delay", "0", "--no-access-log"],
        stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ, SIGNALBOX_ADMIN_KEY=ADMIN_KEY, SIGNALBOX_DEMO_KEY=DEMO_KEY))
    base = f"http://127.0.0.1:{port}"
    wait_until_ready(base, proc, log.name)
    yield base, workdir, log.name
    proc.terminate()
    proc.wait(timeout=20)


def test_the_node_serves_the_committed_document(api_node):
    base, _, _ = api_node
    with urllib.request.urlopen(base + "/api/v1/openapi.json", timeout=5) as reply:
        served = json.loads(reply.read())
        assert reply.headers["Content-Type"] == "application/json"
    with open(DOCUMENT) as file:
        committed = json.load(file)
    assert served == committed
    assert served["openapi"] == "3.1.0" and len(served["paths"]) > 50


@pytest.mark.parametrize("name,selection,key", [
    # The inference and account routes with a customer key (an operator key may not make model requests).
    ("inference", ["--include-tag", "inference", "--include-tag", "anthropic", "--include-tag", "account"], DEMO_KEY),
    # Probes, catalog, key management and the admin API with the operator key.
    ("operator", ["--exclude-tag", "inference", "--exclude-tag", "anthropic", "--exclude-tag", "account",
                  "--exclude-tag", "console"], ADMIN_KEY),
    # The console's pages and forms without a session: sign-in redirects and refusals, in HTML.
    ("console", ["--include-tag", "console"], None),
])
def test_schemathesis_finds_no_failure(api_node, name, selection, key):
    base, workdir, log = api_node
    checks = CHECKS + (",ignored_auth" if key else "")
    command = ["schemathesis", "run", DOCUMENT, "--url", base, "--checks", checks, "--max-examples", "10", "--seed", "1",
               "--phases", "coverage,fuzzing", "--max-redirects", "0", "--request-timeout", "30", "--no-shrink",
               "--max-failures", "20", "--report", "junit", "--report-junit-path", os.path.join(workdir, name + ".xml")]
    command += selection + (["--header", f"Authorization: Bearer {key}"] if key else [])
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-12000:] + result.stderr[-2000:]
    assert "generated" in result.stdout and " 0 generated" not in result.stdout, result.stdout[-3000:]
    # The node is still up and unharmed.
    with urllib.request.urlopen(base + "/healthz", timeout=5) as reply:
        assert reply.status == 200
