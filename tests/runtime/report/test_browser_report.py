"""The run report as a person sees it: report.html of a real (tiny) run, loaded in
headless Chromium, at a desktop width and at a phone's.

Checked in the page itself: no console errors or failed loads, every chart drawn (its
image decoded, a non-zero box inside the page), and at a phone's width nothing wider
than the screen (no sideways scrolling of the page).

Chromium is driven over the DevTools protocol on a pipe (``--remote-debugging-pipe``:
JSON messages separated by NUL bytes on file descriptors 3 and 4), so nothing but the
standard library is needed. Where no Chromium is installed the tests skip and say so
(on Debian: ``apt-get install chromium``).

Also a tool: ``python tests/runtime/report/test_browser_report.py REPORT.html OUT.png [WIDTH]`` takes a
full-page screenshot (how bench/results/quickstart-report*.png were made).
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from conftest import ROOT

PHONE = 390  # CSS pixels: a common phone's width
DESKTOP = 1280
CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")


def find_chromium() -> str | None:
    explicit = os.environ.get("FTSPEC_CHROMIUM")
    if explicit:
        return explicit
    for name in CANDIDATES:
        path = shutil.which(name)
        if path:
            return path
    return None


class BrowserError(RuntimeError):
    pass


class Chromium:
    """Headless Chromium with one page, spoken to over the DevTools pipe."""

    def __init__(self, binary: str, timeout: float = 60.0):
        self.timeout = timeout
        self._profile = tempfile.mkdtemp(prefix="ftspec-chromium-")
        to_child_r, self._to_child = os.pipe()
        self._from_child, from_child_w = os.pipe()

        def child_fds() -> None:  # the browser reads commands on fd 3 and answers on fd 4
            os.dup2(to_child_r, 3)
            os.dup2(from_child_w, 4)

        args = [binary, "--headless", "--remote-debugging-pipe", "--no-sandbox", "--disable-gpu",
                "--disable-dev-shm-usage", "--no-first-run", "--no-default-browser-check", "--hide-scrollbars",
                f"--user-data-dir={self._profile}", "about:blank"]
        self.process = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.PIPE, preexec_fn=child_fds, pass_fds=(3, 4))
        os.close(to_child_r)
        os.close(from_child_w)
        self._buffer = b""
        self._next_id = 0
        self.events: list[dict] = []
        self.session = None
        try:
            target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
            self.session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
            for domain in ("Page", "Runtime", "Log"):
                self.send(f"{domain}.enable", session=True)
        except BaseException:
            self.close()
            raise

    # -- the protocol

    def _read_message(self, deadline: float) -> dict:
        while b"\0" not in self._buffer:
            if time.monotonic() > deadline:
                raise BrowserError("Chromium did not answer in time")
            import select

            ready, _, _ = select.select([self._from_child], [], [], 0.5)
            if ready:
                chunk = os.read(self._from_child, 1 << 20)
                if not chunk:
                    err = self.process.stderr.read().decode(errors="replace")[-2000:] if self.process.stderr else ""
                    raise BrowserError(f"Chromium closed the pipe: {err}")
                self._buffer += chunk
        raw, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(raw)

    def send(self, method: str, params: dict | None = None, session: bool = False) -> dict:
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = self.session
        os.write(self._to_child, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + self.timeout
        while True:
            reply = self._read_message(deadline)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise BrowserError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            if "method" in reply:
                self.events.append(reply)

    def wait_for(self, method: str) -> dict:
        deadline = time.monotonic() + self.timeout
        for i, event in enumerate(self.events):
            if event.get("method") == method:
                return self.events.pop(i)
        while True:
            event = self._read_message(deadline)
            if event.get("method") == method:
                return event
            if "method" in event:
                self.events.append(event)

    # -- what a test does with a page

    def open(self, url: str, width: int, height: int = 900, mobile: bool = False) -> None:
        self.send("Emulation.setDeviceMetricsOverride",
                  {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile}, session=True)
        self.send("Page.navigate", {"url": url}, session=True)
        self.wait_for("Page.loadEventFired")

    def evaluate(self, expression: str):
        result = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True, "awaitPromise": True},
                           session=True)
        if "exceptionDetails" in result:
            raise BrowserError(f"script failed: {result['exceptionDetails']}")
        return result["result"].get("value")

    def problems(self) -> list[str]:
        """Console errors, uncaught exceptions and failed loads the page has reported so far."""
        self.send("Runtime.evaluate", {"expression": "0"}, session=True)  # flush events that came before
        found = []
        for event in self.events:
            method, params = event.get("method"), event.get("params", {})
            if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
                found.append("console: " + " ".join(str(a.get("value", a.get("description", "")))
                                                    for a in params.get("args", [])))
            elif method == "Runtime.exceptionThrown":
                details = params.get("exceptionDetails", {})
                found.append("exception: " + str(details.get("exception", {}).get("description")
                                                 or details.get("text")))
            elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
                entry = params["entry"]
                found.append(f"log ({entry.get('source')}): {entry.get('text')} {entry.get('url', '')}".strip())
        return found

    def screenshot(self, path: Path) -> None:
        """The whole page, as tall as its content, at the width last opened."""
        size = self.evaluate("[document.documentElement.scrollWidth, document.documentElement.scrollHeight]")
        shot = self.send("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True,
                                                    "clip": {"x": 0, "y": 0, "width": size[0], "height": size[1],
                                                             "scale": 1}},
                         session=True)
        Path(path).write_bytes(base64.b64decode(shot["data"]))

    def close(self) -> None:
        try:
            if self.session is not None:
                os.write(self._to_child, json.dumps({"id": 0, "method": "Browser.close"}).encode() + b"\0")
        except OSError:
            pass
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        for fd in (self._to_child, self._from_child):
            try:
                os.close(fd)
            except OSError:
                pass
        if self.process.stderr:
            self.process.stderr.close()
        shutil.rmtree(self._profile, ignore_errors=True)


# What the page is asked about itself. A chart counts as visible when its image has
# decoded (naturalWidth), it has a box of some size, it is not hidden, and its box lies
# inside the page horizontally. Overflow: the page is wider than the window (it would
# scroll sideways), with the elements that stick out past the right edge.
LAYOUT = r"""
(() => {
  const view = document.documentElement.clientWidth;
  const charts = [...document.querySelectorAll('figure img, img')].map(img => {
    const box = img.getBoundingClientRect();
    const style = getComputedStyle(img);
    return {alt: img.alt, natural: img.naturalWidth, width: box.width, height: box.height, left: box.left,
            right: box.right,
            hidden: style.visibility === 'hidden' || style.display === 'none' || img.offsetParent === null,
            complete: img.complete};
  });
  const wide = [...document.body.querySelectorAll('*')].filter(el => el.getBoundingClientRect().right > view + 1)
    .map(el => el.tagName.toLowerCase() + (el.className ? '.' + el.className : '') + ' '
               + Math.round(el.getBoundingClientRect().right) + 'px')
    .slice(0, 8);
  return {view, scrollWidth: document.documentElement.scrollWidth, bodyScrollWidth: document.body.scrollWidth,
          charts, wide, headings: [...document.querySelectorAll('h1, h2')].map(h => h.textContent)};
})()
"""


def inspect(browser: Chromium, html: Path, width: int) -> dict:
    browser.events.clear()
    browser.open(html.resolve().as_uri(), width, mobile=width < 600)
    layout = browser.evaluate(LAYOUT)
    layout["problems"] = browser.problems()
    return layout


def failures(layout: dict) -> list[str]:
    """What a person would see wrong on the page, one line each (empty: nothing)."""
    found = list(layout["problems"])
    if not layout["charts"]:
        found.append("no chart on the page")
    for chart in layout["charts"]:
        name = chart["alt"] or "an image"
        if not chart["natural"]:
            found.append(f"chart {name!r}: the image did not load")
        if chart["hidden"] or chart["width"] < 50 or chart["height"] < 50:
            found.append(f"chart {name!r}: not visible ({chart['width']:.0f}×{chart['height']:.0f} px)")
        if chart["left"] < 0 or chart["right"] > layout["view"] + 1:
            found.append(f"chart {name!r}: outside the page ({chart['left']:.0f}..{chart['right']:.0f} px of "
                         f"{layout['view']})")
    if max(layout["scrollWidth"], layout["bodyScrollWidth"]) > layout["view"]:
        found.append(f"the page scrolls sideways at {layout['view']} px: {layout['scrollWidth']} px wide; "
                     f"past the edge: {', '.join(layout['wide'])}")
    return found


# ----------------------------------------------------------------------------- tests

CHROMIUM = find_chromium()
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="no Chromium installed (Debian: apt-get install chromium)")

TINY_RUN = ["--profile", "smoke", "--set", "model.hidden_size=32", "--set", "model.num_layers=1",
            "--set", "model.num_heads=2", "--set", "eval.limit=24", "--set", "data.limit=48"]


@pytest.fixture(scope="module")
def browser():
    if CHROMIUM is None:
        pytest.skip("no Chromium installed (Debian: apt-get install chromium)")
    chromium = Chromium(CHROMIUM)
    yield chromium
    chromium.close()


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    """report.html of a real tiny run of the quickstart (about half a minute on a CPU)."""
    if CHROMIUM is None:
        pytest.skip("no Chromium installed (Debian: apt-get install chromium)")
    pytest.importorskip("torch")
    work = tmp_path_factory.mktemp("browser-run")
    shutil.copytree(ROOT / "specs", work / "specs")
    (work / ".git").mkdir()  # the repository root for the spec's paths
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    result = subprocess.run([sys.executable, "-m", "ftspec", "run", "specs/quickstart.yaml", *TINY_RUN], cwd=work,
                            env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode in (0, 3), result.stdout[-3000:] + result.stderr[-3000:]
    found = sorted(work.glob("runs/*/report.html"))
    assert found, result.stdout[-3000:]
    return found[0]


@needs_chromium
@pytest.mark.parametrize("width", [DESKTOP, PHONE], ids=["desktop", "phone"])
def test_the_report_reads_well_in_a_browser(browser, report, width):
    layout = inspect(browser, report, width)
    assert layout["headings"] and layout["headings"][0].startswith("ftspec report"), layout["headings"]
    assert failures(layout) == [], failures(layout)


@needs_chromium
def test_the_checks_see_a_broken_page(browser, report, tmp_path):
    """Each check can fail: a chart whose image does not decode, a chart hidden, a script
    error, and a wide table, each put into a copy of the real report."""
    html = report.read_text(encoding="utf-8")
    assert "data:image/png;base64," in html
    broken = {
        "image": (html.replace("data:image/png;base64,", "data:image/png;base64,AAAA", 1), "did not load"),
        "hidden": (html.replace("<figure>", '<figure style="display:none">', 1), "not visible"),
        "script": (html.replace("</body>", "<script>undefinedFunction()</script></body>"), "exception"),
        "wide": (html.replace("</body>", '<pre>' + "x" * 400 + "</pre></body>"), "scrolls sideways"),
    }
    for name, (text, expected) in broken.items():
        page = tmp_path / f"{name}.html"
        page.write_text(text, encoding="utf-8")
        found = failures(inspect(browser, page, PHONE))
        assert any(expected in line for line in found), (name, found)


def main(argv: list[str]) -> int:
    if len(argv) not in (2, 3):
        print("usage: python tests/runtime/report/test_browser_report.py REPORT.html OUT.png [WIDTH]", file=sys.stderr)
        return 2
    if CHROMIUM is None:
        print("no Chromium installed (Debian: apt-get install chromium)", file=sys.stderr)
        return 2
    width = int(argv[2]) if len(argv) == 3 else DESKTOP
    chromium = Chromium(CHROMIUM)
    try:
        layout = inspect(chromium, Path(argv[0]), width)
        chromium.screenshot(Path(argv[1]))
    finally:
        chromium.close()
    for line in failures(layout):
        print(line, file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
