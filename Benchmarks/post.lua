-- wrk script: POSTs one chat completion per request and prints a JSON summary at the end.
-- Environment: BENCH_PATH, BENCH_MODEL, BENCH_KEY (optional bearer key), BENCH_LABEL,
-- BENCH_STREAM ("true" for a streamed answer), BENCH_MAX_TOKENS (16), BENCH_DELAY_MS (a pause
-- before each request on a connection, to pace the load; none by default).
wrk.method = "POST"
wrk.path = os.getenv("BENCH_PATH") or "/api/v1/chat/completions"
wrk.headers["Content-Type"] = "application/json"
local key = os.getenv("BENCH_KEY")
if key and key ~= "" then wrk.headers["Authorization"] = "Bearer " .. key end
wrk.body = '{"model": "' .. (os.getenv("BENCH_MODEL") or "openai/gpt-4o-mini") ..
  '", "max_tokens": ' .. (os.getenv("BENCH_MAX_TOKENS") or "16") ..
  ', "stream": ' .. (os.getenv("BENCH_STREAM") or "false") ..
  ', "messages": [{"role": "user", "content": "Benchmark request: say something short."}]}'

local pause = tonumber(os.getenv("BENCH_DELAY_MS") or "")
if pause and pause > 0 then
  function delay() return pause end
end

function done(summary, latency, requests)
  local seconds = summary.duration / 1e6
  io.stderr:write(string.format(
    'RESULT {"label": "%s", "requests": %d, "errors": %d, "non2xx": %d, "seconds": %.3f, "rps": %.1f, ' ..
    '"p50_us": %d, "p90_us": %d, "p99_us": %d, "max_us": %d}\n',
    os.getenv("BENCH_LABEL") or "?", summary.requests,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    summary.errors.status, seconds, summary.requests / seconds,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
