"""OpenAI's Responses API (`client.responses.create`, `client.responses.stream`) through the
official SDK: stateless responses with message, function-call and reasoning items, structured
output, the Responses event stream, served by every upstream format, failed over and billed as
chat is."""
import json

import openai
import pytest

ASK = "Say hello to the Responses suite"
WEATHER = {"type": "function", "name": "get_weather", "description": "Current weather in a city",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}
SERVED_BY = [("openai/gpt-4o-mini", "openai"), ("anthropic/claude-sonnet-4.5", "anthropic"),
             ("google/gemini-2.5-flash", "google-ai-studio")]


@pytest.fixture
def client(node, key):
    return openai.OpenAI(base_url=node.api, api_key=key, max_retries=0)


def pin(provider):
    return {"provider": {"order": [provider], "allow_fallbacks": False}}


def check_billed_once(node, key, response, before):
    record = node.get(f"/generation?id={response.id}", key)["data"]
    author, slug = record["model"].split("/")
    endpoints = node.get(f"/models/{author}/{slug}/endpoints")["data"]["endpoints"]
    pricing = next(e for e in endpoints if e["provider_name"] == record["provider_name"])["pricing"]
    usage = response.usage
    expected = usage.input_tokens * float(pricing["prompt"]) + usage.output_tokens * float(pricing["completion"])
    assert record["total_cost"] == pytest.approx(expected, rel=1e-6)
    assert node.get("/key", key)["data"]["usage"] - before == pytest.approx(expected, rel=1e-6)
    return record


@pytest.mark.parametrize("model,provider", SERVED_BY)
def test_a_response_from_every_upstream_format_matches_chat_and_is_billed_once(client, node, key, model, provider):
    before = node.get("/key", key)["data"]["usage"]
    response = client.responses.create(model=model, input=ASK, max_output_tokens=60, extra_body=pin(provider))
    chat = client.chat.completions.create(model=model, messages=[{"role": "user", "content": ASK}], max_tokens=60,
                                          extra_body=pin(provider))
    assert response.object == "response" and response.status == "completed" and response.model == model
    assert response.id.startswith("gen-")
    assert [item.type for item in response.output] == ["message"]
    assert response.output_text and response.output_text == chat.choices[0].message.content
    assert response.usage.input_tokens > 0 and response.usage.output_tokens > 0
    assert response.usage.total_tokens == response.usage.input_tokens + response.usage.output_tokens
    node_usage = node.get("/key", key)["data"]["usage"] - before
    record = check_billed_once(node, key, response, before + chat.usage.model_extra["cost"])
    assert node_usage == pytest.approx(record["total_cost"] + chat.usage.model_extra["cost"])


@pytest.mark.parametrize("model,provider", SERVED_BY)
def test_a_stream_is_the_responses_event_sequence_and_assembles_the_same_answer(client, node, key, model, provider):
    plain = client.responses.create(model=model, input=ASK, max_output_tokens=60, extra_body=pin(provider))
    before = node.get("/key", key)["data"]["usage"]
    with client.responses.stream(model=model, input=ASK, max_output_tokens=60, extra_body=pin(provider)) as stream:
        events = list(stream)
        final = stream.get_final_response()
    types = [event.type for event in events]
    assert types[:2] == ["response.created", "response.in_progress"] and types[-1] == "response.completed"
    assert [event.sequence_number for event in events] == list(range(len(events)))
    for kind in ["response.output_item.added", "response.content_part.added", "response.output_text.delta",
                 "response.output_text.done", "response.content_part.done", "response.output_item.done"]:
        assert kind in types, kind
    assert len({event.response.id for event in events if hasattr(event, "response")}) == 1
    assert final.output_text == plain.output_text
    assert final.usage.output_tokens == plain.usage.output_tokens
    check_billed_once(node, key, final, before)


@pytest.mark.parametrize("model,provider", SERVED_BY)
@pytest.mark.parametrize("stream", [False, True])
def test_a_function_call_round_trip(client, model, provider, stream):
    ask = dict(model=model, input="What is the weather in Paris?", tools=[WEATHER],
               tool_choice={"type": "function", "name": "get_weather"}, max_output_tokens=200, extra_body=pin(provider))
    if stream:
        with client.responses.stream(**ask) as events:
            types = [event.type for event in events]
            first = events.get_final_response()
        assert "response.function_call_arguments.delta" in types and "response.function_call_arguments.done" in types
    else:
        first = client.responses.create(**ask)
    calls = [item for item in first.output if item.type == "function_call"]
    assert len(calls) == 1 and calls[0].name == "get_weather" and "city" in json.loads(calls[0].arguments)
    answer = client.responses.create(
        model=model, tools=[WEATHER], max_output_tokens=60, extra_body=pin(provider),
        input=[{"role": "user", "content": "What is the weather in Paris?"}, calls[0].model_dump(),
               {"type": "function_call_output", "call_id": calls[0].call_id, "output": "Sunny, 21 °C"}])
    assert answer.output_text


def test_structured_output_follows_the_schema(client):
    schema = {"type": "object", "properties": {"greeting": {"type": "string"}, "count": {"type": "integer"}},
              "required": ["greeting", "count"], "additionalProperties": False}
    response = client.responses.create(model="openai/gpt-4o-mini", input="Greet me as JSON", max_output_tokens=200,
                                       text={"format": {"type": "json_schema", "name": "greeting", "schema": schema,
                                                        "strict": True}})
    answer = json.loads(response.output_text)
    assert isinstance(answer["greeting"], str) and isinstance(answer["count"], int)


@pytest.mark.parametrize("stream", [False, True])
def test_reasoning_effort_brings_a_reasoning_item(client, stream):
    ask = dict(model="openai/gpt-5-mini", input="Think, then answer: 2 + 2?", reasoning={"effort": "high"},
               max_output_tokens=400, extra_body=pin("openai"))
    if stream:
        with client.responses.stream(**ask) as events:
            response = events.get_final_response()
    else:
        response = client.responses.create(**ask)
    assert [item.type for item in response.output] == ["reasoning", "message"]
    assert response.output[0].summary[0].text and response.output_text
    assert response.usage.output_tokens_details.reasoning_tokens > 0


def test_an_answer_cut_by_max_output_tokens_is_incomplete(client):
    response = client.responses.create(model="openai/gpt-4o-mini", input=ASK, max_output_tokens=2)
    assert response.status == "incomplete" and response.incomplete_details.reason == "max_output_tokens"
    with client.responses.stream(model="openai/gpt-4o-mini", input=ASK, max_output_tokens=2) as events:
        types = [event.type for event in events]
    assert types[-1] == "response.incomplete"


@pytest.mark.parametrize("stream", [False, True])
def test_a_failing_provider_is_invisible_and_the_serving_one_is_charged(client, node, key, stream):
    node.fault(provider="openai", kind="status", status=503)
    before = node.get("/key", key)["data"]["usage"]
    ask = dict(model="openai/gpt-4o-mini", input=ASK, max_output_tokens=40,
               extra_body={"provider": {"order": ["openai", "azure"]}})
    if stream:
        with client.responses.stream(**ask) as events:
            response = events.get_final_response()
    else:
        response = client.responses.create(**ask)
    assert response.output_text
    record = check_billed_once(node, key, response, before)
    assert [r["tag"] for r in record["provider_responses"]] == ["openai", "azure"]


@pytest.mark.parametrize("body,fragment", [
    ({"model": "openai/gpt-4o-mini"}, "'input' is required"),
    ({"model": "openai/gpt-4o-mini", "input": ASK, "store": True}, "stateless"),
    ({"model": "openai/gpt-4o-mini", "input": ASK, "previous_response_id": "resp_1"}, "stateless"),
    ({"model": "openai/gpt-4o-mini", "input": [{"type": "item_reference", "id": "msg_1"}]}, "stateless"),
    ({"model": "openai/gpt-4o-mini", "input": ASK, "tools": [{"type": "web_search"}]}, "only function tools"),
    ({"model": "openai/gpt-4o-mini", "input": 5}, "'input' must be"),
    ({"model": "openai/gpt-4o-mini", "input": ASK, "max_output_tokens": 1e-07}, "'max_output_tokens'"),
    ('{"model": "openai/gpt-4o-mini", "input": "x", "max_output_tokens": 6e1, "temperature": 1e400}', "'temperature'"),
    ({"model": "nobody/no-such-model", "input": ASK}, "not a valid model"),
])
def test_bad_input_is_a_400_and_charges_nothing(node, key, body, fragment):
    before = node.get("/key", key)["data"]["usage"]
    status, answer = node.post_raw("/responses", body, key)
    assert status == 400 and fragment in answer["error"]["message"]
    assert node.get("/key", key)["data"]["usage"] == before


def test_store_true_through_the_sdk_is_a_bad_request(client):
    with pytest.raises(openai.BadRequestError) as error:
        client.responses.create(model="openai/gpt-4o-mini", input=ASK, store=True)
    assert "stateless" in error.value.message
