"""The Grafana dashboard in Deploy/grafana uses exactly the metric names a node exports: a node in a
(one-node) cluster serves a few requests, one with a failover and one with overage; every metric any panel queries
must then be in its /metrics, with the GenAI histograms holding those requests."""
import json
import os
import re
import subprocess
import tempfile
import urllib.request

import openai

from conftest import ADMIN_KEY, DEMO_KEY, free_port, wait_until_ready

BINARY = os.environ.get("SIGNALBOX_BIN", ".build/debug/signalbox")
DASHBOARD = os.path.join(os.path.dirname(__file__), "..", "..", "Deploy", "grafana", "signalbox-dashboard.json")
PROMQL_WORDS = {"sum", "by", "rate", "increase", "histogram_quantile", "topk", "max", "min", "le", "without", "avg", "count"}


def metric_names(expr):
    """The metric names a PromQL expression reads: identifiers followed by `{`, `[` or `)` that
    are not functions, keywords or label names."""
    expr = re.sub(r"\{[^}]*\}", "{}", expr)          # label matchers
    expr = re.sub(r"\b(by|without)\s*\([^)]*\)", "", expr)  # grouping labels
    names = set(re.findall(r"\b([a-zA-Z_:][a-zA-Z0-9_:]*)\b\s*(?=[\[{)]|$)", expr))
    return {name for name in names if name not in PROMQL_WORDS and not re.fullmatch(r"[0-9.]+", name)}


def test_every_dashboard_query_reads_a_metric_the_node_exports():
    dashboard = json.load(open(DASHBOARD))
    queries = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    wanted = set().union(*(metric_names(q) for q in queries))
    assert len(queries) >= 15 and len(wanted) >= 20, wanted

    workdir = tempfile.mkdtemp(prefix="signalbox-grafana-")
    key_file = os.path.join(workdir, "cluster.key")
    subprocess.run([BINARY, "cluster", "keygen", "--out", key_file], check=True, capture_output=True)
    port, sim_port = free_port(), free_port()
    log = os.path.join(workdir, "node.log")
    node = subprocess.Popen(
        [BINARY, "serve", "--port", str(port), "--sim-port", str(sim_port), "--data-dir", os.path.join(workdir, "data"),
         "--node-id", "graf-1", "--gossip-bind", f"127.0.0.1:{free_port()}", "--cluster-key-file", key_file,
         "--demo-credits", "1", "--drain-delay", "0", "--load-balancing", "catalog-order"],
        stdout=open(log, "w"), stderr=subprocess.STDOUT, env=dict(os.environ, SIGNALBOX_ADMIN_KEY=ADMIN_KEY, SIGNALBOX_DEMO_KEY=DEMO_KEY))
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(base, node, log)
        client = openai.OpenAI(base_url=base + "/api/v1", api_key=DEMO_KEY, max_retries=0)
        fault = urllib.request.Request(f"http://127.0.0.1:{sim_port}/_sim/faults", method="POST",
                                       data=b'{"provider": "openai", "kind": "status", "status": 503, "count": 1}',
                                       headers={"Content-Type": "application/json"})
        urllib.request.urlopen(fault, timeout=5).read()
        for stream in (False, True):
            reply = client.chat.completions.create(model="openai/gpt-4o-mini", max_tokens=8, stream=stream,
                                                   messages=[{"role": "user", "content": "Metrics, please"}],
                                                   extra_body={"provider": {"order": ["openai", "azure"]}})
            if stream:
                list(reply)
        # An upstream reporting 1,000 times the tokens: the excess is booked as overage.
        urllib.request.urlopen(urllib.request.Request(
            f"http://127.0.0.1:{sim_port}/_sim/faults", method="POST", headers={"Content-Type": "application/json"},
            data=b'{"provider": "openai", "kind": "usage", "factor": 1000, "count": 1}'), timeout=5).read()
        client.chat.completions.create(model="openai/gpt-4o-mini", max_tokens=8, messages=[{"role": "user", "content": "Overage"}],
                                       extra_body={"provider": {"order": ["openai"]}})
        with urllib.request.urlopen(base + "/metrics", timeout=5) as reply:
            exposition = reply.read().decode()
    finally:
        node.terminate()
        node.wait(timeout=20)
    exported = set(re.findall(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)", exposition, re.M))
    missing = sorted(wanted - exported)
    assert missing == [], f"dashboard queries metrics the node does not export: {missing}"
    # The GenAI histograms hold the requests just made (over every provider that served them).
    counts = re.findall(r'^gen_ai_server_time_to_first_token_seconds_count\{[^}]*gen_ai_request_model="openai/gpt-4o-mini"[^}]*\} (\d+)',
                        exposition, re.M)
    assert sum(int(count) for count in counts) >= 3, exposition[:2000]
    assert re.search(r'^gen_ai_client_token_usage_count\{[^}]*gen_ai_token_type="output"', exposition, re.M)
    assert re.search(r'^signalbox_failovers_total \d*[1-9]', exposition, re.M)
    assert re.search(r'^signalbox_spend_usd_total\{[^}]*model="openai/gpt-4o-mini"[^}]*\} [0-9.e-]+', exposition, re.M)
