"""Every numeric field on every surface takes every JSON number form — `1e-07`, `1E3`, `2.50`,
`-0.0`, what Python's json.dumps or another library writes — within its range, and refuses what
is out of range with a 400 naming the field. Bodies are sent as raw text, so the forms reach the
router exactly as written."""
import pytest

USER = '[{"role": "user", "content": "Numbers, please"}]'
SURFACES = {
    "chat": ("/chat/completions", '"model": "openai/gpt-4o-mini", "messages": ' + USER),
    "completions": ("/completions", '"model": "openai/gpt-4o-mini", "prompt": "Numbers, please"'),
    "messages": ("/messages", '"model": "anthropic/claude-sonnet-4.5", "messages": ' + USER),
    "responses": ("/responses", '"model": "openai/gpt-4o-mini", "input": "Numbers, please"'),
}
# The output limit's name on each surface (Messages requires one).
LIMIT = {"chat": "max_tokens", "completions": "max_tokens", "messages": "max_tokens", "responses": "max_output_tokens"}


def post(node, key, surface, extra):
    path, base = SURFACES[surface]
    body = "{" + base + (", " + extra if extra else "") + "}"
    if surface == "messages" and '"max_tokens"' not in extra:
        body = body[:-1] + ', "max_tokens": 20}'
    return node.post_raw(path, body, key)


def message_of(answer):
    return answer["error"]["message"]


@pytest.mark.parametrize("surface", SURFACES)
@pytest.mark.parametrize("form", ["2e1", "2E1", "20.0", "2.0e+1", "200e-1"])
def test_the_output_limit_takes_any_integer_valued_form(node, key, surface, form):
    status, answer = post(node, key, surface, f'"{LIMIT[surface]}": {form}')
    assert status == 200, answer


@pytest.mark.parametrize("surface", SURFACES)
@pytest.mark.parametrize("form", ["1e-07", "2.5", "0", "-1e1", "1e400"])
def test_an_output_limit_that_is_no_positive_integer_is_a_400_naming_it(node, key, surface, form):
    status, answer = post(node, key, surface, f'"{LIMIT[surface]}": {form}')
    assert status == 400 and f"'{LIMIT[surface]}'" in message_of(answer), answer


@pytest.mark.parametrize("surface", SURFACES)
@pytest.mark.parametrize("form", ["7e-1", "7E-1", "0.70", "-0.0", "1e-07"])
def test_sampling_numbers_take_any_form(node, key, surface, form):
    status, answer = post(node, key, surface, f'"temperature": {form}, "top_p": 9.5e-1')
    assert status == 200, answer


@pytest.mark.parametrize("surface", SURFACES)
def test_a_temperature_no_double_can_hold_is_a_400_naming_it(node, key, surface):
    status, answer = post(node, key, surface, '"temperature": 1e400')
    assert status == 400 and "'temperature'" in message_of(answer), answer


def test_a_thinking_budget_in_exponent_form(node, key):
    status, answer = post(node, key, "messages", '"max_tokens": 2.048e3, "thinking": {"type": "enabled", "budget_tokens": 1.024e3}')
    assert status == 200, answer
    status, answer = post(node, key, "messages", '"max_tokens": 2048, "thinking": {"type": "enabled", "budget_tokens": 1e-07}')
    assert status == 400 and "budget_tokens" in message_of(answer)


@pytest.mark.parametrize("surface", ["chat", "completions", "responses"])
@pytest.mark.parametrize("form", ["1e-07", "0.0000001", "1E-7", "\"1e-07\""])
def test_a_max_price_in_any_form_filters_like_any_other(node, key, surface, form):
    # $0.0000001 per million tokens: nothing is that cheap, so nothing is left to route to.
    status, answer = post(node, key, surface, f'"provider": {{"max_price": {{"prompt": {form}}}}}')
    assert status == 404 and "max_price" in message_of(answer), answer
    status, answer = post(node, key, surface, '"provider": {"max_price": {"prompt": 1e16, "completion": 1E3}}')
    assert status == 200, answer


@pytest.mark.parametrize("surface", list(SURFACES) + ["embeddings"])
@pytest.mark.parametrize("body", ["{not json", "[1, 2]", '{"model": 5}', "\"just a string\""])
def test_a_malformed_body_is_a_400_in_the_surfaces_shape_and_charges_nothing(node, key, surface, body):
    before = node.get("/key", key)["data"]["usage"]
    path = "/embeddings" if surface == "embeddings" else SURFACES[surface][0]
    status, answer = node.post_raw(path, body, key)
    assert status == 400
    if surface == "messages":
        assert answer["type"] == "error" and answer["error"]["type"] == "invalid_request_error"
    else:
        assert answer["error"]["code"] == 400 and answer["error"]["message"]
    assert node.get("/key", key)["data"]["usage"] == before
