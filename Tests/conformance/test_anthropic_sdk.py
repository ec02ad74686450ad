"""The official Anthropic Python SDK — what Claude Code is built on — pointed at Signalbox with
`base_url=http://host/api`: messages plain and streamed, tools, images, thinking, count_tokens and
errors in Anthropic's shape, whichever upstream format serves the model, failed over and billed
as chat is."""
import base64

import anthropic
import pytest

HELLO = [{"role": "user", "content": "Say hello to the Messages suite"}]
WEATHER = {"name": "get_weather", "description": "Current weather in a city",
           "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}
# A 1×1 transparent PNG.
PIXEL = base64.b64encode(bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360000002000154a24f5d0000000049454e44ae426082")).decode()
# One model per upstream wire format, each pinned to the provider that speaks it.
SERVED_BY = [("anthropic/claude-sonnet-4.5", "anthropic"), ("openai/gpt-4o-mini", "openai"),
             ("google/gemini-2.5-flash", "google-ai-studio")]


@pytest.fixture
def client(node, key):
    return anthropic.Anthropic(base_url=node.base + "/api", auth_token=key, max_retries=0)


def price_of(node, model, provider_name):
    """The served endpoint's USD prices per prompt and completion token."""
    author, slug = model.split("/")
    endpoints = node.get(f"/models/{author}/{slug}/endpoints")["data"]["endpoints"]
    endpoint = next(e for e in endpoints if e["provider_name"] == provider_name)
    return float(endpoint["pricing"]["prompt"]), float(endpoint["pricing"]["completion"])


def check_billed_once(node, key, message, before):
    record = node.get(f"/generation?id={message.id}", key)["data"]
    prompt, completion = price_of(node, record["model"], record["provider_name"])
    usage = message.usage
    expected = usage.input_tokens * prompt + usage.output_tokens * completion
    assert record["total_cost"] == pytest.approx(expected, rel=1e-6)
    assert node.get("/key", key)["data"]["usage"] - before == pytest.approx(expected, rel=1e-6)
    return record


@pytest.mark.parametrize("model,provider", SERVED_BY)
def test_a_message_from_every_upstream_format(client, key, node, model, provider):
    before = node.get("/key", key)["data"]["usage"]
    message = client.messages.create(model=model, max_tokens=60, messages=HELLO,
                                     extra_body={"provider": {"order": [provider], "allow_fallbacks": False}})
    assert message.type == "message" and message.role == "assistant" and message.model == model
    assert message.id.startswith("gen-")
    assert [block.type for block in message.content] == ["text"] and message.content[0].text
    assert message.stop_reason in ("end_turn", "max_tokens")
    assert message.usage.input_tokens > 0 and message.usage.output_tokens > 0
    record = check_billed_once(node, key, message, before)
    assert record["provider_responses"][-1]["tag"].split("/")[0] == provider


@pytest.mark.parametrize("model,provider", SERVED_BY)
def test_a_stream_is_anthropics_event_sequence_and_matches_the_plain_answer(client, key, node, model, provider):
    pinned = {"provider": {"order": [provider], "allow_fallbacks": False}}
    plain = client.messages.create(model=model, max_tokens=60, messages=HELLO, extra_body=pinned)
    before = node.get("/key", key)["data"]["usage"]
    with client.messages.stream(model=model, max_tokens=60, messages=HELLO, extra_body=pinned) as stream:
        events = [event.type for event in stream]
        final = stream.get_final_message()
    assert events[0] == "message_start" and events[-1] == "message_stop"
    assert events.count("message_delta") == 1 and events.index("message_delta") == len(events) - 2
    assert final.content[0].text == plain.content[0].text
    assert final.usage.output_tokens == plain.usage.output_tokens
    assert final.stop_reason == plain.stop_reason
    check_billed_once(node, key, final, before)


@pytest.mark.parametrize("name", ["claude-sonnet-4-5", "claude-sonnet-4-5-20250929", "claude-sonnet-4.5",
                                  "anthropic/claude-sonnet-4.5"])
def test_anthropic_model_names_resolve_to_the_catalog(client, name):
    message = client.messages.create(model=name, max_tokens=20, messages=HELLO)
    assert message.model == "anthropic/claude-sonnet-4.5"


def test_haiku_and_opus_names_resolve(client):
    assert client.messages.create(model="claude-haiku-4-5-20251001", max_tokens=10, messages=HELLO).model == "anthropic/claude-haiku-4.5"
    assert client.messages.create(model="claude-opus-4-5", max_tokens=10, messages=HELLO).model == "anthropic/claude-opus-4.5"


@pytest.mark.parametrize("model,provider", SERVED_BY)
@pytest.mark.parametrize("stream", [False, True])
def test_a_tool_use_round_trip(client, model, provider, stream):
    pinned = {"provider": {"order": [provider], "allow_fallbacks": False}}
    ask = dict(model=model, max_tokens=200, tools=[WEATHER], tool_choice={"type": "tool", "name": "get_weather"},
               messages=[{"role": "user", "content": "What is the weather in Paris?"}], extra_body=pinned)
    if stream:
        with client.messages.stream(**ask) as events:
            kinds = [(event.type, getattr(getattr(event, "delta", None), "type", None)) for event in events]
            first = events.get_final_message()
        assert ("content_block_delta", "input_json_delta") in kinds
    else:
        first = client.messages.create(**ask)
    calls = [block for block in first.content if block.type == "tool_use"]
    assert first.stop_reason == "tool_use" and len(calls) == 1
    assert calls[0].name == "get_weather" and isinstance(calls[0].input, dict) and "city" in calls[0].input
    answer = client.messages.create(
        model=model, max_tokens=60, tools=[WEATHER], extra_body=pinned,
        messages=[{"role": "user", "content": "What is the weather in Paris?"},
                  {"role": "assistant", "content": [block.model_dump() for block in first.content]},
                  {"role": "user", "content": [{"type": "tool_result", "tool_use_id": calls[0].id, "content": "Sunny, 21 °C"}]}])
    assert answer.content and answer.content[0].type == "text" and answer.content[0].text


def test_an_image_and_a_system_prompt_in_blocks(client):
    message = client.messages.create(
        model="anthropic/claude-sonnet-4.5", max_tokens=40,
        system=[{"type": "text", "text": "You describe images."}],
        messages=[{"role": "user", "content": [
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PIXEL}},
            {"type": "text", "text": "What is in this image?"}]}])
    assert message.content[0].text


@pytest.mark.parametrize("stream", [False, True])
def test_signed_thinking_comes_back_and_goes_back_to_anthropic_intact(client, stream):
    pinned = {"provider": {"order": ["anthropic"], "allow_fallbacks": False}}
    ask = dict(model="anthropic/claude-sonnet-4.5", max_tokens=1100, thinking={"type": "enabled", "budget_tokens": 1024},
               messages=[{"role": "user", "content": "Think, then answer: what is 2 + 2?"}], extra_body=pinned)
    if stream:
        with client.messages.stream(**ask) as events:
            kinds = [getattr(getattr(event, "delta", None), "type", None) for event in events]
            message = events.get_final_message()
        assert "thinking_delta" in kinds and "signature_delta" in kinds
    else:
        message = client.messages.create(**ask)
    types = [block.type for block in message.content]
    assert types[0] == "thinking" and "text" in types and message.content[0].thinking
    # The simulated Anthropic, like Anthropic, refuses a thinking block whose signature is not its own.
    assert message.content[0].signature == "sig-sim"
    turn = [block.model_dump() for block in message.content]
    follow_up = dict(model="anthropic/claude-sonnet-4.5", max_tokens=1100, thinking={"type": "enabled", "budget_tokens": 1024},
                     extra_body=pinned)
    again = client.messages.create(
        messages=[ask["messages"][0], {"role": "assistant", "content": turn}, {"role": "user", "content": "And 3 + 3?"}],
        **follow_up)
    assert any(block.type == "text" and block.text for block in again.content)
    tampered = [dict(block, signature="forged") if block["type"] == "thinking" else block for block in turn]
    with pytest.raises(anthropic.BadRequestError) as refused:
        client.messages.create(
            messages=[ask["messages"][0], {"role": "assistant", "content": tampered}, {"role": "user", "content": "And 3 + 3?"}],
            **follow_up)
    assert "signature" in refused.value.message


def test_thinking_sent_to_a_model_of_another_format_is_left_out(client):
    """A conversation begun on Claude may continue on another model: its thinking blocks, which
    only Anthropic can read, are not sent there."""
    turn = [{"type": "thinking", "thinking": "2 + 2 is 4", "signature": "sig-sim"}, {"type": "text", "text": "4"}]
    message = client.messages.create(
        model="openai/gpt-4o-mini", max_tokens=40,
        messages=[{"role": "user", "content": "What is 2 + 2?"}, {"role": "assistant", "content": turn},
                  {"role": "user", "content": "And 3 + 3?"}])
    assert message.content[0].text


def test_cache_control_reaches_anthropic_and_cached_tokens_are_billed_at_cache_prices(client, node, key):
    pinned = {"provider": {"order": ["anthropic"], "allow_fallbacks": False}}
    system = [{"type": "text", "text": "You are a careful assistant. " * 200, "cache_control": {"type": "ephemeral"}}]
    prompt, completion = price_of(node, "anthropic/claude-sonnet-4.5", "Anthropic")
    endpoints = node.get("/models/anthropic/claude-sonnet-4.5/endpoints")["data"]["endpoints"]
    pricing = next(e for e in endpoints if e["provider_name"] == "Anthropic")["pricing"]
    read, write = float(pricing["input_cache_read"]), float(pricing["input_cache_write"])
    for round in ("write", "read"):
        before = node.get("/key", key)["data"]["usage"]
        message = client.messages.create(model="anthropic/claude-sonnet-4.5", max_tokens=20, system=system,
                                         messages=HELLO, extra_body=pinned)
        usage = message.usage
        if round == "write":
            assert usage.cache_creation_input_tokens > 0 and usage.cache_read_input_tokens == 0
        else:
            assert usage.cache_read_input_tokens > 0 and usage.cache_creation_input_tokens == 0
        expected = (usage.input_tokens * prompt + usage.output_tokens * completion
                    + usage.cache_creation_input_tokens * write + usage.cache_read_input_tokens * read)
        assert node.get("/key", key)["data"]["usage"] - before == pytest.approx(expected, rel=1e-6)


def test_count_tokens_is_a_free_estimate_that_grows_with_the_prompt(client, node, key):
    before = node.get("/key", key)["data"]["usage"]
    counted = client.messages.count_tokens(model="claude-sonnet-4-5", messages=HELLO, system="Be brief.")
    text = len("Say hello to the Messages suite") + len("Be brief.")
    assert 0 < counted.input_tokens < text
    longer = client.messages.count_tokens(model="claude-sonnet-4-5", messages=[{"role": "user", "content": "word " * 400}])
    assert longer.input_tokens > 300
    image = client.messages.count_tokens(model="claude-sonnet-4-5", messages=[{"role": "user", "content": [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PIXEL}},
        {"type": "text", "text": "What is this?"}]}])
    assert image.input_tokens > counted.input_tokens + 1000
    with_tools = client.messages.count_tokens(model="claude-sonnet-4-5", messages=HELLO, system="Be brief.", tools=[WEATHER])
    assert with_tools.input_tokens > counted.input_tokens
    assert node.get("/key", key)["data"]["usage"] == before


@pytest.mark.parametrize("stream", [False, True])
def test_an_idempotent_retry_replays_the_answer_in_anthropics_shape_and_charges_once(client, node, key, stream):
    import uuid
    headers = {"Idempotency-Key": str(uuid.uuid4())}
    ask = dict(model="anthropic/claude-sonnet-4.5", max_tokens=40, messages=HELLO, extra_headers=headers)
    if stream:  # the stream flag is part of what a key identifies: both runs stream
        with client.messages.stream(**ask) as events:
            first = events.get_final_message()
    else:
        first = client.messages.create(**ask)
    after_first = node.get("/key", key)["data"]["usage"]
    if stream:
        with client.messages.stream(**ask) as events:
            kinds = [event.type for event in events]
            again = events.get_final_message()
        assert kinds[0] == "message_start" and kinds[-1] == "message_stop"
    else:
        again = client.messages.create(**ask)
    assert again.id == first.id and again.content[0].text == first.content[0].text
    assert node.get("/key", key)["data"]["usage"] == after_first
    # The same key with another body is refused, even when only what a translation drops differs.
    with pytest.raises(anthropic.APIStatusError) as reused:
        client.messages.create(model="anthropic/claude-sonnet-4.5", max_tokens=40, extra_headers=headers,
                               messages=[{"role": "user", "content": [{"type": "text", "text": HELLO[0]["content"],
                                                                      "cache_control": {"type": "ephemeral"}}]}])
    assert reused.value.status_code == 422


def test_an_api_key_header_authenticates_too(node, key):
    message = anthropic.Anthropic(base_url=node.base + "/api", api_key=key, max_retries=0).messages.create(
        model="claude-haiku-4-5", max_tokens=10, messages=HELLO)
    assert message.content[0].text


@pytest.mark.parametrize("body,status,kind", [
    ({"model": "claude-sonnet-4-5", "messages": HELLO}, 400, "invalid_request_error"),  # max_tokens is required
    ({"model": "claude-sonnet-4-5", "max_tokens": 10, "messages": []}, 400, "invalid_request_error"),
    ({"model": "claude-sonnet-4-5", "max_tokens": 10, "messages": [{"role": "robot", "content": "x"}]}, 400,
     "invalid_request_error"),
    ({"model": "claude-sonnet-4-5", "max_tokens": 10, "messages": HELLO, "tools": [{"type": "web_search_20250305",
                                                                                    "name": "web_search"}]}, 400,
     "invalid_request_error"),
    ({"model": "claude-nonexistent-9", "max_tokens": 10, "messages": HELLO}, 404, "not_found_error"),
    ({"model": "claude-sonnet-4-5", "max_tokens": 1e-07, "messages": HELLO}, 400, "invalid_request_error"),
])
def test_bad_input_is_an_anthropic_error_and_charges_nothing(node, key, body, status, kind):
    before = node.get("/key", key)["data"]["usage"]
    code, answer = node.post_raw("/messages", body, headers={"x-api-key": key, "anthropic-version": "2023-06-01"})
    assert code == status and answer["type"] == "error" and answer["error"]["type"] == kind and answer["error"]["message"]
    assert node.get("/key", key)["data"]["usage"] == before


def test_errors_map_to_the_sdks_exception_classes(node, key, client):
    bad = anthropic.Anthropic(base_url=node.base + "/api", api_key="sk-sb-v1-not-a-real-key", max_retries=0)
    with pytest.raises(anthropic.AuthenticationError) as error:
        bad.messages.create(model="claude-sonnet-4-5", max_tokens=10, messages=HELLO)
    assert error.value.status_code == 401 and error.value.body["error"]["type"] == "authentication_error"
    code, answer = node.post_raw("/messages", {"model": "x", "max_tokens": 1, "messages": HELLO}, headers={})
    assert code == 401 and answer["error"]["type"] == "authentication_error"
    with pytest.raises(anthropic.NotFoundError):
        client.messages.create(model="claude-nonexistent-9", max_tokens=10, messages=HELLO)
    with pytest.raises(anthropic.BadRequestError):
        client.messages.create(model="claude-sonnet-4-5", max_tokens=10, messages=[])
    node.fault(provider="anthropic", kind="status", status=529)
    with pytest.raises(anthropic.APIStatusError) as overloaded:
        client.messages.create(model="anthropic/claude-sonnet-4.5", max_tokens=10, messages=HELLO,
                               extra_body={"provider": {"order": ["anthropic"], "allow_fallbacks": False}})
    assert overloaded.value.status_code == 529 and overloaded.value.body["error"]["type"] == "overloaded_error"


def test_refusals_of_every_kind_raise_the_sdks_own_exception(node, client):
    pinned = {"provider": {"order": ["anthropic"], "allow_fallbacks": False}}
    admin = anthropic.Anthropic(base_url=node.base + "/api", api_key=node.admin_key, max_retries=0)
    with pytest.raises(anthropic.PermissionDeniedError) as denied:
        admin.messages.create(model="claude-sonnet-4-5", max_tokens=10, messages=HELLO)
    assert denied.value.body["error"]["type"] == "permission_error"
    account = node.admin_post("/admin/accounts", {"name": "penniless"})["id"]
    broke = node.admin_post("/keys", {"name": "penniless", "account": account})["key"]
    with pytest.raises(anthropic.APIStatusError) as unpaid:
        anthropic.Anthropic(base_url=node.base + "/api", api_key=broke, max_retries=0).messages.create(
            model="anthropic/claude-sonnet-4.5", max_tokens=10, messages=HELLO)
    assert unpaid.value.status_code == 402 and unpaid.value.body["error"]["type"] == "billing_error"
    node.fault(provider="anthropic", kind="status", status=429)
    with pytest.raises(anthropic.RateLimitError) as limited:
        client.messages.create(model="anthropic/claude-sonnet-4.5", max_tokens=10, messages=HELLO, extra_body=pinned)
    assert limited.value.body["error"]["type"] == "rate_limit_error"


@pytest.mark.parametrize("status,exception", [(529, anthropic.OverloadedError), (429, anthropic.RateLimitError),
                                               (500, anthropic.InternalServerError)])
def test_a_stream_that_fails_before_any_output_is_an_http_error_the_sdk_retries_by(client, node, key, status, exception):
    """As Anthropic answers: until a token exists the request can fail as a whole, with a status."""
    node.fault(provider="anthropic", kind="status", status=status)
    before = node.get("/key", key)["data"]["usage"]
    with pytest.raises(exception) as error:
        with client.messages.stream(model="anthropic/claude-sonnet-4.5", max_tokens=20, messages=HELLO,
                                    extra_body={"provider": {"order": ["anthropic"], "allow_fallbacks": False}}) as events:
            list(events)
    assert error.value.body["type"] == "error"
    assert node.get("/key", key)["data"]["usage"] == before


def test_a_stream_that_fails_after_output_ends_with_an_error_event(client, node):
    node.fault(provider="anthropic", kind="stream_error", after_chunks=4)
    received = []
    with pytest.raises(anthropic.APIStatusError) as error:
        with client.messages.stream(model="anthropic/claude-sonnet-4.5", max_tokens=40, messages=HELLO,
                                    extra_body={"provider": {"order": ["anthropic"], "allow_fallbacks": False}}) as events:
            for event in events:
                received.append(event.type)
    assert received[0] == "message_start" and "content_block_delta" in received and "message_stop" not in received
    assert error.value.body["type"] == "error"


@pytest.mark.parametrize("body", ["{not json", "[1, 2]", '{"model": 5, "max_tokens": 10, "messages": []}'])
def test_a_malformed_body_is_an_anthropic_400(node, key, body):
    status, answer = node.post_raw("/messages", body, headers={"x-api-key": key})
    assert status == 400 and answer["type"] == "error" and answer["error"]["type"] == "invalid_request_error"


@pytest.mark.parametrize("stream", [False, True])
def test_a_provider_failing_before_the_first_token_is_invisible(client, key, node, stream):
    node.fault(provider="anthropic", kind="status", status=503)
    before = node.get("/key", key)["data"]["usage"]
    ask = dict(model="anthropic/claude-sonnet-4.5", max_tokens=40, messages=HELLO,
               extra_body={"provider": {"order": ["anthropic", "openrouter"]}})
    if stream:
        with client.messages.stream(**ask) as events:
            message = events.get_final_message()
    else:
        message = client.messages.create(**ask)
    assert message.content[0].text
    record = check_billed_once(node, key, message, before)
    assert [r["tag"] for r in record["provider_responses"]] == ["anthropic", "openrouter"]
