"""The official Anthropic and Google GenAI SDKs, pointed at the simulator's provider prefixes,
work unchanged: the simulator speaks each wire format as the real provider does."""
import json

import anthropic
import pytest
from google import genai
from google.genai import errors as genai_errors
from google.genai import types

WEATHER = {"type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
           "required": ["city", "days"]}


@pytest.fixture
def claude(node):
    return anthropic.Anthropic(base_url=node.sim + "/anthropic", api_key="sk-ant-anything", max_retries=0)


@pytest.fixture
def gemini(node):
    return genai.Client(api_key="anything", http_options=types.HttpOptions(
        base_url=node.sim + "/google-ai-studio", retry_options=types.HttpRetryOptions(attempts=1)))


def test_anthropic_messages_plain_and_streamed_agree(claude):
    message = claude.messages.create(model="claude-sonnet-4-20250514", max_tokens=64,
                                     system="Be brief.", messages=[{"role": "user", "content": "Hello"}])
    assert message.type == "message" and message.role == "assistant"
    assert message.stop_reason == "end_turn" and message.usage.output_tokens > 0
    with claude.messages.stream(model="claude-sonnet-4-20250514", max_tokens=64, system="Be brief.",
                                messages=[{"role": "user", "content": "Hello"}]) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == message.content[0].text
    assert final.usage.output_tokens == message.usage.output_tokens


def test_anthropic_forced_tool_call_satisfies_the_schema(claude):
    message = claude.messages.create(
        model="claude-sonnet-4-20250514", max_tokens=200, messages=[{"role": "user", "content": "Weather?"}],
        tools=[{"name": "get_weather", "input_schema": WEATHER}], tool_choice={"type": "any"})
    assert message.stop_reason == "tool_use"
    call = next(block for block in message.content if block.type == "tool_use")
    assert call.name == "get_weather" and isinstance(call.input["city"], str) and isinstance(call.input["days"], int)
    with claude.messages.stream(model="claude-sonnet-4-20250514", max_tokens=200,
                                messages=[{"role": "user", "content": "Weather?"}],
                                tools=[{"name": "get_weather", "input_schema": WEATHER}],
                                tool_choice={"type": "tool", "name": "get_weather"}) as stream:
        final = stream.get_final_message()
    assert next(block for block in final.content if block.type == "tool_use").input == call.input


def test_anthropic_overload_is_the_sdks_overloaded_error(node, claude):
    node.fault(provider="anthropic", kind="status", status=529, count=1)
    with pytest.raises(anthropic.APIStatusError) as error:
        claude.messages.create(model="claude-sonnet-4-20250514", max_tokens=16, messages=[{"role": "user", "content": "Hi"}])
    assert error.value.status_code == 529
    assert error.value.body["error"]["type"] == "overloaded_error"


def test_gemini_plain_streamed_tools_and_json(gemini):
    plain = gemini.models.generate_content(model="gemini-2.5-flash", contents="Hello")
    assert plain.text and plain.usage_metadata.total_token_count > 0
    streamed = "".join(chunk.text or "" for chunk in gemini.models.generate_content_stream(model="gemini-2.5-flash", contents="Hello"))
    assert streamed == plain.text
    called = gemini.models.generate_content(model="gemini-2.5-flash", contents="Weather?", config=types.GenerateContentConfig(
        tools=[types.Tool(function_declarations=[types.FunctionDeclaration(name="get_weather", parameters_json_schema=WEATHER)])],
        tool_config=types.ToolConfig(function_calling_config=types.FunctionCallingConfig(mode="ANY")),
        automatic_function_calling=types.AutomaticFunctionCallingConfig(disable=True)))
    call = called.function_calls[0]
    assert call.name == "get_weather" and isinstance(call.args["city"], str) and isinstance(call.args["days"], int)
    answer = gemini.models.generate_content(model="gemini-2.5-flash", contents="JSON please",
                                            config=types.GenerateContentConfig(response_mime_type="application/json"))
    assert isinstance(json.loads(answer.text), dict)


def test_gemini_errors_are_rpc_style(node, gemini):
    node.fault(provider="google-ai-studio", kind="status", status=401, count=1)
    with pytest.raises(genai_errors.ClientError) as invalid:
        gemini.models.generate_content(model="gemini-2.5-flash", contents="Hello")
    assert invalid.value.code == 400
    assert invalid.value.details["error"]["details"][0]["reason"] == "API_KEY_INVALID"
    node.fault(provider="google-ai-studio", kind="status", status=429, count=1)
    with pytest.raises(genai_errors.ClientError) as limited:
        gemini.models.generate_content(model="gemini-2.5-flash", contents="Hello")
    assert limited.value.status == "RESOURCE_EXHAUSTED"
    assert limited.value.details["error"]["details"][0]["retryDelay"] == "1s"
    # without a fault, no key is ever refused
    assert gemini.models.generate_content(model="gemini-2.5-flash", contents="Hello").text
