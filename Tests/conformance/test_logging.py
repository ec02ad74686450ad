"""Structured logs: with --log-format json every line the node writes (banner, start-up, access
lines, shutdown) is one JSON object; each model request has one access line whose fields match its
/generation record; and no prompt, completion or key appears anywhere in the log."""
import json
import os
import subprocess
import tempfile
import time
import urllib.error
import urllib.request

import openai
import pytest

from conftest import ADMIN_KEY, DEMO_KEY, free_port, wait_until_ready

BINARY = os.environ.get("SIGNALBOX_BIN", ".build/debug/signalbox")
PROMPT = "The quick zebra recites prime numbers backwards"


@pytest.fixture(scope="module")
def json_node():
    workdir = tempfile.mkdtemp(prefix="signalbox-jsonlog-")
    port, sim_port = free_port(), free_port()
    out, err = open(os.path.join(workdir, "stdout"), "w"), open(os.path.join(workdir, "stderr"), "w")
    proc = subprocess.Popen(
        [BINARY, "serve", "--port", str(port), "--sim-port", str(sim_port), "--data-dir", os.path.join(workdir, "data"),
         "--demo-credits", "1", "--drain-delay", "0", "--log-format", "json", "--load-balancing", "catalog-order"],
        stdout=out, stderr=err, env=dict(os.environ, SIGNALBOX_ADMIN_KEY=ADMIN_KEY, SIGNALBOX_DEMO_KEY=DEMO_KEY))
    base = f"http://127.0.0.1:{port}"
    wait_until_ready(base, proc, err.name)
    yield proc, base, f"http://127.0.0.1:{sim_port}", out.name, err.name
    if proc.poll() is None:
        proc.terminate()
        proc.wait(timeout=20)


def test_every_line_is_json_and_each_request_has_one_access_line_matching_its_generation(json_node):
    proc, base, sim, stdout, stderr = json_node
    client = openai.OpenAI(base_url=base + "/api/v1", api_key=DEMO_KEY, max_retries=0)
    plain = client.chat.completions.create(model="openai/gpt-4o-mini", max_tokens=16,
                                           messages=[{"role": "user", "content": PROMPT}])
    streamed = client.chat.completions.create(model="openai/gpt-4o-mini", max_tokens=16, stream=True,
                                              messages=[{"role": "user", "content": PROMPT + " streaming"}])
    streamed_id = [chunk.id for chunk in streamed][-1]
    # One failover: the first provider answers 503 once.
    request = urllib.request.Request(sim + "/_sim/faults", method="POST", headers={"Content-Type": "application/json"},
                                     data=json.dumps({"provider": "openai", "kind": "status", "status": 503, "count": 1}).encode())
    urllib.request.urlopen(request, timeout=5).read()
    failover = client.chat.completions.create(model="openai/gpt-4o-mini", max_tokens=16,
                                              messages=[{"role": "user", "content": PROMPT}],
                                              extra_body={"provider": {"order": ["openai", "azure"]}})
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="nobody/no-such-model", max_tokens=16, messages=[{"role": "user", "content": PROMPT}])
    completion_text = plain.choices[0].message.content
    generations = {}
    for generation_id in (plain.id, streamed_id, failover.id):
        deadline = time.time() + 10
        while True:
            request = urllib.request.Request(base + "/api/v1/generation?id=" + generation_id,
                                             headers={"Authorization": f"Bearer {DEMO_KEY}"})
            try:
                with urllib.request.urlopen(request, timeout=5) as reply:
                    generations[generation_id] = json.loads(reply.read())["data"]
                    break
            except urllib.error.HTTPError:
                assert time.time() < deadline
                time.sleep(0.1)
    proc.terminate()
    proc.wait(timeout=20)

    lines = open(stdout).read().splitlines() + open(stderr).read().splitlines()
    records = [json.loads(line) for line in lines]  # every line parses
    assert all({"time", "level", "logger", "message"} <= record.keys() for record in records)
    banner = next(r for r in records if r["message"] == "serving")
    assert banner["admin_key"].startswith("key-") and banner["url"].startswith("http://")

    access = [r for r in records if r["logger"] == "signalbox.access"]
    by_generation = {r["generation"]: r for r in access if "generation" in r}
    assert len(access) == 4, access
    for generation_id, attempts in ((plain.id, 1), (streamed_id, 1), (failover.id, 2)):
        line, record = by_generation[generation_id], generations[generation_id]
        assert int(line["tokens_in"]) == record["tokens_prompt"] and int(line["tokens_out"]) == record["tokens_completion"]
        assert float(line["cost"]) == pytest.approx(record["total_cost"], abs=1e-12) and line["model"] == record["model"]
        assert int(line["first_token_ms"]) == record["latency"]
        assert line["status"] == "200" and line["outcome"] == "success" and line["model"] == "openai/gpt-4o-mini"
        assert int(line["attempts"]) == attempts and line["account"] == "demo" and line["key"].startswith("key-")
        assert int(line["tokens_in"]) > 0 and int(line["tokens_out"]) > 0 and float(line["cost"]) > 0
        assert int(line["total_ms"]) >= int(line["first_token_ms"]) >= 0
    assert by_generation[streamed_id]["streamed"] == "true" and by_generation[plain.id]["streamed"] == "false"
    refused = [r for r in access if r.get("outcome") == "refused"]
    assert len(refused) == 1 and refused[0]["status"] == "400" and refused[0]["model"] == "nobody/no-such-model"

    # Nothing anyone typed or any key, anywhere in the log.
    text = "\n".join(lines)
    for secret in (PROMPT, completion_text, DEMO_KEY, ADMIN_KEY, DEMO_KEY[len("sk-sb-v1-"):]):
        assert secret not in text, secret[:20]
