"""Deploy/local-cluster.sh end to end: two regions behind their nginx load balancers route, fail
over and charge one PostgreSQL ledger correctly. Runs where PostgreSQL is configured (always in CI)."""
import os
import random
import signal
import subprocess
import tempfile
import time

import openai
import pytest

from cluster import BINARY, cli, fresh_database, psql, wait_until

pytestmark = pytest.mark.skipif(not os.environ.get("SIGNALBOX_TEST_DATABASE_URL") and not os.environ.get("CI"),
                                reason="no PostgreSQL configured for this run")


def test_local_cluster_routes_fails_over_and_charges_one_ledger():
    workdir = tempfile.mkdtemp(prefix="signalbox-local-cluster-")
    database_url = fresh_database(os.environ["SIGNALBOX_TEST_DATABASE_URL"])
    base = random.randrange(10000, 19900, 100)  # below the ephemeral range, apart from free_port()'s
    env = dict(os.environ, SIGNALBOX_BIN=os.path.abspath(BINARY), SIGNALBOX_DATABASE_URL=database_url,
               LB_EU_PORT=str(base + 81), LB_US_PORT=str(base + 82), BASE_PORT=str(base))
    log = open(os.path.join(workdir, "script.log"), "w")
    script = subprocess.Popen(["Deploy/local-cluster.sh", "--workdir", workdir], env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: os.path.exists(os.path.join(workdir, "ready")) or script.poll() is not None, 180, "the local cluster")
        assert script.poll() is None, open(log.name).read()
        settings = dict(line.strip().split("=", 1) for line in open(os.path.join(workdir, "cluster.env")))
        assert os.stat(os.path.join(workdir, "cluster.env")).st_mode & 0o777 == 0o600

        admin = openai.OpenAI(base_url=settings["EU_URL"], api_key=settings["ADMIN_KEY"])
        members = admin.get("/admin/cluster/members", cast_to=object)["data"]
        assert sorted((m["id"], m["region"], m["state"]) for m in members) == [
            ("eu-1", "eu", "alive"), ("eu-2", "eu", "alive"), ("us-1", "us", "alive"), ("us-2", "us", "alive")]

        served = []
        for url in (settings["EU_URL"], settings["US_URL"]):
            client = openai.OpenAI(base_url=url, api_key=settings["DEMO_KEY"], max_retries=0)
            for _ in range(4):
                served.append(client.chat.completions.create(model="openai/gpt-4o-mini", max_tokens=10,
                                                             messages=[{"role": "user", "content": "Hello, cluster"}]))
            stream = client.chat.completions.create(model="anthropic/claude-haiku-4.5", max_tokens=10, stream=True,
                                                    stream_options={"include_usage": True},
                                                    messages=[{"role": "user", "content": "Stream through the balancer"}])
            chunks = list(stream)
            assert chunks[-1].usage is not None
            served.append(chunks[-1])

        # The provider fails: requests fail over to the next endpoint.
        subprocess.run(["curl", "-fs", "-X", "POST", settings["SIM_URL"] + "/_sim/faults", "-H", "Content-Type: application/json",
                        "-d", '{"provider": "openai", "kind": "status", "status": 503}'], check=True, capture_output=True)
        eu = openai.OpenAI(base_url=settings["EU_URL"], api_key=settings["DEMO_KEY"], max_retries=0)
        try:
            failed_over = eu.chat.completions.create(model="openai/gpt-4o-mini", max_tokens=10,
                                                     messages=[{"role": "user", "content": "OpenAI is down"}],
                                                     extra_body={"provider": {"order": ["openai", "azure"]}})
        except openai.APIStatusError as error:
            raise AssertionError(f"{error.status_code} {dict(error.response.headers)} {error.response.text}")
        assert failed_over.provider == "Azure"
        served.append(failed_over)

        # A node dies: its region's balancer sends the next requests to the other node.
        subprocess.run(["pkill", "-9", "-f", "--", f"--data-dir {workdir}/eu-2 "], check=True)
        for _ in range(3):
            served.append(eu.chat.completions.create(model="openai/gpt-4o-mini", max_tokens=10,
                                                     messages=[{"role": "user", "content": "Still there?"}]))

        charged = psql(database_url, "SELECT COUNT(*), COALESCE(SUM(amount), 0) FROM transfers WHERE debit_account = 'demo' AND kind = 'charge'")
        count, total = (int(x) for x in charged.split("|"))
        assert count == len(served)
        assert total == sum(round(reply.usage.cost * 10**9) for reply in served)
        assert cli("ledger", "verify", database_url=database_url)["consistent"] is True
        # The keys are in cluster.env only: not on the script's stdout, not in any node's log.
        logs = [name for name in os.listdir(workdir) if name.endswith(".log")]
        leaked = [(name, which) for name in logs for which in ("DEMO_KEY", "ADMIN_KEY")
                  if settings[which] in open(os.path.join(workdir, name)).read()]
        assert len(logs) >= 6 and not leaked, leaked
    finally:
        script.send_signal(signal.SIGTERM)
        try:
            script.wait(timeout=60)
        except subprocess.TimeoutExpired:
            script.kill()
        subprocess.run(["pkill", "-9", "-f", "--", workdir], check=False)
