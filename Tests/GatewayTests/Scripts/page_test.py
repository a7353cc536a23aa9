#!/usr/bin/python3
"""The page at / in a real headless Chromium, as a new user would use it.

Run by PageTests (Swift) against a live test server. Debian's chromium,
chromium-driver and python3-selenium (scripts/test.sh installs them), so
this runs with /usr/bin/python3, not a venv.

  page_test.py --base URL --db URL --psql PATH --out DIR [--token T] [--foreign-id ID]

It opens the page, enters the token when the gateway has tokens, checks that
every control has a name, tries bad values and expects the API's own message
next to each field, starts an export with options while its COPY is slowed
(the gateway reads PostgreSQL through a slow proxy) so the bar is seen moving, waits for
`completed`, downloads the CSV, the gzip form and the copied curl command's
file and compares each with psql's bytes, cancels an export whose COPY waits
on a table lock, deletes it, and looks at the page at a phone's width. It
saves screenshots in --out. Exit 0 when everything held, else 1 with the
reason on stderr.
"""
import argparse
import base64
import gzip
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys

DESKTOP = (1280, 1000)
PHONE = (390, 844)


class Failure(Exception):
    pass


def check(condition, message):
    if not condition:
        raise Failure(message)


def wait_for(what, condition, timeout=30.0, interval=0.1):
    deadline = time.monotonic() + timeout
    last_error = None
    while time.monotonic() < deadline:
        try:
            value = condition()
            if value:
                return value
        except Exception as error:  # a stale element while the page re-renders
            last_error = error
        time.sleep(interval)
    raise Failure(f"timed out waiting for {what}" + (f" (last error: {last_error})" if last_error else ""))


class Context:
    def __init__(self, args):
        self.base = args.base.rstrip("/")
        self.db = args.db
        self.psql = args.psql
        self.token = args.token
        self.out = args.out
        self.foreign_id = args.foreign_id
        self.other_token = args.other_token
        self.downloads = os.path.join(self.out, f"downloads-{'tokens' if self.token else 'open'}")
        # Emptied first: Chromium saves a second file of one name as "name (1)".
        shutil.rmtree(self.downloads, ignore_errors=True)
        os.makedirs(self.downloads)
        self.mode = "tokens" if self.token else "open"
        self.shots = []

    # The API, as any other client calls it.
    def api(self, method, path, expect=None):
        request = urllib.request.Request(self.base + path, method=method)
        if self.token:
            request.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                status, body = response.status, response.read()
        except urllib.error.HTTPError as error:
            status, body = error.code, error.read()
        if expect is not None:
            check(status == expect, f"{method} {path}: expected {expect}, got {status}: {body[:300]!r}")
        return status, body

    def psql_run(self, sql):
        result = subprocess.run([self.psql, "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", "-d", self.db, "-c", sql],
                                capture_output=True, timeout=60, env={**os.environ, "PGTZ": "UTC"})
        check(result.returncode == 0, f"psql failed: {result.stderr.decode()}")
        return result.stdout

    def oracle(self, select, options):
        return self.psql_run(f"\\copy ({select}) TO STDOUT WITH (FORMAT csv, HEADER true{options})")


def start_browser(ctx):
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for argument in ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                     f"--window-size={DESKTOP[0]},{DESKTOP[1]}", "--lang=en-US"]:
        options.add_argument(argument)
    options.add_experimental_option("prefs", {
        "download.default_directory": ctx.downloads,
        "download.prompt_for_download": False,
        "safebrowsing.enabled": False,
    })
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    driver.set_page_load_timeout(30)
    return driver


def screenshot(ctx, driver, name, element_id=None):
    if element_id:
        driver.execute_script("document.getElementById(arguments[0]).scrollIntoView({block: 'start'})", element_id)
    else:
        driver.execute_script("window.scrollTo(0, 0)")
    time.sleep(0.2)
    path = os.path.join(ctx.out, f"{ctx.mode}-{name}.png")
    driver.save_screenshot(path)
    ctx.shots.append(path)


def full_page_screenshot(ctx, driver, name):
    """The whole page, beyond the window (Chromium's DevTools protocol)."""
    size = driver.execute_script("return [document.documentElement.scrollWidth, document.documentElement.scrollHeight]")
    shot = driver.execute_cdp_cmd("Page.captureScreenshot", {
        "format": "png", "captureBeyondViewport": True,
        "clip": {"x": 0, "y": 0, "width": size[0], "height": size[1], "scale": 1}})
    path = os.path.join(ctx.out, f"{ctx.mode}-{name}.png")
    with open(path, "wb") as f:
        f.write(base64.b64decode(shot["data"]))
    ctx.shots.append(path)


def by_id(driver, element_id):
    return driver.find_element(By.ID, element_id)


def set_value(driver, element_id, value):
    field = by_id(driver, element_id)
    field.clear()
    if value:
        field.send_keys(value)


def first_item(driver):
    items = driver.find_elements(By.CSS_SELECTOR, "#exports > li.export")
    return items[0] if items else None


def item(driver, export_id):
    found = driver.find_elements(By.ID, f"export-{export_id}")
    return found[0] if found else None


def item_status(driver, export_id):
    element = item(driver, export_id)
    return element.get_attribute("data-status") if element else None


# MARK: Steps

def open_page(ctx, driver):
    driver.get(ctx.base + "/")
    note = wait_for("the access note", lambda: (lambda text: text if "Asking" not in text else None)(by_id(driver, "access-note").text))
    if ctx.token:
        check("needs an API token" in note, f"the note does not say a token is needed: {note!r}")
        check(by_id(driver, "token-section").is_displayed(), "no token field on a gateway with tokens")
        # Before the token: the form refuses and says so next to the token.
        by_id(driver, "start").click()
        wait_for("the ask for a token", lambda: "token" in by_id(driver, "form-error").text)
        screenshot(ctx, driver, "desktop-token")
        token_field = by_id(driver, "token")
        check(token_field.get_attribute("type") == "password", "the token field shows the token")
        token_field.send_keys(ctx.token)
        by_id(driver, "token-save").click()
        stored = driver.execute_script("return sessionStorage.getItem('csv-gateway-token')")
        check(stored == ctx.token, "the token is not kept in session storage")
        check(driver.execute_script("return localStorage.length") == 0, "something was kept in local storage")
    else:
        check("open" in note and "no token" in note, f"the note does not say the gateway is open: {note!r}")
        check(not by_id(driver, "token-section").is_displayed(), "a token field on an open gateway")
    wait_for("the list to load", lambda: by_id(driver, "list-note").text != "" or first_item(driver) is not None)


def check_names(ctx, driver):
    """Every control has an accessible name; the page is keyboard-reachable."""
    unnamed = driver.execute_script("""
        const missing = [];
        for (const el of document.querySelectorAll('input, select, textarea, button, a[href]')) {
          if (el.closest('[hidden]') || el.closest('template')) continue;
          const labelled = (el.labels && el.labels.length) || el.getAttribute('aria-label') || el.getAttribute('aria-labelledby');
          const text = (el.textContent || '').trim();
          if (!labelled && !(el.matches('button, a') && text)) missing.push(el.outerHTML.slice(0, 80));
        }
        return missing;""")
    check(not unnamed, f"controls without a name: {unnamed}")
    check(driver.execute_script("return document.documentElement.lang") == "en", "no page language")
    # Tab from the top reaches the form's first field.
    body = driver.find_element(By.TAG_NAME, "body")
    body.send_keys(Keys.TAB)
    for _ in range(12):
        if driver.switch_to.active_element.get_attribute("id") == "country_code":
            break
        driver.switch_to.active_element.send_keys(Keys.TAB)
    check(driver.switch_to.active_element.get_attribute("id") == "country_code", "the keyboard does not reach the form")


def export_count(ctx):
    _, body = ctx.api("GET", "/exports?limit=100", expect=200)
    return len(json.loads(body)["exports"])


def check_bad_values(ctx, driver):
    before = export_count(ctx)
    cases = [("min_ltv", "abc", "min_ltv=abc"), ("delimiter", "ab", "delimiter=ab"), ("country_code", "U1", "country_code=U1")]
    for field, value, query in cases:
        set_value(driver, field, value)
        by_id(driver, "start").click()
        error = wait_for(f"the error next to {field}", lambda: by_id(driver, f"{field}-error").text)
        _, body = ctx.api("POST", f"/exports/csv?{query}", expect=400)
        answer = json.loads(body)
        check(answer["parameter"] == field, f"the API named {answer['parameter']} for {query}")
        check(error == answer["message"], f"next to {field}: {error!r}, the API said {answer['message']!r}")
        check(by_id(driver, field).get_attribute("aria-invalid") == "true", f"{field} is not marked invalid")
        check(driver.switch_to.active_element.get_attribute("id") == field, f"focus is not on {field}")
        if field == "min_ltv":
            screenshot(ctx, driver, "desktop-bad-value", "new-heading")
        set_value(driver, field, "," if field == "delimiter" else "")
    # Every column unticked: the API's columns error, next to the columns.
    boxes = driver.find_elements(By.CSS_SELECTOR, "#column-list input[type=checkbox]")
    for box in boxes:
        box.click()
    by_id(driver, "start").click()
    wait_for("the error next to the columns", lambda: "columns" in by_id(driver, "columns-error").text)
    for box in boxes:
        box.click()
    check(export_count(ctx) == before, "a bad value created an export")


def wait_for_download(ctx, name, timeout=60):
    path = os.path.join(ctx.downloads, name)

    def done():
        partial = [f for f in os.listdir(ctx.downloads) if f.endswith(".crdownload")]
        return os.path.exists(path) and not partial
    wait_for(f"the download {name}", done, timeout=timeout, interval=0.2)
    with open(path, "rb") as f:
        return f.read()


def export_with_options(ctx, driver):
    # A few options: a minimum, columns reordered and one left out, ';', NULL as text.
    set_value(driver, "min_ltv", "100")
    column_list = by_id(driver, "column-list")
    full_name = column_list.find_element(By.CSS_SELECTOR, '[data-column="full_name"]')
    full_name.find_element(By.CSS_SELECTOR, "button.move").click()  # up: before email
    for name in ["created_at", "last_login_at", "country_code", "subscription_tier"]:
        column_list.find_element(By.CSS_SELECTOR, f'[data-column="{name}"] input').click()
    set_value(driver, "delimiter", ";")
    set_value(driver, "nullAs", "NULL")
    expected = ctx.oracle("SELECT id, full_name, email, lifetime_value, notes FROM users WHERE lifetime_value >= 100 ORDER BY id",
                          ", DELIMITER ';', NULL 'NULL'")
    known = {e.get_attribute("id") for e in driver.find_elements(By.CSS_SELECTOR, "#exports > li.export")}
    values = []
    # The gateway reads PostgreSQL through slow_proxy.py (PageTests), so
    # this export takes seconds and its bar can be watched.
    by_id(driver, "start").click()
    element = wait_for("the new export in the list",
                       lambda: (lambda first: first if first is not None and first.get_attribute("id") not in known else None)(first_item(driver)))
    export_id = element.get_attribute("id")[len("export-"):]
    shot = False
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        element = item(driver, export_id)
        status = element.get_attribute("data-status")
        value = element.find_element(By.TAG_NAME, "progress").get_attribute("value")
        if status == "running" and value not in (None, ""):
            values.append(float(value))
            if not shot and 0.2 < float(value) < 0.9:
                screenshot(ctx, driver, "desktop-running", "exports-heading")
                full_page_screenshot(ctx, driver, "desktop-running-full")
                shot = True
        if status in ("completed", "failed", "cancelled"):
            break
        time.sleep(0.2)
    status = wait_for("the end of the export", lambda: (lambda s: s if s in ("completed", "failed", "cancelled") else None)(item_status(driver, export_id)), timeout=60)
    check(status == "completed", f"the export ended {status}")
    moving = sorted(set(v for v in values if 0 < v < 1))
    check(len(moving) >= 2, f"the bar was not seen moving: {values}")
    check(values == sorted(values), f"the bar went back: {values}")
    element = item(driver, export_id)
    check(element.find_element(By.TAG_NAME, "progress").get_attribute("value") == "1", "the bar is not full at the end")
    _, body = ctx.api("GET", f"/exports/{export_id}/status", expect=200)
    status_json = json.loads(body)
    check(element.find_element(By.CSS_SELECTOR, ".sha").text == status_json["sha256"], "the page shows another SHA-256")
    check(str(status_json["sizeBytes"]) in element.find_element(By.CSS_SELECTOR, ".size").text.replace(",", ""), "the page shows another size")
    check(status_json["sha256"] == hashlib.sha256(expected).hexdigest(), "the API's SHA-256 is not that of psql's bytes")
    screenshot(ctx, driver, "desktop-completed", "exports-heading")
    return export_id, status_json, expected


def downloads(ctx, driver, export_id, status_json, expected):
    element = item(driver, export_id)
    day = status_json["createdAt"][:10].replace("-", "")
    name = f"users-{day}-{export_id[:8]}.csv"
    _, api_bytes = ctx.api("GET", f"/exports/{export_id}/download", expect=200)
    check(api_bytes == expected, "the API's download differs from psql")

    element.find_element(By.CSS_SELECTOR, "a.download-csv").click()
    saved = wait_for_download(ctx, name)
    check(saved == api_bytes, f"the browser's CSV ({len(saved)} bytes) differs from the API's ({len(api_bytes)})")

    element.find_element(By.CSS_SELECTOR, "a.download-gzip").click()
    packed = wait_for_download(ctx, name + ".gz")
    check(packed[:2] == b"\x1f\x8b", "the gzip download is not gzip")
    check(gzip.decompress(packed) == expected, "the gzip download does not unpack to psql's bytes")
    _, body = ctx.api("GET", f"/exports/{export_id}/status", expect=200)
    check(json.loads(body)["gzipSha256"] == hashlib.sha256(packed).hexdigest(), "the gzip file is not the one the API names")

    element.find_element(By.CSS_SELECTOR, "button.copy-curl").click()
    command = wait_for("the curl command", lambda: element.find_element(By.CSS_SELECTOR, ".curl-text").get_attribute("value"))
    check(command.startswith("curl ") and "/download.csv?expires=" in command, f"unexpected command: {command}")
    check(not ctx.token or ctx.token not in command, "the token is in the curl command")
    # In a folder of its own: with the browser's file there, `-C -` would ask for the bytes after its end.
    folder = os.path.join(ctx.downloads, "curl")
    os.makedirs(folder, exist_ok=True)
    result = subprocess.run(["/bin/sh", "-c", command], cwd=folder, capture_output=True, timeout=60)
    check(result.returncode == 0, f"the copied command failed: {result.stderr.decode()[-500:]}")
    with open(os.path.join(folder, name), "rb") as f:
        check(f.read() == expected, "the copied command's file differs from psql")


class TableLock:
    """ACCESS EXCLUSIVE on users, held by a psql session until released:
    an export's first query waits on it, so the export stays running."""

    def __init__(self, ctx):
        self.process = subprocess.Popen([ctx.psql, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", ctx.db],
                                        stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self.process.stdin.write(b"BEGIN; LOCK TABLE users IN ACCESS EXCLUSIVE MODE; SELECT 1;\n")
        self.process.stdin.flush()
        ctx_ok = wait_for("the table lock", lambda: ctx.psql_run(
            "SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation "
            "WHERE c.relname = 'users' AND l.mode = 'AccessExclusiveLock' AND l.granted").strip() == b"1")
        check(ctx_ok, "no table lock")

    def release(self):
        if self.process.poll() is None:
            self.process.stdin.write(b"ROLLBACK;\n\\q\n")
            self.process.stdin.flush()
            self.process.wait(timeout=30)


def cancel_and_delete(ctx, driver):
    set_value(driver, "country_code", "US, DE")
    for box in driver.find_elements(By.CSS_SELECTOR, 'input[name="tier"]'):
        if box.get_attribute("value") in ("pro", "enterprise"):
            box.click()
    by_id(driver, "excel").click()
    known = {e.get_attribute("id") for e in driver.find_elements(By.CSS_SELECTOR, "#exports > li.export")}
    lock = TableLock(ctx)
    try:
        by_id(driver, "start").click()
        element = wait_for("the second export",
                           lambda: (lambda first: first if first is not None and first.get_attribute("id") not in known else None)(first_item(driver)))
        export_id = element.get_attribute("id")[len("export-"):]
        check(driver.switch_to.active_element.get_attribute("id") == "start", "the focus left the start button")
        check(export_id[:8] in by_id(driver, "start-note").text, "no note says the export started")
        _, body = ctx.api("GET", f"/exports/{export_id}/status", expect=200)
        check("excel=true" in json.loads(body)["query"] and "country_code=US%2CDE" in json.loads(body)["query"],
              f"the form's options did not reach the API: {json.loads(body)['query']}")
        wait_for("the export running", lambda: item_status(driver, export_id) == "running", timeout=30)
        # Its query waits on the lock: said in words, not a bar stuck at 0 %.
        wait_for("'no rows yet' while the query waits", lambda: item(driver, export_id).find_element(By.CSS_SELECTOR, ".percent").text == "no rows yet", timeout=10)
        screenshot(ctx, driver, "desktop-waiting", "exports-heading")
        cancel = item(driver, export_id).find_element(By.CSS_SELECTOR, "button.cancel")
        check(cancel.is_displayed(), "no cancel button on a running export")
        cancel.click()
        wait_for("the export cancelled", lambda: item_status(driver, export_id) == "cancelled")
        wait_for("the focus on its delete button", lambda: "delete" in (driver.switch_to.active_element.get_attribute("class") or ""), timeout=5)
        _, body = ctx.api("GET", f"/exports/{export_id}/status", expect=200)
        check(json.loads(body)["status"] == "cancelled", "the API does not say cancelled")
        check(not item(driver, export_id).find_element(By.CSS_SELECTOR, "a.download-csv").is_displayed(), "a download button on a cancelled export")
        screenshot(ctx, driver, "desktop-cancelled", "exports-heading")
    finally:
        lock.release()
    item(driver, export_id).find_element(By.CSS_SELECTOR, "button.delete").click()
    wait_for("the export gone from the list", lambda: item(driver, export_id) is None)
    ctx.api("GET", f"/exports/{export_id}/status", expect=404)
    # Reset puts the form back to the API's defaults.
    by_id(driver, "export-form").find_element(By.CSS_SELECTOR, 'button[type="reset"]').click()
    wait_for("the form reset", lambda: by_id(driver, "country_code").get_attribute("value") == "" and not by_id(driver, "excel").is_selected())
    ticked = [box.is_selected() for box in driver.find_elements(By.CSS_SELECTOR, "#column-list input[type=checkbox]")]
    check(ticked == [True] * 9, f"the reset left columns unticked: {ticked}")


def phone(ctx, driver):
    driver.set_window_size(*PHONE)
    driver.get(ctx.base + "/")
    wait_for("the list at phone width", lambda: first_item(driver) is not None)
    width = driver.execute_script("return [document.documentElement.scrollWidth, window.innerWidth]")
    check(width[0] <= width[1], f"the page is wider than a phone's screen: {width}")
    screenshot(ctx, driver, "phone-form")
    set_value(driver, "min_ltv", "-")
    by_id(driver, "start").click()
    wait_for("the error at phone width", lambda: by_id(driver, "min_ltv-error").text)
    screenshot(ctx, driver, "phone-bad-value", "min_ltv")
    # A long value in the API's message wraps inside the screen.
    set_value(driver, "min_ltv", "1" * 300)
    by_id(driver, "start").click()
    wait_for("the long value's error", lambda: "1111" in by_id(driver, "min_ltv-error").text)
    width = driver.execute_script("return [document.documentElement.scrollWidth, window.innerWidth]")
    check(width[0] <= width[1], f"a long error makes the page wider than the screen: {width}")
    set_value(driver, "min_ltv", "")
    screenshot(ctx, driver, "phone-list", "exports-heading")
    # Buttons fit: none is cut by the screen's edge.
    overflow = driver.execute_script("""
        return [...document.querySelectorAll('#exports button:not([hidden]), #exports a.button:not([hidden])')]
          .filter((el) => el.offsetParent !== null && el.getBoundingClientRect().right > window.innerWidth + 1).length""")
    check(overflow == 0, f"{overflow} buttons reach past the screen")


def privacy(ctx, driver):
    if not ctx.token:
        return
    urls = driver.execute_script("return [location.href, ...performance.getEntriesByType('resource').map((e) => e.name)]")
    check(not any(ctx.token in url for url in urls), "the token appeared in a URL")
    if ctx.foreign_id:
        check(item(driver, ctx.foreign_id) is None, "another token's export is listed")
        check(ctx.foreign_id not in driver.page_source, "another token's export id is on the page")


def switch_tokens(ctx, driver):
    """A list answer still on its way when the token changes is dropped:
    with list requests delayed 1.5 s, the token is forgotten, or changed to
    bob's, right after a list request for alice's left; alice's exports must
    not come back."""
    if not ctx.other_token:
        return
    shown = {e.get_attribute("id") for e in driver.find_elements(By.CSS_SELECTOR, "#exports > li.export")}
    check(shown, "nothing listed before the switch")
    driver.execute_script("""
        const original = window.fetch;
        window.fetch = (url, options) => String(url).startsWith('/exports?')
          ? new Promise((resolve) => setTimeout(resolve, 1500)).then(() => original(url, options))
          : original(url, options);""")
    # "Forget it" while a list answer is on its way: nothing may come back.
    by_id(driver, "token-save").click()
    by_id(driver, "token-forget").click()
    time.sleep(3)
    check(first_item(driver) is None, "exports came back after the token was forgotten")
    check(driver.execute_script("return sessionStorage.getItem('csv-gateway-token')") is None, "the token is still kept")
    # Alice, then bob at once.
    set_value(driver, "token", ctx.token)
    by_id(driver, "token-save").click()
    set_value(driver, "token", ctx.other_token)
    by_id(driver, "token-save").click()
    wait_for("bob's export listed", lambda: item(driver, ctx.foreign_id) is not None, timeout=20)
    time.sleep(3)
    now = {e.get_attribute("id") for e in driver.find_elements(By.CSS_SELECTOR, "#exports > li.export")}
    check(not (now & shown), f"the previous token's exports came back: {sorted(now & shown)}")
    set_value(driver, "token", ctx.token)
    by_id(driver, "token-save").click()
    wait_for("alice's exports again", lambda: item(driver, ctx.foreign_id) is None and first_item(driver) is not None, timeout=20)


def show_older(ctx, driver):
    """More exports than a page: "Show older exports", used from the
    keyboard, adds 20 at a time, then goes, leaving the focus in the list."""
    for index in range(41):
        ctx.api("POST", f"/exports/csv?columns=id&min_ltv=9990.{index:02d}", expect=202)
    _, body = ctx.api("GET", "/exports?limit=100", expect=200)
    total = len(json.loads(body)["exports"])
    check(total > 40, f"only {total} exports to page through")
    driver.get(ctx.base + "/")
    more = wait_for("the Show older button", lambda: (lambda b: b if b.is_displayed() else None)(by_id(driver, "more")))
    count = lambda: len(driver.find_elements(By.CSS_SELECTOR, "#exports > li.export"))
    check(count() == 20, f"{count()} exports on the first page")
    for expected in (40, total):
        more.send_keys(Keys.ENTER)
        wait_for(f"{expected} exports shown", lambda: count() == expected)
        if expected < total:
            check(more.is_displayed() and driver.switch_to.active_element.get_attribute("id") == "more", "the button lost the focus")
    wait_for("the button gone", lambda: not more.is_displayed())
    focused = driver.switch_to.active_element
    check(focused.tag_name != "body" and focused.find_elements(By.XPATH, "ancestor::ul[@id='exports']"), "the focus is not in the list")
    ids = [e.get_attribute("id") for e in driver.find_elements(By.CSS_SELECTOR, "#exports > li.export")]
    check(len(set(ids)) == len(ids), "an export is listed twice")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--base", required=True)
    parser.add_argument("--db", required=True)
    parser.add_argument("--psql", default="psql")
    parser.add_argument("--out", required=True)
    parser.add_argument("--token")
    parser.add_argument("--foreign-id")
    parser.add_argument("--other-token")
    args = parser.parse_args()
    ctx = Context(args)
    driver = start_browser(ctx)
    step = "start"
    try:
        for step, action in [("open", open_page), ("names", check_names), ("bad values", check_bad_values)]:
            action(ctx, driver)
        step = "export"
        export_id, status_json, expected = export_with_options(ctx, driver)
        step = "downloads"
        downloads(ctx, driver, export_id, status_json, expected)
        for step, action in [("cancel", cancel_and_delete), ("privacy", privacy), ("switch tokens", switch_tokens), ("phone", phone),
                             ("show older", show_older)]:
            action(ctx, driver)
        # Refusals the test provoked (400, 401, 404) are logged by the
        # network; anything else (a script error, a CSP refusal) is a defect.
        logs = [entry for entry in driver.get_log("browser") if entry.get("level") == "SEVERE" and entry.get("source") != "network"]
        check(not logs, f"errors in the browser's console: {logs}")
    except Exception as error:
        try:
            screenshot(ctx, driver, f"failed-{step.replace(' ', '-')}")
        except Exception:
            pass
        print(f"FAILED at {step} ({ctx.mode}): {type(error).__name__}: {error}", file=sys.stderr)
        return 1
    finally:
        driver.quit()
    print(json.dumps({"mode": ctx.mode, "screenshots": ctx.shots}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
