#!/usr/bin/env bash
# Runs the whole Signalbox test suite: the Swift unit and integration tests, then the
# client-conformance suite that drives a real server with the official OpenAI and OpenRouter
# Python SDKs. Installs the Python test dependencies if they are missing.
set -euo pipefail
cd "$(dirname "$0")/.."

python3 -c 'import openai, openrouter, pytest, anthropic, google.genai, selenium, authlib, kubernetes_validate, opentelemetry.proto, schemathesis' 2>/dev/null \
  || python3 -m pip install --quiet --disable-pip-version-check -r Tests/conformance/requirements.txt

echo "== swift test"
swift build --build-tests
# The CPU-bound cluster simulations run on their own: beside the other suites they starve
# Swift concurrency's cooperative threads, and timing-sensitive tests fail for it.
swift test --skip-build --skip VirtualTimeClusters
swift test --skip-build --filter VirtualTimeClusters

echo "== gossip at 1,000 members (byte-accurate simulation, release build)"
swift run -c release gossip-sim 1000

echo "== client conformance (OpenAI and OpenRouter Python SDKs), against the release build"
# The release binary, as operators run it (and as the instruction-count guard in .ci/run builds it
# anyway): the floods and cluster tests take minutes less than against the debug build.
swift build -c release --product signalbox
SIGNALBOX_BIN="$(swift build -c release --show-bin-path)/signalbox" python3 -m pytest -q Tests/conformance
