"""The measuring half of Benchmarks/console-ledger.sh (see there)."""
import os
import re
import sqlite3
import statistics
import subprocess
import sys
import time
import urllib.parse
import urllib.request
import uuid

BIN = os.environ["SIGNALBOX_BIN"]
ADMIN = "sk-sb-v1-console-benchmark-admin-0000000000000000000000000000000000000000"
WORK, ENTRIES, REQUESTS = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
BULK = """INSERT INTO transfers (idempotency_key, debit_account, credit_account, amount, kind, key_id, created_at)
SELECT 'bulk:' || n, CASE WHEN n % 3 = 0 THEN 'acme' ELSE 'platform:grants' END,
  CASE WHEN n % 3 = 0 THEN 'provider:openai' WHEN n % 2 = 0 THEN 'acme' ELSE 'beta' END,
  1000, CASE WHEN n % 3 = 0 THEN 'charge' ELSE 'grant' END, 'k' || (n % 10), {epoch} + n {source}"""


def free_port():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(name, extra, env):
    port = free_port()
    log = open(os.path.join(WORK, name + ".log"), "w")
    proc = subprocess.Popen([BIN, "serve", "--port", str(port), "--sim-port", str(free_port()), "--drain-delay", "0",
                             "--data-dir", os.path.join(WORK, name), *extra], stdout=log, stderr=subprocess.STDOUT,
                            env=dict(os.environ, SIGNALBOX_ADMIN_KEY=ADMIN, **env))
    base = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            urllib.request.urlopen(base + "/readyz", timeout=1)
            return proc, base
        except Exception:
            time.sleep(0.1)
    raise SystemExit(f"{name} did not start: " + open(log.name).read())


def sign_in(base):
    jar = urllib.request.HTTPCookieProcessor()
    opener = urllib.request.build_opener(jar)
    page = opener.open(base + "/console/login").read().decode()
    token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    opener.open(base + "/console/login", data=urllib.parse.urlencode(
        {"csrf_token": token, "admin_key": ADMIN, "next": "/console/"}).encode())
    return "; ".join(f"{c.name}={c.value}" for c in jar.cookiejar if c.name == "sb_session")


def measure(url, headers, rows):
    times = []
    for _ in range(REQUESTS):
        started = time.perf_counter()
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=30) as reply:
            reply.read(1)
            times.append(time.perf_counter() - started)
            body = reply.read().decode()
    count = body.count('<tr><td class="num">') if "html" in reply.headers["Content-Type"] else body.count('"kind":')
    assert count == rows, (url, count)
    times.sort()
    return statistics.median(times) * 1000, times[int(len(times) * 0.95)] * 1000


def seed_postgres():
    base_url = os.environ["SIGNALBOX_TEST_DATABASE_URL"]
    name = "signalbox_console_bench_" + uuid.uuid4().hex[:8]
    subprocess.run(["psql", base_url, "-q", "-c", f"CREATE DATABASE {name}"], check=True)
    return base_url.rsplit("/", 1)[0] + "/" + name


rows_out = []
for ledger in ("postgres", "sqlite"):
    extra, env = [], {}
    if ledger == "postgres":
        url = seed_postgres()
        subprocess.run([BIN, "migrate", "--database-url", url], check=True, capture_output=True)
        env["SIGNALBOX_DATABASE_URL"] = url
    proc, base = start(ledger, extra, env)
    admin = {"Authorization": f"Bearer {ADMIN}"}
    for account in ("acme", "beta"):
        urllib.request.urlopen(urllib.request.Request(base + "/api/v1/admin/accounts", data=(
            '{"name": "%s", "id": "%s"}' % (account, account)).encode(), headers=admin))
    urllib.request.urlopen(urllib.request.Request(base + "/api/v1/admin/credits", data=b'{"account": "acme", "amount": 1000, "kind": "grant"}',
                                                  headers=admin))
    epoch = int(time.time() * 1000) - ENTRIES
    if ledger == "postgres":
        proc_sql = BULK.format(epoch=epoch, source=f"FROM generate_series(1, {ENTRIES}) AS n") + ";"
        subprocess.run(["psql", url, "-q", "-c", "INSERT INTO accounts (id, name, is_system, created_at) VALUES ('provider:openai', 'provider:openai', true, 0) ON CONFLICT DO NOTHING; INSERT INTO balances (account_id) VALUES ('provider:openai') ON CONFLICT DO NOTHING;" + proc_sql + "ANALYZE transfers;"], check=True)
    else:
        proc.terminate(); proc.wait()
        database = sqlite3.connect(os.path.join(WORK, "sqlite", "ledger.sqlite"))
        database.execute("INSERT OR IGNORE INTO accounts (id, name, is_system, created_at) VALUES ('provider:openai', 'provider:openai', 1, 0)")
        database.execute("INSERT OR IGNORE INTO balances (account_id) VALUES ('provider:openai')")
        database.execute(BULK.format(epoch=epoch, source=f"FROM (WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s WHERE n < {ENTRIES}) SELECT n FROM s)"))
        database.commit(); database.close()
        proc, base = start(ledger, extra, env)
    cookie = {"Cookie": sign_in(base)}
    deep = urllib.request.urlopen(urllib.request.Request(base + "/api/v1/admin/ledger/entries?limit=1", headers=admin)).read()
    middle = int(re.search(rb'"id":(\d+)', deep).group(1)) // 2
    for case, path, headers in (
        ("API, newest 50", "/api/v1/admin/ledger/entries?limit=50", admin),
        ("console, newest 50", "/console/ledger", cookie),
        ("console, account filter", "/console/ledger?account=acme", cookie),
        ("console, kind filter", "/console/ledger?kind=charge", cookie),
        ("console, page in the middle", f"/console/ledger?before={middle}", cookie),
    ):
        p50, p95 = measure(base + path, headers, 50)
        rows_out.append((ledger, case, p50, p95))
    proc.terminate(); proc.wait()

print(f"\nLedger page with {ENTRIES:,} entries, {REQUESTS} requests per case, one client on loopback (release build)")
print(f"{'ledger':<10} {'case':<30} {'p50 ms':>8} {'p95 ms':>8}")
for ledger, case, p50, p95 in rows_out:
    print(f"{ledger:<10} {case:<30} {p50:>8.2f} {p95:>8.2f}")
