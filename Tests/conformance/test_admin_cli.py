"""The admin CLI, against the running node's embedded ledger and against PostgreSQL."""
import json
import os
import subprocess
import time
import uuid

import openai
import pytest

BINARY = os.environ.get("SIGNALBOX_BIN", ".build/debug/signalbox")


def cli(*args, ledger):
    out = subprocess.run([BINARY, *args, *ledger, "--json"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_accounts_keys_credits_and_ledger_queries(node):
    ledger = ["--data-dir", node.data_dir]
    account = cli("accounts", "create", "--name", "Acme", ledger=ledger)["id"]
    created = cli("keys", "create", "--account", account, "--name", "ci", ledger=ledger)
    assert created["key"].startswith("sk-sb-v1-") and created["id"]
    purchase = cli("credits", "purchase", "--account", account, "--amount", "20", "--reference", "order-1", ledger=ledger)
    assert (purchase["fee"], purchase["charged"]) == (1.1, 21.1)  # 5.5% fee
    cli("credits", "purchase", "--account", account, "--amount", "20", "--reference", "order-1", ledger=ledger)  # replay
    assert cli("ledger", "balance", "--account", account, ledger=ledger) == {"balance": "20", "available": "20"}
    assert cli("ledger", "balance", "--account", "platform:fees", ledger=ledger)["balance"] != "0"

    client = openai.OpenAI(base_url=node.api, api_key=created["key"], max_retries=0)
    reply = client.chat.completions.create(model="openai/gpt-4o-mini", max_tokens=10, messages=[{"role": "user", "content": "Hi"}])
    entries = cli("ledger", "entries", "--account", account, ledger=ledger)
    assert [e["kind"] for e in entries] == ["charge", "purchase"] and entries[0]["generation_id"] == reply.id
    assert cli("ledger", "verify", ledger=ledger)["consistent"] is True
    assert node.get("/key", key=created["key"])["data"]["is_free_tier"] is False

    cli("keys", "revoke", created["id"], ledger=ledger)
    time.sleep(1.2)  # the node caches keys for a second
    with pytest.raises(openai.AuthenticationError):
        client.chat.completions.create(model="openai/gpt-4o-mini", max_tokens=10, messages=[{"role": "user", "content": "Hi"}])
    assert cli("keys", "list", "--account", account, ledger=ledger)[0]["disabled"] is True


@pytest.mark.skipif(not os.environ.get("SIGNALBOX_TEST_DATABASE_URL") and not os.environ.get("CI"),
                    reason="no PostgreSQL configured for this run")
def test_migrate_and_admin_commands_on_postgres():
    base = os.environ["SIGNALBOX_TEST_DATABASE_URL"]  # in CI a missing URL fails here instead of skipping
    name = "signalbox_cli_" + uuid.uuid4().hex[:12]
    admin = base.rsplit("/", 1)[0] + "/postgres"
    subprocess.run(["psql", admin, "-q", "-c", f"CREATE DATABASE {name}"], check=True)
    ledger = ["--database-url", base.rsplit("/", 1)[0] + "/" + name]
    try:
        assert cli("migrate", ledger=ledger) == {"schema_version": 2}
        assert cli("migrate", ledger=ledger) == {"schema_version": 2}  # idempotent
        account = cli("accounts", "create", "--name", "Pg", ledger=ledger)["id"]
        cli("credits", "purchase", "--account", account, "--amount", "5", ledger=ledger)
        cli("credits", "grant", "--account", account, "--amount", "1.25", ledger=ledger)
        assert cli("ledger", "balance", "--account", account, ledger=ledger) == {"balance": "6.25", "available": "6.25"}
        assert cli("ledger", "balance", "--account", "platform:fees", ledger=ledger)["balance"] == "0.8"  # the minimum fee
        assert cli("ledger", "verify", ledger=ledger)["consistent"] is True
    finally:
        subprocess.run(["psql", admin, "-q", "-c", f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"], check=False)
