"""Traces: a node started with the standard OTEL_* variables posts OTLP/HTTP protobuf spans to a
local receiver (decoded with opentelemetry-proto). A streamed request with one failover makes one
trace under the client's `traceparent`: the request's server span, with planning, both attempts,
the relay and the settlement beneath it, carrying the GenAI attributes and the router's own
(generation, key id, account, region, cost); each attempt's context reaches the simulated
provider. An OTEL_* value the node cannot use stops it at start-up, naming the variable."""
import json
import os
import secrets
import subprocess
import tempfile
import time
import urllib.error
import urllib.request

import openai
import pytest
from opentelemetry.proto.trace.v1 import trace_pb2

from conftest import ADMIN_KEY, DEMO_KEY, free_port, wait_until_ready
from otlp import Receiver, attributes

BINARY = os.environ.get("SIGNALBOX_BIN", ".build/debug/signalbox")
MODEL = "openai/gpt-4o-mini"


@pytest.fixture(scope="module")
def traced_node():
    receiver = Receiver()
    workdir = tempfile.mkdtemp(prefix="signalbox-traces-")
    port, sim_port = free_port(), free_port()
    log = open(os.path.join(workdir, "log"), "w")
    env = dict(os.environ, SIGNALBOX_ADMIN_KEY=ADMIN_KEY, SIGNALBOX_DEMO_KEY=DEMO_KEY,
               OTEL_EXPORTER_OTLP_ENDPOINT=receiver.url, OTEL_SERVICE_NAME="signalbox-under-test")
    proc = subprocess.Popen(
        [BINARY, "serve", "--port", str(port), "--sim-port", str(sim_port), "--data-dir", os.path.join(workdir, "data"),
         "--demo-credits", "1", "--drain-delay", "0", "--region", "eu-test", "--load-balancing", "catalog-order"],
        stdout=log, stderr=subprocess.STDOUT, env=env)
    base = f"http://127.0.0.1:{port}"
    wait_until_ready(base, proc, log.name)
    yield receiver, base, f"http://127.0.0.1:{sim_port}"
    proc.terminate()
    proc.wait(timeout=20)
    receiver.server.shutdown()


def get_json(url, key=None):
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=5) as reply:
        return json.loads(reply.read())


def generation(base, generation_id):
    deadline = time.time() + 10
    while True:
        try:
            return get_json(base + "/api/v1/generation?id=" + generation_id, DEMO_KEY)["data"]
        except urllib.error.HTTPError:
            assert time.time() < deadline
            time.sleep(0.1)


def test_a_streamed_request_with_a_failover_is_one_trace_under_the_clients_traceparent(traced_node):
    receiver, base, sim = traced_node
    urllib.request.urlopen(urllib.request.Request(sim + "/_sim/stats", method="DELETE"), timeout=5).read()
    fault = {"provider": "openai", "kind": "status", "status": 503, "count": 1}
    urllib.request.urlopen(urllib.request.Request(sim + "/_sim/faults", method="POST", data=json.dumps(fault).encode(),
                                                  headers={"Content-Type": "application/json"}), timeout=5).read()
    trace_id, client_span = secrets.token_bytes(16), secrets.token_bytes(8)
    client = openai.OpenAI(base_url=base + "/api/v1", api_key=DEMO_KEY, max_retries=0)
    stream = client.chat.completions.create(
        model=MODEL, max_tokens=24, stream=True, messages=[{"role": "user", "content": "Trace this one"}],
        extra_body={"provider": {"order": ["openai", "azure"]}},
        extra_headers={"traceparent": f"00-{trace_id.hex()}-{client_span.hex()}-01"})
    generation_id = [chunk.id for chunk in stream][-1]
    finished = time.time()

    spans = receiver.trace(trace_id, count=6, seconds=10)
    arrived = time.time() - finished
    by_name = {}
    for resource, span in spans:
        by_name.setdefault(span.name, []).append(span)
    assert len(spans) == 6, sorted(by_name)
    # The batch processor sends within its 5 s schedule (plus the time a post takes).
    assert arrived < 6.5, arrived
    path, content_type = receiver.posts[0]
    assert path == "/v1/traces" and content_type == "application/x-protobuf"
    assert all(resource["service.name"] == "signalbox-under-test" for resource, _ in spans)
    assert all(resource["signalbox.region"] == "eu-test" for resource, _ in spans)

    [root] = by_name["POST /api/v1/chat/completions"]
    assert root.parent_span_id == client_span, "the client's traceparent is the request span's parent"
    assert root.kind == trace_pb2.Span.SPAN_KIND_SERVER
    record = generation(base, generation_id)
    root_attributes = attributes(root.attributes)
    assert root_attributes["http.response.status_code"] == 200
    assert root_attributes["signalbox.generation_id"] == generation_id
    assert root_attributes["gen_ai.request.model"] == MODEL
    assert root_attributes["gen_ai.operation.name"] == "chat"
    assert root_attributes["signalbox.region"] == "eu-test"
    assert root_attributes["signalbox.account"] and root_attributes["signalbox.key_id"]
    assert DEMO_KEY not in json.dumps(root_attributes), "a key id, never the key"
    assert root_attributes["signalbox.attempts"] == 2
    assert root_attributes["gen_ai.usage.input_tokens"] == record["tokens_prompt"]
    assert root_attributes["gen_ai.usage.output_tokens"] == record["tokens_completion"]
    assert float(root_attributes["signalbox.cost_usd"]) == pytest.approx(record["total_cost"], abs=1e-12)

    children = [span for _, span in spans if span.span_id != root.span_id]
    assert all(span.parent_span_id == root.span_id for span in children), "every step hangs under the request's span"
    assert sorted(span.name for span in children) == sorted(["plan", "relay", "settle"] + [f"chat {MODEL}"] * 2)
    failed, answered = sorted(by_name[f"chat {MODEL}"], key=lambda span: span.start_time_unix_nano)
    failed_attributes, answered_attributes = attributes(failed.attributes), attributes(answered.attributes)
    assert failed.kind == answered.kind == trace_pb2.Span.SPAN_KIND_CLIENT
    assert failed_attributes["gen_ai.system"] == "openai" and failed_attributes["http.response.status_code"] == 503
    assert failed_attributes["error.type"] == "503" and failed.status.code == trace_pb2.Status.STATUS_CODE_ERROR
    assert answered_attributes["gen_ai.system"] == "azure" and answered_attributes["http.response.status_code"] == 200
    assert answered.status.code != trace_pb2.Status.STATUS_CODE_ERROR
    assert answered_attributes["gen_ai.usage.output_tokens"] == record["tokens_completion"]
    assert answered_attributes["signalbox.time_to_first_token_ms"] >= 0
    [relay], [settle], [plan] = by_name["relay"], by_name["settle"], by_name["plan"]
    assert plan.end_time_unix_nano <= failed.start_time_unix_nano <= failed.end_time_unix_nano <= answered.start_time_unix_nano
    assert answered.start_time_unix_nano <= relay.start_time_unix_nano <= relay.end_time_unix_nano <= settle.end_time_unix_nano
    assert settle.end_time_unix_nano <= root.end_time_unix_nano
    assert attributes(settle.attributes)["signalbox.receipt"] == "committed"

    # Each attempt's own context reached the simulated provider.
    seen = get_json(sim + "/_sim/stats")["traceparents"]
    assert seen == [f"00-{trace_id.hex()}-{failed.span_id.hex()}-01", f"00-{trace_id.hex()}-{answered.span_id.hex()}-01"]


def test_a_refused_request_is_a_trace_of_its_own_with_the_error(traced_node):
    receiver, base, _ = traced_node
    client = openai.OpenAI(base_url=base + "/api/v1", api_key=DEMO_KEY, max_retries=0)
    trace_id = secrets.token_bytes(16)
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(
            model="nobody/no-such-model", max_tokens=8, messages=[{"role": "user", "content": "x"}],
            extra_headers={"traceparent": f"00-{trace_id.hex()}-{secrets.token_hex(8)}-01"})
    spans = receiver.trace(trace_id, count=2, seconds=10)
    names = sorted(span.name for _, span in spans)
    assert names == ["POST /api/v1/chat/completions", "plan"], names
    root = next(span for _, span in spans if span.name != "plan")
    assert attributes(root.attributes)["http.response.status_code"] == 400
    assert attributes(root.attributes)["error.type"]


@pytest.mark.parametrize("name,value", [
    ("OTEL_TRACES_SAMPLER", "sometimes"),
    ("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4318"),
    ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
    ("OTEL_TRACES_SAMPLER_ARG", "1.5"),
])
def test_an_otel_variable_the_node_cannot_use_stops_it_at_start_naming_the_variable(name, value):
    workdir = tempfile.mkdtemp(prefix="signalbox-badotel-")
    env = dict(os.environ, SIGNALBOX_ADMIN_KEY=ADMIN_KEY, **{name: value})
    result = subprocess.run(
        [BINARY, "serve", "--port", str(free_port()), "--sim-port", str(free_port()), "--data-dir", workdir],
        env=env, capture_output=True, text=True, timeout=30)
    assert result.returncode != 0
    assert name in result.stderr and value in result.stderr, result.stderr


def test_config_check_names_a_trace_setting_it_cannot_use():
    path = os.path.join(tempfile.mkdtemp(prefix="signalbox-badtraces-"), "signalbox.json")
    with open(path, "w") as file:
        json.dump({"telemetry": {"traces": {"endpoint": "http://collector:4318/v1/traces", "sampler": "sometimes"}}}, file)
    result = subprocess.run([BINARY, "config", "check", path], capture_output=True, text=True, timeout=30)
    assert result.returncode != 0 and "telemetry.traces.sampler" in result.stderr, result.stderr
