"""Through the router, the OpenAI SDK cannot tell which wire format served it."""
import json

import openai
import pytest

MODELS = ["openai/gpt-4o-mini", "anthropic/claude-sonnet-4", "google/gemini-2.5-flash"]
WEATHER_TOOL = {"type": "function", "function": {"name": "get_weather", "description": "Current weather",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["c", "f"]}},
                               "required": ["city", "unit"]}}}
PIXEL = "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="


@pytest.fixture
def client(node):
    return openai.OpenAI(base_url=node.api, api_key=node.demo_key, max_retries=0)


@pytest.mark.parametrize("model", MODELS)
def test_text_stream_and_usage(client, model):
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello there"}]
    plain = client.chat.completions.create(model=model, messages=messages, max_tokens=40)
    assert plain.object == "chat.completion" and plain.model == model
    assert plain.choices[0].finish_reason in ("stop", "length") and plain.usage.completion_tokens > 0
    chunks = list(client.chat.completions.create(model=model, messages=messages, max_tokens=40, stream=True))
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == plain.choices[0].message.content
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == plain.usage.completion_tokens


@pytest.mark.parametrize("model", MODELS)
def test_forced_tool_call_streams_fragments_that_reassemble(client, model):
    messages = [{"role": "user", "content": "Weather in Paris?"}]
    plain = client.chat.completions.create(model=model, messages=messages, tools=[WEATHER_TOOL], tool_choice="required",
                                           max_tokens=200)
    assert plain.choices[0].finish_reason == "tool_calls"
    call = plain.choices[0].message.tool_calls[0]
    arguments = json.loads(call.function.arguments)
    assert call.function.name == "get_weather" and arguments["unit"] in ("c", "f") and isinstance(arguments["city"], str)

    fragments, ids, names, finish = {}, set(), set(), None
    for chunk in client.chat.completions.create(model=model, messages=messages, tools=[WEATHER_TOOL],
                                                tool_choice={"type": "function", "function": {"name": "get_weather"}},
                                                stream=True, max_tokens=200):
        for choice in chunk.choices:
            finish = choice.finish_reason or finish
            for delta in choice.delta.tool_calls or []:
                fragments[delta.index] = fragments.get(delta.index, "") + (delta.function.arguments or "")
                if delta.id:
                    ids.add(delta.id)
                if delta.function.name:
                    names.add(delta.function.name)
    assert finish == "tool_calls" and list(fragments) == [0] and len(ids) == 1 and names == {"get_weather"}
    assert json.loads(fragments[0]) == arguments

    # the tool result goes back in OpenAI's shape whatever the upstream format
    follow_up = client.chat.completions.create(model=model, messages=messages + [
        {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
        {"role": "tool", "tool_call_id": call.id, "content": '{"temp": 21}'}], max_tokens=50)
    assert follow_up.choices[0].message.content


@pytest.mark.parametrize("model", MODELS)
def test_images_and_json_mode(client, model):
    seeing = client.chat.completions.create(model=model, max_tokens=30, messages=[{"role": "user", "content": [
        {"type": "text", "text": "What is in this image?"}, {"type": "image_url", "image_url": {"url": PIXEL}}]}])
    assert seeing.choices[0].message.content
    answer = client.chat.completions.create(model=model, response_format={"type": "json_object"}, max_tokens=200,
                                            messages=[{"role": "user", "content": "Reply in JSON"}])
    assert isinstance(json.loads(answer.choices[0].message.content), dict)


@pytest.mark.parametrize("model,provider", [("anthropic/claude-opus-4.7", "anthropic"), ("google/gemini-3-flash-preview", "google-ai-studio")])
def test_upstream_errors_raise_the_right_sdk_exception(node, client, model, provider):
    node.fault(provider=provider, kind="status", status=429)
    with pytest.raises(openai.RateLimitError) as limited:
        client.chat.completions.create(model=model, messages=[{"role": "user", "content": "Hi"}], max_tokens=10)
    assert "raw" in limited.value.body["metadata"]
    node.clear_faults()
    node.fault(provider=provider, kind="status", status=400)
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model=model, messages=[{"role": "user", "content": "Hi"}], max_tokens=10)


@pytest.mark.parametrize("model", ["openai/gpt-5-mini", "anthropic/claude-sonnet-4", "google/gemini-2.5-flash"])
def test_reasoning_streams_as_delta_reasoning_and_is_billed_as_completion(client, model):
    ask = dict(model=model, max_tokens=2000, messages=[{"role": "user", "content": "Think, then answer"}])
    reasoning, content, usage = "", "", None
    for chunk in client.chat.completions.create(stream=True, extra_body={"reasoning": {"effort": "high"}}, **ask):
        if chunk.choices:
            reasoning += (chunk.choices[0].delta.model_extra or {}).get("reasoning") or ""
            content += chunk.choices[0].delta.content or ""
        if chunk.usage:
            usage = chunk.usage
    assert reasoning.startswith("Let me think") and content
    assert usage.completion_tokens > len(content.split())  # thinking tokens are completion tokens
    plain = client.chat.completions.create(extra_body={"reasoning": {"effort": "high"}}, **ask)
    assert plain.choices[0].message.model_extra["reasoning"] == reasoning
    hidden = client.chat.completions.create(extra_body={"reasoning": {"effort": "high", "exclude": True}}, **ask)
    assert not hidden.choices[0].message.model_extra.get("reasoning")
    assert hidden.usage.completion_tokens == plain.usage.completion_tokens
