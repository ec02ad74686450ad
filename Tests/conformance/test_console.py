"""The operator console in a real browser (Debian's chromium through Selenium and chromedriver).

One node with gossip (so routing tables can change) and single sign-on against the small OIDC
provider in oidc_provider.py. The admin's whole job runs through the pages, checked against the
ledger and the audit trail; then SSO, roles, CSRF, escaping, throttling and every page at two sizes,
screenshotted into CONSOLE_SCREENSHOTS (default test-artifacts/console) with the browser's
console free of errors.
"""
import csv
import io
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request

import openai
import pytest
from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from conftest import ADMIN_KEY, DEMO_KEY, free_port, wait_until_ready
from oidc_provider import OIDCProvider

BINARY = os.environ.get("SIGNALBOX_BIN", ".build/debug/signalbox")
SCREENSHOTS = os.environ.get("CONSOLE_SCREENSHOTS", "test-artifacts/console")
NASTY = "<img src=x onerror=alert(1)>"


class ConsoleNode:
    def __init__(self, provider, workdir):
        self.port, self.sim_port, self.gossip_port = free_port(), free_port(), free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.console = self.base + "/console"
        key_file = os.path.join(workdir, "cluster.key")
        subprocess.run([BINARY, "cluster", "keygen", "--out", key_file], check=True, capture_output=True)
        config = os.path.join(workdir, "signalbox.json")
        with open(config, "w") as f:
            json.dump({"console": {"login_attempts": 40, "login_refill_seconds": 60,
                                   "oidc": {"issuer": provider.issuer, "client_id": provider.client_id,
                                            "display_name": "Test IdP"}}}, f)
        env = dict(os.environ, SIGNALBOX_ADMIN_KEY=ADMIN_KEY, SIGNALBOX_DEMO_KEY=DEMO_KEY,
                   SIGNALBOX_OIDC_CLIENT_SECRET=provider.client_secret)
        self.log_path = os.path.join(workdir, "node.log")
        self.proc = subprocess.Popen(
            [BINARY, "serve", "--config", config, "--port", str(self.port), "--sim-port", str(self.sim_port),
             "--data-dir", os.path.join(workdir, "data"), "--node-id", "console-a", "--region", "eu",
             "--gossip-bind", f"127.0.0.1:{self.gossip_port}", "--cluster-key-file", key_file,
             "--demo-credits", "1", "--drain-delay", "0", "--load-balancing", "catalog-order"],
            stdout=open(self.log_path, "w"), stderr=subprocess.STDOUT, env=env)
        wait_until_ready(self.base, self.proc, self.log_path)

    def api(self, path, body=None, method=None, key=ADMIN_KEY):
        request = urllib.request.Request(self.base + "/api/v1" + path, method=method,
                                         data=json.dumps(body).encode() if body is not None else None,
                                         headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as reply:
            return json.loads(reply.read())

    def audit(self, **filters):
        return self.api("/admin/audit?" + urllib.parse.urlencode(filters))["data"]

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


@pytest.fixture(scope="module")
def provider():
    with OIDCProvider() as running:
        yield running


@pytest.fixture(scope="module")
def console(provider):
    workdir = tempfile.mkdtemp(prefix="signalbox-console-")
    node = ConsoleNode(provider, workdir)
    yield node
    node.stop()
    # No prompt or key the tests sent is in the node's log.
    log = open(node.log_path).read()
    assert ADMIN_KEY not in log and "sk-sb-v1-" not in log.replace("sk-sb-v1-…", "")
    shutil.rmtree(workdir, ignore_errors=True)


def make_browser(width=1280, height=800):
    options = Options()
    options.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                     f"--window-size={width},{height}", "--force-device-scale-factor=1"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver") or "/usr/bin/chromedriver"), options=options)
    # The page itself (not the window around it) is exactly this size; a phone width renders as a phone.
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                           {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": width < 500})
    driver.set_page_load_timeout(30)
    return driver


@pytest.fixture(scope="module")
def browser():
    driver = make_browser()
    yield driver
    driver.quit()


def console_errors(driver):
    """The browser console's errors since the last call (a 404 for a favicon shows up here too)."""
    return [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]


def click_and_wait(driver, element):
    """Clicks something that loads a new page, and waits until the old one is gone and the new one loaded."""
    driver.execute_script("window.__before_click = true")
    element.click()
    WebDriverWait(driver, 15).until(
        lambda d: d.execute_script("return window.__before_click === undefined && document.readyState === 'complete'"))


def sign_in_with_key(driver, console, key=ADMIN_KEY):
    driver.delete_all_cookies()
    driver.get(console.console + "/login")
    driver.find_element(By.ID, "admin_key").send_keys(key)
    click_and_wait(driver, driver.find_element(By.CSS_SELECTOR, "form[action='/console/login'] button[type=submit]"))


def follow_single_sign_on(driver, console):
    """From the sign-in page through the provider and back: ends on the console or on an error page."""
    driver.delete_all_cookies()
    driver.get(console.console + "/login")
    driver.find_element(By.LINK_TEXT, "Sign in with Test IdP").click()
    WebDriverWait(driver, 15).until(
        lambda d: d.find_elements(By.ID, "message") or d.current_url.rstrip("/").endswith("/console"))
    WebDriverWait(driver, 15).until(lambda d: d.execute_script("return document.readyState") == "complete")


def session_cookies(driver):
    return "; ".join(f"{c['name']}={c['value']}" for c in driver.get_cookies() if c["name"].startswith("sb_"))


def fetch(driver, console, path, data=None):
    """A request outside the browser with its cookies: status, headers, body."""
    request = urllib.request.Request(console.base + path, data=urllib.parse.urlencode(data).encode() if data else None,
                                     headers={"Cookie": session_cookies(driver)})
    try:
        with urllib.request.urlopen(request, timeout=10) as reply:
            return reply.status, dict(reply.headers), reply.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read().decode()


def csrf_of(driver):
    return driver.find_element(By.CSS_SELECTOR, "form[action='/console/logout'] input[name=csrf_token]").get_attribute("value")


def submit(driver, form_selector, **fields):
    """Fills and sends the page's POST form that `form_selector` names (a filter form may share its action)."""
    form = driver.find_element(By.CSS_SELECTOR, form_selector.replace("form[", "form[method=post][", 1))
    for name, value in fields.items():
        element = form.find_element(By.NAME, name)
        if element.tag_name == "select":
            element.find_element(By.CSS_SELECTOR, f"option[value='{value}']").click()
        else:
            element.clear()
            element.send_keys(value)
    click_and_wait(driver, form.find_element(By.CSS_SELECTOR, "button[type=submit]"))


def test_an_admin_runs_the_whole_job_from_the_console(console, browser):
    sign_in_with_key(browser, console)
    assert browser.current_url.endswith("/console/") and "Overview" in browser.title
    cookie = next(c for c in browser.get_cookies() if c["name"] == "sb_session")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"

    # An account whose name is markup, shown as text everywhere.
    browser.get(console.console + "/accounts")
    submit(browser, "form[action='/console/accounts']", name=f"Acme {NASTY}", id="acme-console")
    assert "/console/accounts/acme-console" in browser.current_url
    assert NASTY in browser.find_element(By.TAG_NAME, "main").text
    assert browser.find_elements(By.CSS_SELECTOR, "main img") == []

    # A purchase shows its fee before anything is recorded.
    submit(browser, "form[action$='/purchase']", amount="20", reference="po-console-1")
    assert browser.find_element(By.ID, "confirm-fee").text == "$1.1"
    assert browser.find_element(By.ID, "confirm-total").text == "$21.1"
    assert console.api("/admin/accounts/acme-console/balance")["balance"] == "0"
    click_and_wait(browser, browser.find_element(By.ID, "confirm-purchase"))
    assert "fee $1.1" in browser.find_element(By.CSS_SELECTOR, ".flash").text
    assert browser.find_element(By.ID, "balance").text == "$20"

    # A key, shown once, that a stock SDK then spends with.
    browser.get(console.console + "/keys?account=acme-console")
    submit(browser, "form[action='/console/keys']", name="ci key", limit="5")
    secret = browser.find_element(By.ID, "new-key").text.strip()
    assert secret.startswith("sk-sb-v1-")
    client = openai.OpenAI(base_url=console.base + "/api/v1", api_key=secret, max_retries=0)
    reply = client.chat.completions.create(model="openai/gpt-4o-mini", max_tokens=12,
                                           messages=[{"role": "user", "content": "Hello from the console test"}])
    deadline = time.time() + 10
    while True:
        generation = console.api("/generation?id=" + reply.id, key=secret)["data"]
        if generation.get("total_cost") is not None or time.time() > deadline:
            break
        time.sleep(0.2)
    cost = console.api("/admin/ledger/entries?kind=charge&account=acme-console")["data"][0]["amount"]
    assert float(cost) > 0

    # The request on the Overview, the Ledger and the Spend pages, with its exact cost.
    browser.get(console.console + "/?period=day")
    assert int(browser.find_element(By.ID, "stat-requests").text) >= 1
    spend_text = browser.find_element(By.ID, "stat-spend").text
    assert spend_text.startswith("$") and float(spend_text[1:]) >= float(cost)
    browser.get(console.console + "/ledger?account=acme-console&kind=charge")
    rows = browser.find_elements(By.CSS_SELECTOR, "#entries tbody tr")
    assert len(rows) == 1 and f"${cost}" in rows[0].text and reply.id in rows[0].text
    # The export holds exactly what the filter shows.
    href = browser.find_element(By.ID, "export-csv").get_attribute("href")
    status, headers, body = fetch(browser, console, urllib.parse.urlparse(href).path + "?" + urllib.parse.urlparse(href).query)
    exported = list(csv.DictReader(io.StringIO(body)))
    assert status == 200 and [(r["kind"], r["amount"], r["generation_id"]) for r in exported] == [("charge", cost, reply.id)]
    browser.get(console.console + "/ledger?account=acme-console&kind=purchase")
    assert "$20" in browser.find_element(By.ID, "entries").text
    # The generation and its attempts.
    browser.get(console.console + "/ledger?account=acme-console&kind=charge")
    click_and_wait(browser, browser.find_element(By.LINK_TEXT, reply.id))
    assert browser.find_element(By.ID, "generation-cost").text == f"${cost}"
    attempts = browser.find_elements(By.CSS_SELECTOR, "#attempts tbody tr")
    assert len(attempts) >= 1 and "ms" in attempts[-1].text
    browser.get(console.console + "/spend?by=model&account=acme-console")
    assert browser.find_element(By.ID, "spend-total").text == f"${cost}"
    assert "openai/gpt-4o-mini" in browser.find_element(By.ID, "spend").text

    # A routing table, changed through the cluster.
    browser.get(console.console + "/cluster")
    assert "console-a" in browser.find_element(By.CSS_SELECTOR, "table.members").text
    submit(browser, "form[action='/console/routing/eu']", allowed="openai, anthropic", preferred="openai")
    assert "Saved the routing table of eu" in browser.find_element(By.CSS_SELECTOR, ".flash").text
    assert console.api("/admin/routing/eu")["allowed"] == ["openai", "anthropic"]
    # A bad entry is answered beside its field and changes nothing.
    submit(browser, "form[action='/console/routing/eu']", allowed="no-such-provider", preferred="")
    assert "neither a provider slug" in browser.find_element(By.CSS_SELECTOR, ".field-error").text
    # The refused form answered 400, which the browser logs; nothing else went wrong.
    assert [e["message"] for e in console_errors(browser) if "/console/routing/eu" not in e["message"]] == []
    assert console.api("/admin/routing/eu")["allowed"] == ["openai", "anthropic"]

    # Every one of those actions on the Audit page, with the right actor.
    browser.get(console.console + "/audit")
    table = browser.find_element(By.ID, "audit").text
    for action in ("sign_in", "account_created", "credit_purchased", "key_created", "routing_changed"):
        assert action in table, action
    actors = {entry["actor"] for entry in console.audit() if entry["action"] in
              ("account_created", "credit_purchased", "key_created", "routing_changed")}
    assert len(actors) == 1 and actors.pop().startswith("key:key-")
    browser.get(console.console + "/audit?action=credit_purchased")
    assert len(browser.find_elements(By.CSS_SELECTOR, "#audit tbody tr")) == 1
    assert console_errors(browser) == []


def test_single_sign_on_lands_with_the_mapped_role_and_bad_tokens_are_refused(console, browser, provider):
    sign_in_with_key(browser, console)
    browser.get(console.console + "/access")
    submit(browser, "form[action='/console/access/roles']", claim="group", value="console-auditors", role="auditor")
    assert "Mapped group console-auditors to auditor" in browser.find_element(By.CSS_SELECTOR, ".flash").text

    provider.user = {"sub": "alice", "email": "alice@example.com", "email_verified": True, "name": "Alice",
                     "groups": ["console-auditors"]}
    provider.mode = "good"
    follow_single_sign_on(browser, console)
    assert "Overview" in browser.title
    assert "alice@example.com" in browser.find_element(By.CSS_SELECTOR, "header .who").text
    assert "auditor" in browser.find_element(By.CSS_SELECTOR, "header .who").text
    assert provider.token_requests[-1]["code_verifier"], "PKCE verifier sent"
    signed_in = console.audit(action="sign_in")[0]
    assert signed_in["actor"] == f"oidc:{provider.issuer}#alice" and signed_in["role"] == "auditor"

    failures_before = len(console.audit(action="sign_in_failed"))
    for mode, reason in (("expired", "expired"), ("wrong_audience", "another client"),
                         ("bad_signature", "signature"), ("wrong_nonce", "nonce")):
        provider.mode = mode
        follow_single_sign_on(browser, console)
        message = browser.find_element(By.ID, "message").text
        assert "Single sign-on failed" in message and reason in message, (mode, message)
        browser.get(console.console + "/")
        assert "/console/login" in browser.current_url, f"{mode}: no session was opened"
    provider.mode = "good"
    # A user no mapping matches is refused too.
    provider.user = dict(provider.user, sub="mallory", email="mallory@elsewhere.test", groups=["visitors"])
    follow_single_sign_on(browser, console)
    assert "no role mapping matches" in browser.find_element(By.ID, "message").text
    failed = console.audit(action="sign_in_failed")
    assert len(failed) == failures_before + 5 and failed[0]["actor"] == f"oidc:{provider.issuer}#mallory"


def test_an_auditor_sees_no_controls_and_forged_or_cross_site_posts_change_nothing(console, browser, provider):
    provider.mode = "good"
    provider.user = {"sub": "alice", "email": "alice@example.com", "email_verified": True, "groups": ["console-auditors"]}
    console.api("/admin/roles", {"claim": "group", "value": "console-auditors", "role": "auditor"}, method="PUT")
    follow_single_sign_on(browser, console)
    assert "auditor" in browser.find_element(By.CSS_SELECTOR, "header .who").text
    for path in ("/", "/accounts", "/accounts/acme-console", "/keys?account=acme-console", "/ledger", "/spend",
                 "/cluster", "/audit", "/access"):
        browser.get(console.console + path)
        forms = [f.get_attribute("action") for f in browser.find_elements(By.CSS_SELECTOR, "form[method=post]")]
        assert [urllib.parse.urlparse(a).path for a in forms] == ["/console/logout"], (path, forms)
    token = csrf_of(browser)
    before = console.api("/admin/accounts?limit=1000")["data"]
    balance = console.api("/admin/accounts/acme-console/balance")["balance"]
    status, _, body = fetch(browser, console, "/console/accounts", {"csrf_token": token, "name": "Forged"})
    assert status == 403 and "may not" in body
    status, _, _ = fetch(browser, console, "/console/accounts/acme-console/grant", {"csrf_token": token, "amount": "100"})
    assert status == 403
    assert console.api("/admin/accounts?limit=1000")["data"] == before
    assert console.api("/admin/accounts/acme-console/balance")["balance"] == balance

    # An admin session: a POST without the session's CSRF token is refused and changes nothing.
    sign_in_with_key(browser, console)
    for data in ({"name": "No token"}, {"name": "Wrong token", "csrf_token": token}):
        status, _, body = fetch(browser, console, "/console/accounts", data)
        assert status == 403 and "CSRF" in body
    assert console.api("/admin/accounts?limit=1000")["data"] == before
    # Pages are never cached and are locked to the console's own assets.
    status, headers, body = fetch(browser, console, "/console/accounts")
    assert status == 200 and headers["Cache-Control"] == "no-store"
    assert "default-src 'none'" in headers["Content-Security-Policy"] and "frame-ancestors 'none'" in headers["Content-Security-Policy"]
    assert NASTY not in body and "&lt;img src=x onerror=alert(1)&gt;" in body
    # Without a session: to the sign-in page, not the data.
    request = urllib.request.Request(console.console + "/ledger")
    opener = urllib.request.build_opener(NoRedirect)
    with pytest.raises(urllib.error.HTTPError) as redirected:
        opener.open(request, timeout=10)
    assert redirected.value.code == 303 and redirected.value.headers["Location"].startswith("/console/login?next=")


def test_a_malformed_form_is_a_400_and_the_node_keeps_serving(console):
    for body in (b"a=%", b"admin_key=%zz&csrf_token=x", b"a=\xff\xfe%", "name=é #\"<".encode()):
        request = urllib.request.Request(console.console + "/login", data=body)
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=10)
        assert refused.value.code in (400, 403), body
    with urllib.request.urlopen(console.base + "/healthz", timeout=5) as alive:
        assert alive.status == 200


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


PAGES = ["/login", "/", "/?period=week", "/accounts", "/accounts/acme-console", "/keys?account=acme-console",
         "/ledger", "/ledger?kind=charge", "/spend?by=day", "/spend?by=model", "/cluster", "/audit", "/access", "/no-such-page"]


@pytest.mark.parametrize("size", [(1280, 800), (390, 844)], ids=["desktop", "phone"])
def test_every_page_renders_without_browser_errors_and_is_screenshotted(console, size):
    os.makedirs(SCREENSHOTS, exist_ok=True)
    driver = make_browser(*size)
    try:
        for path in PAGES:
            if path == "/":
                sign_in_with_key(driver, console)
            driver.get(console.console + path)
            assert driver.execute_script("return document.readyState") == "complete"
            name = re.sub(r"[^a-z0-9]+", "-", path.lower()).strip("-")
            if path == "/" or path.startswith("/?"):
                name = "overview" + ("-" + name if name else "")
            driver.save_screenshot(os.path.join(SCREENSHOTS, f"{name}-{size[0]}x{size[1]}.png"))
            errors = [e for e in console_errors(driver) if not (path == "/no-such-page" and "404" in e["message"])]
            assert errors == [], (path, errors)
            # Nothing wider than the window at phone size but tables, which scroll in their own box.
            if size[0] < 500:
                overflow = driver.execute_script(
                    "return document.documentElement.scrollWidth - document.documentElement.clientWidth")
                assert overflow <= 1, (path, overflow)
    finally:
        driver.quit()


# Last: it spends this address's sign-in attempts.
def test_the_login_form_is_throttled_per_address_and_failures_are_audited(console):
    failures_before = len(console.audit(action="sign_in_failed", limit=1000))
    statuses = []
    for attempt in range(60):
        jar = urllib.request.HTTPCookieProcessor()
        opener = urllib.request.build_opener(jar)
        page = opener.open(console.console + "/login", timeout=10).read().decode()
        token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
        data = urllib.parse.urlencode({"csrf_token": token, "admin_key": f"sk-sb-v1-wrong-{attempt:04d}-guess-guess-guess",
                                       "next": "/console/"}).encode()
        try:
            opener.open(urllib.request.Request(console.console + "/login", data=data), timeout=10)
            statuses.append(200)
        except urllib.error.HTTPError as error:
            statuses.append(error.code)
            if error.code == 429:
                assert int(error.headers["Retry-After"]) > 0
    assert statuses[0] == 401 and 429 in statuses and statuses.count(401) <= 40
    failed = console.audit(action="sign_in_failed", limit=1000)
    assert len(failed) - failures_before == statuses.count(401)
    assert all("wrong" not in json.dumps(entry) for entry in failed), "a guessed key is never recorded"
