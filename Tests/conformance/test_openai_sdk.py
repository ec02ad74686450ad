"""The official OpenAI Python SDK, pointed at Signalbox, works unchanged."""
import openai
import pytest

HELLO = [{"role": "user", "content": "Say hello to the conformance suite"}]


@pytest.fixture
def client(node):
    return openai.OpenAI(base_url=node.api, api_key=node.demo_key, max_retries=0)


def test_lists_the_shipped_catalog(client):
    ids = [m.id for m in client.models.list()]
    assert len(ids) >= 40
    for popular in ["openai/gpt-4o-mini", "openai/gpt-4o", "anthropic/claude-sonnet-4", "google/gemini-2.5-flash",
                    "meta-llama/llama-3.3-70b-instruct", "deepseek/deepseek-chat"]:
        assert popular in ids
    assert sum(1 for i in ids if i.endswith(":free")) >= 8


def test_non_streamed_completion_reports_generation_provider_and_cost(client):
    # an explicit order pins the provider (earlier tests may have left OpenAI marked as recently failed)
    raw = client.chat.completions.with_raw_response.create(model="openai/gpt-4o-mini", messages=HELLO, max_tokens=50,
                                                           extra_body={"provider": {"order": ["openai"]}})
    completion = raw.parse()
    assert completion.id.startswith("gen-")
    assert raw.headers["x-generation-id"] == completion.id
    assert completion.model == "openai/gpt-4o-mini"
    assert completion.model_extra["provider"] == "OpenAI"
    assert completion.choices[0].message.role == "assistant"
    assert completion.choices[0].message.content
    assert completion.choices[0].finish_reason in ("stop", "length")
    assert completion.usage.prompt_tokens > 0 and completion.usage.completion_tokens > 0
    assert completion.usage.total_tokens == completion.usage.prompt_tokens + completion.usage.completion_tokens
    assert completion.usage.model_extra["cost"] > 0


def test_stream_delivers_the_same_text_as_the_plain_answer(client):
    plain = client.chat.completions.create(model="deepseek/deepseek-chat", messages=HELLO, max_tokens=40)
    stream = client.chat.completions.create(model="deepseek/deepseek-chat", messages=HELLO, max_tokens=40, stream=True)
    text, usage_chunks, ids = "", [], set()
    for chunk in stream:
        ids.add(chunk.id)
        if chunk.choices:
            text += chunk.choices[0].delta.content or ""
        if chunk.usage is not None:
            usage_chunks.append(chunk)
    assert text == plain.choices[0].message.content
    assert len(ids) == 1 and next(iter(ids)).startswith("gen-")
    # usage is always reported, in exactly one final chunk with no choices
    assert len(usage_chunks) == 1 and usage_chunks[0].choices == []
    assert usage_chunks[0].usage.completion_tokens == plain.usage.completion_tokens


def test_stream_with_include_usage(client):
    stream = client.chat.completions.create(model="openai/gpt-4o-mini", messages=HELLO, stream=True, max_tokens=20,
                                            stream_options={"include_usage": True})
    chunks = list(stream)
    assert chunks[-1].usage is not None and chunks[-1].usage.model_extra["cost"] > 0
    assert any(c.choices and c.choices[0].finish_reason in ("stop", "length") for c in chunks)


def test_bad_key_is_an_authentication_error(node):
    bad = openai.OpenAI(base_url=node.api, api_key="sk-sb-v1-not-a-real-key", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as error:
        bad.chat.completions.create(model="openai/gpt-4o-mini", messages=HELLO)
    assert error.value.status_code == 401


def test_unknown_model_is_a_bad_request(client):
    with pytest.raises(openai.BadRequestError) as error:
        client.chat.completions.create(model="nobody/no-such-model", messages=HELLO)
    assert "not a valid model" in error.value.message


def test_malformed_messages_are_a_bad_request(client):
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="openai/gpt-4o-mini", messages="not a list")


def test_unaffordable_request_is_payment_required(client):
    # the suite's demo account holds $0.05; 16k tokens of gpt-4o cost up to $0.16
    with pytest.raises(openai.APIStatusError) as error:
        client.chat.completions.create(model="openai/gpt-4o", messages=HELLO, max_tokens=16000)
    assert error.value.status_code == 402
    assert "can only afford" in error.value.message


def test_failover_serves_from_the_next_provider(node, client):
    node.fault(provider="openai", kind="status", status=500)
    completion = client.chat.completions.create(model="openai/gpt-4o-mini", messages=HELLO, max_tokens=20)
    assert completion.model_extra["provider"] == "Azure"


def test_all_providers_rate_limited_is_a_rate_limit_error(node, client):
    node.fault(provider="openai", kind="status", status=429)
    node.fault(provider="azure", kind="status", status=429)
    with pytest.raises(openai.RateLimitError) as error:
        client.chat.completions.create(model="openai/gpt-4o-mini", messages=HELLO, max_tokens=20)
    assert error.value.status_code == 429
    assert len(error.value.body["metadata"]["previous_errors"]) == 2


def test_stream_broken_mid_way_ends_with_an_error_and_is_not_charged(node, client):
    before = node.get("/key")["data"]["usage"]
    node.fault(provider="xai", kind="drop_after_chunks", after_chunks=3)
    stream = client.chat.completions.create(model="x-ai/grok-4.3", messages=HELLO, stream=True, max_tokens=30)
    received = ""
    with pytest.raises(openai.APIError):
        for chunk in stream:
            if chunk.choices:
                received += chunk.choices[0].delta.content or ""
    assert received  # tokens reached the client before the upstream broke
    assert node.get("/key")["data"]["usage"] == before
