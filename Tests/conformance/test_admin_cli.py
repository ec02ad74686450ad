"""The admin CLI, against the running node's embedded ledger and against PostgreSQL."""
import json
import os
import subprocess
import time
import urllib.error
import urllib.request
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


def test_the_largest_amount_is_accepted_and_one_nano_dollar_more_refused_by_the_cli_and_the_api(node):
    ledger = ["--data-dir", node.data_dir]
    account = cli("accounts", "create", "--name", "Whale", ledger=ledger)["id"]
    largest = cli("credits", "grant", "--account", account, "--amount", "1000000", "--reference", "max", ledger=ledger)
    assert str(largest["credit"]) == "1000000"
    for amount in ("1000000.000000001", "9223372036.854775807", "9223372036.854775808", "0.0000000001", "-1"):
        out = subprocess.run([BINARY, "credits", "grant", "--account", account, "--amount", amount, *ledger],
                             capture_output=True, text=True, timeout=60)
        assert out.returncode != 0 and "--amount" in out.stderr, (amount, out.stderr)
        request = urllib.request.Request(node.api + "/admin/credits", method="POST", data=json.dumps(
            {"account": account, "amount": amount, "kind": "grant", "reference": "api-" + amount}).encode(),
            headers={"Authorization": f"Bearer {node.admin_key}", "Content-Type": "application/json"})
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=10)
        assert refused.value.code == 400 and b"amount" in refused.value.read()
    # The node kept serving and the ledger is whole.
    assert cli("ledger", "balance", "--account", account, ledger=ledger)["balance"] == "1000000"
    verify = cli("ledger", "verify", ledger=ledger)
    assert verify["consistent"] is True and all(item["holds"] for item in verify["invariants"])


@pytest.mark.skipif(not os.environ.get("SIGNALBOX_TEST_DATABASE_URL") and not os.environ.get("CI"),
                    reason="no PostgreSQL configured for this run")
def test_migrate_and_admin_commands_on_postgres():
    base = os.environ["SIGNALBOX_TEST_DATABASE_URL"]  # in CI a missing URL fails here instead of skipping
    name = "signalbox_cli_" + uuid.uuid4().hex[:12]
    admin = base.rsplit("/", 1)[0] + "/postgres"
    subprocess.run(["psql", admin, "-q", "-c", f"CREATE DATABASE {name}"], check=True)
    ledger = ["--database-url", base.rsplit("/", 1)[0] + "/" + name]
    try:
        assert cli("migrate", ledger=ledger) == {"schema_version": 9}
        assert cli("migrate", ledger=ledger) == {"schema_version": 9}  # idempotent
        account = cli("accounts", "create", "--name", "Pg", ledger=ledger)["id"]
        cli("credits", "purchase", "--account", account, "--amount", "5", ledger=ledger)
        cli("credits", "grant", "--account", account, "--amount", "1.25", ledger=ledger)
        assert cli("ledger", "balance", "--account", account, ledger=ledger) == {"balance": "6.25", "available": "6.25"}
        assert cli("ledger", "balance", "--account", "platform:fees", ledger=ledger)["balance"] == "0.8"  # the minimum fee
        assert cli("ledger", "verify", ledger=ledger)["consistent"] is True
        auditor = cli("keys", "create", "--admin", "--role", "auditor", "--name", "auditors", ledger=ledger)
        assert auditor["role"] == "auditor" and auditor["key"].startswith("sk-sb-v1-")
        trail = cli("audit", "list", ledger=ledger)
        assert [e["action"] for e in trail] == ["key_created", "credit_granted", "credit_purchased", "account_created"]
        assert all(e["actor"].startswith("cli:") and e["role"] == "admin" and e["node"] == "cli" for e in trail)
        assert trail[0]["after"]["role"] == "auditor" and trail[3]["target"] == account
        assert len(cli("audit", "list", "--action", "credit_granted", ledger=ledger)) == 1
        csv_text = cli_text("audit", "list", "--format", "csv", "--action", "account_created", *ledger, ledger=[])
        assert csv_text.splitlines()[0].startswith("id,created_at,actor,role,action,target") and len(csv_text.splitlines()) == 2
        # The trail is append-only in the database itself.
        url = base.rsplit("/", 1)[0] + "/" + name
        for statement in ("UPDATE audit_log SET actor = 'me'", "DELETE FROM audit_log"):
            refused = subprocess.run(["psql", url, "-q", "-c", statement], capture_output=True, text=True)
            assert refused.returncode != 0 and "append-only" in refused.stderr
    finally:
        subprocess.run(["psql", admin, "-q", "-c", f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"], check=False)


def cli_text(*args, ledger):
    out = subprocess.run([BINARY, *args, *ledger], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_cli_changes_are_audited_and_roles_hold_on_the_api(node):
    ledger = ["--data-dir", node.data_dir]
    account = cli("accounts", "create", "--name", "<img src=x onerror=alert(1)>", ledger=ledger)["id"]
    cli("accounts", "pin", "--account", account, "--region", "eu", ledger=ledger)
    auditor = cli("keys", "create", "--admin", "--role", "auditor", "--name", "read only", ledger=ledger)["key"]
    refused = subprocess.run([BINARY, "keys", "create", "--role", "auditor", "--account", account, *ledger],
                             capture_output=True, text=True, timeout=60)
    assert refused.returncode != 0 and "--admin" in refused.stderr
    text = cli_text("audit", "list", "--target", account, *ledger, ledger=[])
    assert "account_pinned" in text and "account_created" in text and "by cli:" in text
    # The auditor key reads over the API and is refused any change, which leaves no trace.
    assert node.get("/admin/audit?action=account_pinned", key=auditor)["data"][0]["target"] == account
    request = urllib.request.Request(node.api + "/admin/credits", method="POST", data=json.dumps(
        {"account": account, "amount": 5}).encode(), headers={"Authorization": f"Bearer {auditor}", "Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as forbidden:
        urllib.request.urlopen(request, timeout=10)
    assert forbidden.value.code == 403
    assert cli("audit", "list", "--action", "credit_purchased", "--target", account, ledger=ledger) == []


def test_who_spent_what_where_and_when(node):
    """Entries filtered by account, key, model, provider and time; spend per model and provider;
    CSV export; a generation's entries; a refund posted as a reversal."""
    ledger = ["--data-dir", node.data_dir]
    account = cli("accounts", "create", "--name", "Audit", ledger=ledger)["id"]
    cli("credits", "grant", "--account", account, "--amount", "5", ledger=ledger)
    keys = [cli("keys", "create", "--account", account, "--name", name, ledger=ledger) for name in ("one", "two")]
    calls = [(keys[0], "openai/gpt-4o-mini", ["openai"]), (keys[0], "openai/gpt-4o-mini", ["azure"]),
             (keys[1], "anthropic/claude-haiku-4.5", ["anthropic"])]
    ids = []
    for key, model, order in calls:
        client = openai.OpenAI(base_url=node.api, api_key=key["key"], max_retries=0)
        reply = client.chat.completions.create(model=model, max_tokens=10, messages=[{"role": "user", "content": "Audit me"}],
                                               extra_body={"provider": {"order": order, "allow_fallbacks": False}})
        ids.append(reply.id)

    charges = cli("ledger", "entries", "--account", account, "--kind", "charge", ledger=ledger)
    assert [e["generation_id"] for e in charges] == ids[::-1]
    assert [e["provider"] for e in charges] == ["anthropic", "azure", "openai"]
    by_key = cli("ledger", "entries", "--key", keys[1]["id"], ledger=ledger)
    assert [e["model"] for e in by_key] == ["anthropic/claude-haiku-4.5"]
    assert len(cli("ledger", "entries", "--account", account, "--model", "openai/gpt-4o-mini", ledger=ledger)) == 2
    assert [e["generation_id"] for e in cli("ledger", "entries", "--account", account, "--provider", "azure", ledger=ledger)] == [ids[1]]
    assert cli("ledger", "entries", "--account", account, "--since", "2099-01-01", ledger=ledger) == []
    assert len(cli("ledger", "entries", "--account", account, "--until", "2099-01-01T00:00:00Z", ledger=ledger)) == 4

    per_model = {row["model"]: row for row in cli("ledger", "spend", "--by", "model", "--account", account, ledger=ledger)}
    assert per_model["openai/gpt-4o-mini"]["requests"] == 2 and per_model["anthropic/claude-haiku-4.5"]["requests"] == 1
    total = sum(float(e["amount"]) for e in charges)
    per_provider = cli("ledger", "spend", "--by", "provider", "--account", account, ledger=ledger)
    assert {row["provider"] for row in per_provider} == {"openai", "azure", "anthropic"}
    assert abs(sum(float(row["amount"]) for row in per_provider) - total) < 1e-12

    csv_text = cli_text("ledger", "entries", "--account", account, "--format", "csv", ledger=ledger)
    rows = list(__import__("csv").DictReader(csv_text.splitlines()))
    assert [r["kind"] for r in rows] == ["charge", "charge", "charge", "grant"] and rows[0]["model"] == "anthropic/claude-haiku-4.5"

    generation = cli("ledger", "generation", ids[0], ledger=ledger)
    assert generation["model"] == "openai/gpt-4o-mini" and [e["kind"] for e in generation["entries"]] == ["charge"]
    before = cli("ledger", "balance", "--account", account, ledger=ledger)["balance"]
    refund = cli("ledger", "reverse", "--entry", str(generation["entries"][0]["id"]), "--reason", "refund", ledger=ledger)
    assert refund["credit"] == account
    after = cli("ledger", "balance", "--account", account, ledger=ledger)["balance"]
    assert abs(float(after) - float(before) - float(generation["cost"])) < 1e-12
    assert cli("ledger", "verify", ledger=ledger)["consistent"] is True


def admin_http(node, method, path, body=None):
    import urllib.request
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(node.api + path, data=data, method=method,
                                     headers={"Authorization": f"Bearer {node.admin_key}", "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        raw = response.read().decode()
        return json.loads(raw) if response.headers.get("Content-Type", "").startswith("application/json") else raw


def test_admin_http_api_answers_the_same_questions(node):
    import urllib.error
    account = admin_http(node, "POST", "/admin/accounts", {"name": "Http"})["id"]
    bought = admin_http(node, "POST", "/admin/credits", {"account": account, "amount": "10", "kind": "purchase", "reference": "inv-9"})
    assert (bought["fee"], bought["charged"], bought["balance"]) == ("0.8", "10.8", "10")  # the $0.80 minimum fee
    admin_http(node, "POST", "/admin/credits", {"account": account, "amount": "10", "kind": "purchase", "reference": "inv-9"})
    assert admin_http(node, "GET", f"/admin/accounts/{account}/balance")["balance"] == "10"  # the retry added nothing
    entries = admin_http(node, "GET", f"/admin/ledger/entries?account={account}")["data"]
    assert [e["kind"] for e in entries] == ["purchase"]
    csv_text = admin_http(node, "GET", f"/admin/ledger/entries?account=platform:fees&format=csv")
    assert csv_text.startswith("id,created_at,kind,") and "inv-9" in csv_text
    assert admin_http(node, "GET", "/admin/ledger/spend?by=provider")["by"] == "provider"
    assert admin_http(node, "GET", "/admin/ledger/verify")["consistent"] is True
    with pytest.raises(urllib.error.HTTPError) as refused:  # the demo key is not an admin key
        urllib.request.urlopen(urllib.request.Request(node.api + "/admin/ledger/verify",
                                                      headers={"Authorization": f"Bearer {node.demo_key}"}), timeout=10)
    assert refused.value.code == 403
    with pytest.raises(urllib.error.HTTPError) as bad:
        admin_http(node, "GET", "/admin/ledger/spend?by=color")
    assert bad.value.code == 400 and "by" in json.loads(bad.value.read())["error"]["message"]
