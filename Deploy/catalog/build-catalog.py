#!/usr/bin/env python3
"""Builds Signalbox's shipped catalog (Sources/SignalboxCore/Resources/catalog.json).

Input: the published-price snapshot (`shared/reference/catalog-snapshot.json`, list prices
copied as exact decimal strings from LiteLLM's MIT-licensed cost map). Output: our own catalog
format, documented in Docs/catalog.md. Prices are never converted to floats: strings are copied.

What this script adds on top of the snapshot, as plain data:
- provider metadata (display name, region, data policy, policy URLs);
- models the snapshot lacks but users try first (anthropic/claude-sonnet-4), with published prices;
- a second endpoint for popular single-host models (Azure OpenAI for OpenAI models, OpenRouter
  itself for Anthropic and Google models) so failover has somewhere to go;
- `:free` variants: zero-priced endpoints that, like OpenRouter's, may log and train on prompts.

Usage: python3 Deploy/catalog/build-catalog.py ../shared/reference/catalog-snapshot.json \
           Sources/SignalboxCore/Resources/catalog.json
"""
import json
import sys

PROVIDERS = {
    # slug: (region, trains_on_data, retention_days, zdr, headquarters, privacy, terms, status)
    "openai": ("us", False, 30, False, "US", "https://openai.com/policies/privacy-policy", "https://openai.com/policies/terms-of-use", "https://status.openai.com"),
    "azure": ("us", False, 30, False, "US", "https://www.microsoft.com/en-us/privacy/privacystatement", "https://www.microsoft.com/licensing/terms", "https://status.azure.com"),
    "anthropic": ("us", False, 30, False, "US", "https://www.anthropic.com/legal/privacy", "https://www.anthropic.com/legal/commercial-terms", "https://status.anthropic.com"),
    "google-ai-studio": ("us", False, 55, False, "US", "https://policies.google.com/privacy", "https://ai.google.dev/gemini-api/terms", "https://aistudio.google.com/status"),
    "groq": ("us", False, 0, True, "US", "https://groq.com/privacy-policy", "https://groq.com/terms-of-use", "https://groqstatus.com"),
    "together": ("us", False, 0, True, "US", "https://www.together.ai/privacy", "https://www.together.ai/terms-of-service", "https://status.together.ai"),
    "fireworks": ("us", False, 0, True, "US", "https://fireworks.ai/privacy-policy", "https://fireworks.ai/terms-of-service", "https://status.fireworks.ai"),
    "deepinfra": ("us", False, 0, True, "US", "https://deepinfra.com/privacy", "https://deepinfra.com/terms", "https://status.deepinfra.com"),
    "mistral": ("eu", False, 30, False, "FR", "https://mistral.ai/terms#privacy-policy", "https://mistral.ai/terms", "https://status.mistral.ai"),
    "deepseek": ("global", True, 30, False, "CN", "https://platform.deepseek.com/downloads/DeepSeek%20Privacy%20Policy.html", "https://platform.deepseek.com/downloads/DeepSeek%20Open%20Platform%20Terms%20of%20Service.html", "https://status.deepseek.com"),
    "xai": ("us", False, 30, False, "US", "https://x.ai/legal/privacy-policy", "https://x.ai/legal/terms-of-service", "https://status.x.ai"),
    "cohere": ("us", False, 30, False, "CA", "https://cohere.com/privacy", "https://cohere.com/terms-of-use", "https://status.cohere.com"),
    "alibaba": ("global", False, 30, False, "CN", "https://www.alibabacloud.com/help/en/legal/latest/alibaba-cloud-international-website-privacy-policy", "https://www.alibabacloud.com/help/en/legal/latest/alibaba-cloud-international-website-product-terms-of-service", "https://status.alibabacloud.com"),
    "openrouter": ("global", False, 0, False, "US", "https://openrouter.ai/privacy", "https://openrouter.ai/terms", "https://status.openrouter.ai"),
}

EXTRA_PROVIDERS = [
    {"slug": "azure", "name": "Azure", "format": "openai",
     "base_url": "https://YOUR-RESOURCE.openai.azure.com/openai/v1", "api_key_env": "AZURE_OPENAI_API_KEY"},
    {"slug": "openrouter", "name": "OpenRouter", "format": "openai",
     "base_url": "https://openrouter.ai/api/v1", "api_key_env": "OPENROUTER_API_KEY"},
]

DISPLAY_NAMES = {"together": "Together", "fireworks": "Fireworks", "mistral": "Mistral",
                 "alibaba": "Alibaba"}

TOKENIZERS = {"openai": "GPT", "anthropic": "Claude", "google": "Gemini", "meta-llama": "Llama3",
              "mistralai": "Mistral", "deepseek": "DeepSeek", "qwen": "Qwen", "x-ai": "Grok",
              "cohere": "Cohere", "microsoft": "Other", "nvidia": "Llama3", "moonshotai": "Other"}

# Approximate public release dates (unix seconds, UTC midnight) for `created`.
CREATED = {
    "openai/gpt-4o": 1715558400, "openai/gpt-4o-mini": 1721260800, "openai/gpt-4.1": 1744588800,
    "openai/gpt-4.1-mini": 1744588800, "openai/o3": 1744848000, "openai/gpt-5": 1754524800,
    "openai/gpt-5-mini": 1754524800, "openai/gpt-5-nano": 1754524800, "openai/gpt-oss-120b": 1754352000,
    "openai/gpt-oss-20b": 1754352000, "anthropic/claude-sonnet-4": 1747872000,
    "anthropic/claude-sonnet-4.5": 1759104000, "anthropic/claude-haiku-4.5": 1760572800,
    "anthropic/claude-opus-4.5": 1763942400, "google/gemini-2.5-flash": 1750118400,
    "google/gemini-2.5-pro": 1750118400, "google/gemini-2.5-flash-lite": 1753142400,
    "meta-llama/llama-3.3-70b-instruct": 1733356800, "meta-llama/llama-3.1-8b-instruct": 1721692800,
    "meta-llama/llama-3.1-70b-instruct": 1721692800, "meta-llama/llama-3.1-405b-instruct": 1721692800,
    "meta-llama/llama-4-scout": 1743811200, "meta-llama/llama-4-maverick": 1743811200,
    "deepseek/deepseek-chat": 1735084800, "deepseek/deepseek-r1-0528": 1748390400,
    "qwen/qwen-2.5-72b-instruct": 1726617600, "mistralai/mistral-nemo": 1721001600,
}
DEFAULT_CREATED = 1735689600

# Models users try first that the snapshot lacks, with published list prices (USD per token).
EXTRA_MODELS = [
    {"id": "anthropic/claude-sonnet-4", "name": "Anthropic: Claude Sonnet 4", "author": "anthropic",
     "context_length": 200000, "input_modalities": ["text", "image", "file"], "output_modalities": ["text"],
     "supports": {"tools": True, "vision": True, "json_schema": True, "reasoning": True},
     "endpoints": [{"provider": "anthropic", "upstream_model": "claude-sonnet-4-20250514",
                    "prompt_per_token": "0.000003", "completion_per_token": "0.000015",
                    "cache_read_per_token": "0.0000003", "cache_write_per_token": "0.00000375",
                    "max_output_tokens": 64000, "context_length": 200000,
                    "supports": {"tools": True, "vision": True, "json_schema": True, "reasoning": True}}]},
]

# Popular models with one host in the snapshot get a second, real host for failover.
SECOND_HOST = {"openai/": "azure", "anthropic/": "openrouter", "google/gemini": "openrouter"}
SECOND_HOST_MODELS = {"openai/gpt-4o", "openai/gpt-4o-mini", "openai/gpt-4.1", "openai/gpt-4.1-mini",
                      "openai/gpt-5", "openai/gpt-5-mini", "anthropic/claude-sonnet-4",
                      "anthropic/claude-sonnet-4.5", "anthropic/claude-haiku-4.5", "anthropic/claude-opus-4.5",
                      "google/gemini-2.5-flash", "google/gemini-2.5-pro", "google/gemini-2.5-flash-lite"}


def supported_parameters(fmt, supports, author):
    params = ["max_tokens", "temperature", "top_p", "stop", "seed", "frequency_penalty", "presence_penalty"]
    if fmt != "openai" or author not in ("openai",):
        params.append("top_k")
    if author in ("openai",) and fmt == "openai":
        params += ["logit_bias", "logprobs", "top_logprobs"]
    if supports.get("tools"):
        params += ["tools", "tool_choice"]
    if supports.get("json_schema"):
        params += ["response_format", "structured_outputs"]
    if supports.get("reasoning"):
        params += ["reasoning", "include_reasoning"]
    return params


def quantization(provider, upstream, first_party):
    if first_party:
        return "unknown"
    u = upstream.lower()
    if "fp8" in u or "turbo" in u or "fp8" in provider:
        return "fp8"
    if "fp4" in u:
        return "fp4"
    return "bf16"


def main(src, dst):
    snap = json.load(open(src))
    providers = {p["slug"]: p for p in snap["providers"]}
    for p in EXTRA_PROVIDERS:
        providers[p["slug"]] = p
    out_providers = []
    for slug, p in providers.items():
        region, trains, retention, zdr, hq, privacy, terms, status = PROVIDERS[slug]
        out_providers.append({
            "slug": slug, "name": DISPLAY_NAMES.get(slug, p["name"]), "format": p["format"],
            "base_url": p["base_url"], "api_key_env": p["api_key_env"], "region": region,
            "data_policy": {"training": trains, "retention_days": retention, "zdr": zdr},
            "headquarters": hq, "privacy_policy_url": privacy, "terms_of_service_url": terms,
            "status_page_url": status,
        })

    models = []
    for m in snap["models"] + EXTRA_MODELS:
        live = [e for e in m["endpoints"] if not e.get("deprecated")]
        if not live:
            continue
        if m["id"] in SECOND_HOST_MODELS and len({e["provider"] for e in live}) == 1:
            host = next(h for prefix, h in SECOND_HOST.items() if m["id"].startswith(prefix))
            first = live[0]
            live.append(dict(first, provider=host,
                             upstream_model=first["upstream_model"] if host == "azure" else m["id"]))
        author = m["author"]
        endpoints, seen = [], {}
        for e in live:
            prov = providers[e["provider"]]
            seen[e["provider"]] = seen.get(e["provider"], 0) + 1
            tag = e["provider"]
            if seen[e["provider"]] > 1:
                tag = f'{e["provider"]}/{"turbo" if "turbo" in e["upstream_model"].lower() else seen[e["provider"]]}'
            first_party = e["provider"] in ("openai", "anthropic", "google-ai-studio", "mistral", "deepseek",
                                            "xai", "cohere", "alibaba", "azure", "openrouter")
            sup = {k: bool(v) for k, v in e["supports"].items()} if e.get("supports") else {}
            for k, v in m["supports"].items():
                if e.get("supports", {}).get(k) is None:
                    sup[k] = bool(v)
            endpoints.append({
                "provider": e["provider"], "tag": tag, "upstream_model": e["upstream_model"],
                "pricing": {"prompt": e["prompt_per_token"], "completion": e["completion_per_token"],
                            "input_cache_read": e.get("cache_read_per_token") or "0",
                            "input_cache_write": e.get("cache_write_per_token") or "0"},
                "context_length": e["context_length"],
                "max_output_tokens": min(e["max_output_tokens"] or 4096, e["context_length"]),
                "quantization": quantization(e["provider"], e["upstream_model"], first_party),
                "supported_parameters": supported_parameters(prov["format"], sup, author),
            })
        params = []
        for e in endpoints:
            for p in e["supported_parameters"]:
                if p not in params:
                    params.append(p)
        model = {
            "id": m["id"], "name": m["name"], "author": author,
            "created": CREATED.get(m["id"], DEFAULT_CREATED),
            "description": f'{m["name"].split(": ", 1)[-1]} by {author}, served by '
                           f'{", ".join(sorted({providers[e["provider"]]["name"] for e in endpoints}))}.',
            "context_length": max(e["context_length"] for e in endpoints),
            "input_modalities": m["input_modalities"], "output_modalities": m["output_modalities"],
            "tokenizer": TOKENIZERS.get(author, "Other"),
            "supported_parameters": params, "endpoints": endpoints,
        }
        models.append(model)
        if m.get("free_variant"):
            free_eps = []
            for e in endpoints:
                if providers[e["provider"]]["format"] != "openai" or len(free_eps) == 2:
                    continue
                free_eps.append(dict(e, tag=f'{e["provider"]}/free',
                                     pricing={"prompt": "0", "completion": "0", "input_cache_read": "0",
                                              "input_cache_write": "0"},
                                     max_output_tokens=min(e["max_output_tokens"], 4096),
                                     data_policy={"training": True, "retention_days": 30, "zdr": False}))
            if free_eps:
                models.append(dict(model, id=m["id"] + ":free", name=m["name"] + " (free)",
                                   description=model["description"] + " Free variant: rate-limited; "
                                   "providers may log and train on prompts.", endpoints=free_eps))

    models.sort(key=lambda x: x["id"])
    json.dump({"source": snap["generated_from"], "generated_on": snap["generated_on"],
               "providers": out_providers, "models": models}, open(dst, "w"), indent=1)
    print(f"{len(models)} models, {sum(len(m['endpoints']) for m in models)} endpoints, "
          f"{len(out_providers)} providers, {len({m['author'] for m in models})} authors, "
          f"{sum(1 for m in models if m['id'].endswith(':free'))} free variants")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
