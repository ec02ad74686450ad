"""Embeddings (`client.embeddings.create`) through the official OpenAI SDK: strings, arrays,
token ids, `dimensions`, base64, from OpenAI-, Azure-, Mistral- and Gemini-format endpoints,
failed over and billed at the endpoint's input price, with the catalog listing the models."""
import base64
import json
import math
import struct

import openai
import pytest

SERVED_BY = [("openai/text-embedding-3-small", "openai", 1536), ("openai/text-embedding-3-large", "azure", 3072),
             ("mistralai/mistral-embed", "mistral", 1024), ("google/gemini-embedding-001", "google-ai-studio", 3072)]


@pytest.fixture
def client(node, key):
    return openai.OpenAI(base_url=node.api, api_key=key, max_retries=0)


def pin(provider):
    return {"provider": {"order": [provider], "allow_fallbacks": False}}


def price(node, model, provider_name):
    author, slug = model.split("/")
    endpoints = node.get(f"/models/{author}/{slug}/endpoints")["data"]["endpoints"]
    return float(next(e for e in endpoints if e["provider_name"] == provider_name)["pricing"]["prompt"])


def test_the_catalog_lists_embeddings_models_of_several_authors(node):
    models = {m["id"]: m for m in node.get("/models")["data"]}
    embeddings = [m for m in models.values() if m["architecture"]["output_modalities"] == ["embeddings"]]
    assert {"openai/text-embedding-3-small", "openai/text-embedding-3-large"} <= {m["id"] for m in embeddings}
    assert len({m["id"].split("/")[0] for m in embeddings}) >= 3
    assert float(models["openai/text-embedding-3-small"]["pricing"]["prompt"]) == pytest.approx(0.02e-6)
    assert float(models["openai/text-embedding-3-small"]["pricing"]["completion"]) == 0


@pytest.mark.parametrize("model,provider,dimensions", SERVED_BY)
def test_vectors_from_every_upstream_format_are_unit_length_and_billed_at_the_input_price(client, node, key, model, provider,
                                                                                         dimensions):
    before = node.get("/key", key)["data"]["usage"]
    raw = client.embeddings.with_raw_response.create(model=model, input=["first text", "second, longer text"],
                                                     extra_body=pin(provider))
    reply = raw.parse()
    assert reply.object == "list" and reply.model == model
    assert [item.index for item in reply.data] == [0, 1]
    for item in reply.data:
        assert len(item.embedding) == dimensions
        assert math.sqrt(sum(v * v for v in item.embedding)) == pytest.approx(1, abs=1e-3)
    assert reply.data[0].embedding != reply.data[1].embedding
    assert reply.usage.prompt_tokens > 0 and reply.usage.total_tokens == reply.usage.prompt_tokens
    generation = raw.headers["x-generation-id"]
    record = node.get(f"/generation?id={generation}", key)["data"]
    record_provider = record["provider_name"]
    expected = reply.usage.prompt_tokens * price(node, model, record_provider)
    assert record["total_cost"] == pytest.approx(expected, rel=1e-6)
    assert node.get("/key", key)["data"]["usage"] - before == pytest.approx(expected, rel=1e-6)


def test_a_vector_depends_on_the_text_model_and_dimensions_never_on_the_provider(client):
    via_openai = client.embeddings.create(model="openai/text-embedding-3-small", input="same text", extra_body=pin("openai"))
    via_azure = client.embeddings.create(model="openai/text-embedding-3-small", input="same text", extra_body=pin("azure"))
    assert via_openai.data[0].embedding == via_azure.data[0].embedding
    other = client.embeddings.create(model="openai/text-embedding-3-large", input="same text", dimensions=1536)
    assert other.data[0].embedding != via_openai.data[0].embedding


@pytest.mark.parametrize("model", ["openai/text-embedding-3-small", "google/gemini-embedding-001"])
def test_dimensions_shorten_the_vector_and_keep_it_unit_length(client, model):
    reply = client.embeddings.create(model=model, input="shorter please", dimensions=256)
    vector = reply.data[0].embedding
    assert len(vector) == 256 and math.sqrt(sum(v * v for v in vector)) == pytest.approx(1, abs=1e-3)


@pytest.mark.parametrize("model", ["openai/text-embedding-3-small", "google/gemini-embedding-001"])
def test_base64_carries_the_same_values_as_little_endian_float32(node, key, model):
    def post(encoding):
        status, answer = node.post_raw("/embeddings", {"model": model, "input": ["one", "two"], "encoding_format": encoding}, key)
        assert status == 200, answer
        return answer
    floats, packed = post("float"), post("base64")
    for plain, encoded in zip(floats["data"], packed["data"]):
        raw = base64.b64decode(encoded["embedding"])
        values = struct.unpack(f"<{len(raw) // 4}f", raw)
        assert values == pytest.approx(plain["embedding"], abs=1e-7)
    # The SDK asks for base64 itself and decodes it: the same values reach the caller.
    sdk = openai.OpenAI(base_url=node.api, api_key=key, max_retries=0).embeddings.create(model=model, input=["one", "two"])
    assert sdk.data[0].embedding == pytest.approx(floats["data"][0]["embedding"], abs=1e-7)


def test_more_texts_than_one_gemini_batch_are_sent_in_batches_and_come_back_in_order(client):
    texts = [f"text number {i}" for i in range(250)]
    reply = client.embeddings.create(model="google/gemini-embedding-001", input=texts, dimensions=8)
    assert [item.index for item in reply.data] == list(range(250))
    single = client.embeddings.create(model="google/gemini-embedding-001", input=texts[137], dimensions=8)
    assert reply.data[137].embedding == single.data[0].embedding


def test_a_fixed_length_model_asked_for_its_own_length_is_not_sent_dimensions(client):
    # OpenAI refuses `dimensions` on ada-002 even at 1,536: the router leaves it out.
    reply = client.embeddings.create(model="openai/text-embedding-ada-002", input="x", dimensions=1536)
    assert len(reply.data[0].embedding) == 1536


def test_token_ids_go_to_an_endpoint_that_takes_them(client):
    one = client.embeddings.create(model="openai/text-embedding-3-small", input=[1, 2, 3])
    many = client.embeddings.create(model="openai/text-embedding-3-small", input=[[1, 2, 3], [4, 5]])
    assert len(one.data) == 1 and len(many.data) == 2
    assert one.usage.prompt_tokens == 3 and many.usage.prompt_tokens == 5
    assert many.data[0].embedding == one.data[0].embedding


def test_a_failing_provider_is_invisible_and_the_serving_one_is_charged(client, node, key):
    node.fault(provider="openai", kind="status", status=503)
    before = node.get("/key", key)["data"]["usage"]
    raw = client.embeddings.with_raw_response.create(model="openai/text-embedding-3-small", input="fail over",
                                                     extra_body={"provider": {"order": ["openai", "azure"]}})
    reply = raw.parse()
    record = node.get(f"/generation?id={raw.headers['x-generation-id']}", key)["data"]
    assert record["provider_name"] == "Azure"
    assert [r["tag"] for r in record["provider_responses"]] == ["openai", "azure"]
    assert node.get("/key", key)["data"]["usage"] - before == pytest.approx(reply.usage.prompt_tokens * 0.02e-6, rel=1e-6)


@pytest.mark.parametrize("fault", [{"kind": "timeout"}, {"kind": "malformed"}, {"kind": "reset"}])
def test_an_upstream_that_hangs_resets_or_garbles_fails_over(client, node, fault):
    node.fault(provider="openai", **fault)
    reply = client.embeddings.create(model="openai/text-embedding-3-small", input="fail over",
                                     extra_body={"provider": {"order": ["openai", "azure"]}})
    assert len(reply.data[0].embedding) == 1536


@pytest.mark.parametrize("body,status,fragment", [
    ('{"model": "openai/text-embedding-3-small"}', 400, "'input' is required"),
    ('{"model": "openai/text-embedding-3-small", "input": ""}', 400, "must not be empty"),
    ('{"model": "openai/text-embedding-3-small", "input": []}', 400, "'input'"),
    ('{"model": "openai/text-embedding-3-small", "input": [1, "x"]}', 400, "'input' must be"),
    ('{"model": "openai/text-embedding-3-small", "input": "x", "encoding_format": "hex"}', 400, "encoding_format"),
    ('{"model": "openai/text-embedding-3-small", "input": "x", "dimensions": 5000}', 400, "at most 1536"),
    ('{"model": "openai/text-embedding-3-small", "input": "x", "dimensions": 2.5e2}', 200, None),
    ('{"model": "openai/text-embedding-3-small", "input": "x", "dimensions": 1e-07}', 400, "'dimensions'"),
    ('{"model": "openai/text-embedding-ada-002", "input": "x", "dimensions": 256}', 400, "always answers 1536"),
    ('{"model": "google/gemini-embedding-001", "input": [1, 2]}', 400, "token ids"),
    ('{"model": "openai/gpt-4o-mini", "input": "x"}', 400, "not an embeddings model"),
    ('{"model": "openai/text-embedding-3-large", "input": ' + json.dumps(["x"] * 400) + '}', 400, "more than 1048576 values"),
    ('{"model": "openai/text-embedding-3-small", "models": ["mistralai/mistral-embed"], "input": "x"}', 400,
     "different lengths"),
    ('{"model": "openai/text-embedding-3-small", "models": ["openai/text-embedding-3-large"], "input": "x", "dimensions": 512}',
     200, None),
    ('{"model": "nobody/no-such-model", "input": "x"}', 400, "not a valid model"),
])
def test_bad_input_is_a_400_and_charges_nothing(node, key, body, status, fragment):
    before = node.get("/key", key)["data"]["usage"]
    code, answer = node.post_raw("/embeddings", body, key)
    assert code == status, answer
    if fragment:
        assert fragment in answer["error"]["message"]
        assert node.get("/key", key)["data"]["usage"] == before


def test_an_embeddings_model_on_chat_is_a_400(client):
    with pytest.raises(openai.BadRequestError) as error:
        client.chat.completions.create(model="openai/text-embedding-3-small", messages=[{"role": "user", "content": "x"}])
    assert "embeddings model" in error.value.message
