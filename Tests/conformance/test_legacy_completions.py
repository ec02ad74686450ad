"""Legacy text completions (`client.completions.create`) through the official OpenAI SDK: a prompt
in, `choices[].text` out, served by chat models of every upstream format, failed over and billed
exactly as chat is."""
import openai
import pytest

PROMPT = "Say hello to the legacy completions suite"


@pytest.fixture
def client(node, key):
    return openai.OpenAI(base_url=node.api, api_key=key, max_retries=0)


@pytest.mark.parametrize("model", ["openai/gpt-4o-mini", "anthropic/claude-sonnet-4", "google/gemini-2.5-flash"])
def test_a_prompt_gets_the_text_the_chat_route_gives_and_is_billed_once(client, key, node, model):
    before = node.get("/key", key)["data"]["usage"]
    raw = client.completions.with_raw_response.create(model=model, prompt=PROMPT, max_tokens=30)
    completion = raw.parse()
    chat = client.chat.completions.create(model=model, messages=[{"role": "user", "content": PROMPT}], max_tokens=30)
    assert completion.object == "text_completion"
    assert completion.id.startswith("gen-") and raw.headers["x-generation-id"] == completion.id
    assert completion.model == model
    assert completion.choices[0].text and completion.choices[0].text == chat.choices[0].message.content
    assert completion.choices[0].finish_reason in ("stop", "length")
    assert completion.usage.prompt_tokens > 0 and completion.usage.completion_tokens > 0
    record = node.get(f"/generation?id={completion.id}", key)["data"]
    cost = completion.usage.model_extra["cost"]
    assert cost > 0 and record["total_cost"] == pytest.approx(cost)
    charged = node.get("/key", key)["data"]["usage"] - before
    assert charged == pytest.approx(cost + chat.usage.model_extra["cost"])


def test_a_streamed_prompt_delivers_the_same_text_and_one_usage_chunk(client):
    plain = client.completions.create(model="deepseek/deepseek-chat", prompt=PROMPT, max_tokens=40)
    chunks = list(client.completions.create(model="deepseek/deepseek-chat", prompt=PROMPT, max_tokens=40, stream=True,
                                            stream_options={"include_usage": True}))
    assert {c.object for c in chunks} == {"text_completion"}
    assert len({c.id for c in chunks}) == 1
    text = "".join(c.choices[0].text for c in chunks if c.choices)
    assert text == plain.choices[0].text
    usage = [c for c in chunks if c.usage is not None]
    assert len(usage) == 1 and usage[0].choices == [] and usage[0] is chunks[-1]
    assert usage[0].usage.completion_tokens == plain.usage.completion_tokens
    assert any(c.choices and c.choices[0].finish_reason in ("stop", "length") for c in chunks)


def test_several_choices_come_back_indexed(client):
    completion = client.completions.create(model="openai/gpt-4o-mini", prompt=PROMPT, max_tokens=10, n=2)
    assert sorted(choice.index for choice in completion.choices) == [0, 1]


@pytest.mark.parametrize("stream", [False, True])
def test_a_failing_provider_is_invisible_and_the_serving_one_is_charged(client, key, node, stream):
    node.fault(provider="openai", kind="status", status=503)
    before = node.get("/key", key)["data"]["usage"]
    ask = dict(model="openai/gpt-4o-mini", prompt=PROMPT, max_tokens=20, extra_body={"provider": {"order": ["openai", "azure"]}})
    if stream:
        chunks = list(client.completions.create(stream=True, stream_options={"include_usage": True}, **ask))
        text = "".join(c.choices[0].text for c in chunks if c.choices)
        generation, usage, provider = chunks[0].id, chunks[-1].usage, chunks[0].model_extra["provider"]
    else:
        reply = client.completions.create(**ask)
        text, generation, usage, provider = reply.choices[0].text, reply.id, reply.usage, reply.model_extra["provider"]
    assert text and provider == "Azure"
    record = node.get(f"/generation?id={generation}", key)["data"]
    assert [r["tag"] for r in record["provider_responses"]] == ["openai", "azure"]
    charged = node.get("/key", key)["data"]["usage"] - before
    assert charged == pytest.approx(usage.model_extra["cost"])
    # Azure's list price for gpt-4o-mini: $0.15/M prompt, $0.60/M completion
    assert charged == pytest.approx(usage.prompt_tokens * 0.15e-6 + usage.completion_tokens * 0.6e-6)


@pytest.mark.parametrize("body,fragment", [
    ({"model": "openai/gpt-4o-mini"}, "'prompt' is required"),
    ({"model": "openai/gpt-4o-mini", "prompt": 42}, "'prompt' must be"),
    ({"model": "openai/gpt-4o-mini", "prompt": ["one", "two"]}, "more than one prompt"),
    ({"model": "openai/gpt-4o-mini", "prompt": [1, 2, 3]}, "token ids"),
    ({"model": "openai/gpt-4o-mini", "prompt": "x", "echo": True}, "'echo'"),
    ({"model": "openai/gpt-4o-mini", "prompt": "x", "best_of": 3}, "'best_of'"),
    ({"model": "openai/gpt-4o-mini", "prompt": "x", "max_tokens": 1e-07}, "'max_tokens'"),
    ({"model": "nobody/no-such-model", "prompt": "x"}, "not a valid model"),
])
def test_bad_input_is_a_400_in_the_openai_shape_and_charges_nothing(node, key, body, fragment):
    import json
    import urllib.error
    import urllib.request
    before = node.get("/key", key)["data"]["usage"]
    request = urllib.request.Request(node.api + "/completions", data=json.dumps(body).encode(), method="POST",
                                     headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as error:
        urllib.request.urlopen(request, timeout=10)
    assert error.value.code == 400
    answer = json.loads(error.value.read())
    assert fragment in answer["error"]["message"] and answer["error"]["code"] == 400
    assert node.get("/key", key)["data"]["usage"] == before


def test_a_bad_key_is_an_authentication_error(node):
    bad = openai.OpenAI(base_url=node.api, api_key="sk-sb-v1-not-a-real-key", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.completions.create(model="openai/gpt-4o-mini", prompt=PROMPT)
