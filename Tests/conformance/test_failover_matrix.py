"""With one of a model's two providers failing in any way the simulator can fail, the OpenAI SDK
sees a normal completion from the other, and the account is charged exactly once, at the price
of the endpoint that served."""
import openai
import pytest

FAULTS = [
    {"kind": "status", "status": 500}, {"kind": "status", "status": 502}, {"kind": "status", "status": 503},
    {"kind": "status", "status": 529}, {"kind": "status", "status": 429}, {"kind": "status", "status": 408},
    {"kind": "status", "status": 401}, {"kind": "timeout"}, {"kind": "reset"}, {"kind": "malformed"},
    {"kind": "slow", "delay_ms": 4000}, {"kind": "stall", "after_chunks": 1}, {"kind": "drop_after_chunks", "after_chunks": 1},
    {"kind": "stream_error", "after_chunks": 1},
    # these strike after tokens were produced: a plain request still fails over, a stream cannot
    {"kind": "stall", "after_chunks": 4}, {"kind": "drop_after_chunks", "after_chunks": 4},
    {"kind": "stream_error", "after_chunks": 4},
]
MID_STREAM = {("stall", 4), ("drop_after_chunks", 4), ("stream_error", 4)}


def label(fault):
    return "-".join(str(v) for v in fault.values())


# After tokens reached a streaming client, a failure ends the stream with an error chunk instead
# (GatewayTests' fault matrix covers that); every other combination must fail over unseen.
CASES = [pytest.param(fault, stream, id=f"{'stream' if stream else 'plain'}-{label(fault)}")
         for fault in FAULTS for stream in (False, True)
         if not (stream and (fault["kind"], fault.get("after_chunks")) in MID_STREAM)]


@pytest.mark.parametrize("fault,stream", CASES)
def test_one_failing_provider_is_invisible_to_the_client(node, fault, stream):
    client = openai.OpenAI(base_url=node.api, api_key=node.demo_key, max_retries=0)
    node.fault(provider="openai", **fault)
    before = node.get("/key")["data"]["usage"]
    ask = dict(model="openai/gpt-4o-mini", max_tokens=20, messages=[{"role": "user", "content": "Fail over, please"}],
               extra_body={"provider": {"order": ["openai", "azure"]}})
    if stream:
        chunks = list(client.chat.completions.create(stream=True, **ask))
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        provider, usage, generation = chunks[0].model_extra["provider"], chunks[-1].usage, chunks[0].id
    else:
        reply = client.chat.completions.create(**ask)
        text, provider, usage, generation = reply.choices[0].message.content, reply.model_extra["provider"], reply.usage, reply.id
    assert text and provider == "Azure"
    record = node.get(f"/generation?id={generation}")["data"]
    assert record["provider_name"] == "Azure"
    assert [r["tag"] for r in record["provider_responses"]] == ["openai", "azure"]
    charged = node.get("/key")["data"]["usage"] - before
    assert charged == pytest.approx(usage.model_extra["cost"]) and charged == pytest.approx(record["total_cost"])
    # Azure's list price for gpt-4o-mini: $0.15/M prompt, $0.60/M completion
    assert usage.model_extra["cost"] == pytest.approx(usage.prompt_tokens * 0.15e-6 + usage.completion_tokens * 0.6e-6)
