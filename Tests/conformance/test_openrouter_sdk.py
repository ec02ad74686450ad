"""The official OpenRouter Python SDK validates every response against OpenRouter's schema;
pointed at Signalbox it must work unchanged."""
import pytest
from openrouter import OpenRouter

HELLO = [{"role": "user", "content": "Hello from the OpenRouter SDK"}]


@pytest.fixture
def client(node):
    with OpenRouter(api_key=node.demo_key, server_url=node.api) as c:
        yield c


def test_models_endpoints_and_providers(client):
    models = client.models.list().result.data
    assert len(models) >= 40
    endpoints = client.endpoints.list(author="meta-llama", slug="llama-3.3-70b-instruct").data.endpoints
    assert len({e.provider_name for e in endpoints}) >= 2
    assert all(e.pricing.prompt and e.tag for e in endpoints)
    providers = {p.slug for p in client.providers.list().data}
    assert {"openai", "anthropic", "deepinfra"} <= providers


def test_chat_and_generation_agree_on_cost(client):
    result = client.chat.send(model="openai/gpt-4o-mini", messages=HELLO, max_tokens=30, provider={"order": ["openai"]})
    assert result.id.startswith("gen-")
    generation = client.generations.get_generation(id=result.id).data
    assert generation.id == result.id
    assert generation.model == "openai/gpt-4o-mini"
    assert generation.provider_name == "OpenAI"
    assert generation.total_cost == pytest.approx(result.usage.cost)
    assert generation.tokens_completion == result.usage.completion_tokens


def test_streamed_chat(client):
    text = ""
    for event in client.chat.send(model="openai/gpt-4o-mini", messages=HELLO, max_tokens=30, stream=True):
        if event.choices:
            text += event.choices[0].delta.content or ""
    assert text


def test_key_info_and_credits(client):
    key = client.api_keys.get_current_key_metadata().data
    assert key.label.startswith("sk-sb-v1-")
    assert key.is_free_tier is True
    assert key.usage >= 0
    credits = client.credits.get_credits().data
    assert credits.total_credits == pytest.approx(0.05)
    assert credits.total_usage >= key.usage - 1e-12
