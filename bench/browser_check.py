"""
End-to-end check of serve.py's page in headless Chromium: open it, type a Persian prompt,
press the generate button, wait for the streamed Persian text, and save a screenshot.

    apt-get install chromium && pip install playwright    # no browser download: Debian's is used
    python bench/browser_check.py                                   # a tiny random model
    python bench/browser_check.py --out_dir=out-fawiki-small --screenshot=page.png

The server is started as in bench_serve.py (a free 127.0.0.1 port; a tiny random model unless
--out_dir is given). The check fails unless the page is right-to-left, the text arrives in
several pieces (streamed, not all at once) and holds Persian letters. Without Chromium or the
playwright package it prints why and skips.
"""

import os
import shutil
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_serve import ROOT, running_server  # noqa: E402

import common  # noqa: E402

DEFAULTS = {
    "out_dir": "",  # checkpoint folder to serve; empty = a tiny random model
    "chromium": "/usr/bin/chromium",  # Debian's package; any Chromium or Chrome binary works
    "prompt": "شیراز شهر شعر و",
    "max_tokens": 120,  # set on the page's slider before generating
    "screenshot": os.path.join(ROOT, "bench", "results", "serve_page.png"),
    "timeout": 120.0,  # seconds to wait for the page and for the generated text
}
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]
# counts every change to the generated text, to tell a stream from one late block of text
COUNT_UPDATES = """() => {
  window.textUpdates = 0;
  new MutationObserver(() => { window.textUpdates += 1; })
    .observe(document.getElementById("result"), {subtree: true, childList: true, characterData: true});
}"""
SET_SLIDER = """([id, value]) => {
  const slider = document.getElementById(id);
  slider.value = value;
  slider.dispatchEvent(new Event("input"));
}"""


def check_page(url, config):
    from playwright.sync_api import sync_playwright
    timeout_ms = config["timeout"] * 1000
    with tempfile.TemporaryDirectory() as profile, sync_playwright() as playwright:
        browser = playwright.chromium.launch_persistent_context(
            profile, executable_path=config["chromium"], headless=True, args=CHROMIUM_FLAGS,
            viewport={"width": 1000, "height": 900}, locale="fa-IR")
        try:
            page = browser.new_page()
            page.goto(url, timeout=timeout_ms)
            direction = page.evaluate("document.documentElement.dir + ' ' + document.documentElement.lang")
            if direction != "rtl fa":
                raise common.UsageError(f"the page should be dir=rtl lang=fa, found {direction!r}")
            page.wait_for_function("!document.getElementById('model').textContent.includes('…')",
                                   timeout=timeout_ms)  # /health answered
            page.fill("#prompt", config["prompt"])
            page.evaluate(SET_SLIDER, ["max_tokens", config["max_tokens"]])
            page.evaluate(COUNT_UPDATES)
            page.click("#generate")
            page.wait_for_function("document.getElementById('result').children[1]?.textContent.length > 0",
                                   timeout=timeout_ms)
            page.wait_for_function("!document.getElementById('generate').disabled", timeout=timeout_ms)
            text = page.inner_text("#result span:nth-child(2)")
            updates = page.evaluate("window.textUpdates")
            status = page.inner_text("#status")
            os.makedirs(os.path.dirname(os.path.abspath(config["screenshot"])), exist_ok=True)
            page.screenshot(path=config["screenshot"], full_page=True)
        finally:
            browser.close()
    persian_letters = sum("\u0600" <= ch <= "\u06ff" for ch in text)
    print(f"generated {len(text)} characters ({persian_letters} Persian letters) in {updates} updates; "
          f"status: {status}")
    print(f"screenshot: {config['screenshot']}")
    if persian_letters == 0 or updates < 3:
        raise common.UsageError("expected streamed Persian text: several updates holding Persian letters")


def main(argv=None):
    config, positional = common.configure(DEFAULTS, sys.argv[1:] if argv is None else argv)
    if positional:
        raise common.UsageError(f"unexpected argument {positional[0]!r} (use --key=value)")
    if not shutil.which(config["chromium"]):
        print(f"skipped: no Chromium at {config['chromium']} (apt-get install chromium, or set --chromium)")
        return
    try:
        import playwright  # noqa: F401
    except ImportError:
        print("skipped: the playwright package is missing (pip install playwright; it uses the system Chromium)")
        return
    with running_server(config["out_dir"]) as url:
        check_page(url, config)


if __name__ == "__main__":
    common.run(main)
