"""The templates through ComfyUI's real frontend: headless Chromium (Debian's, driven by Playwright) in a
1920x1080 window on the real server on 127.0.0.1, with placeholder (empty) model files; once with the
frontend the tree pins, and on ComfyUI 0.33+ also with the newest frontend (install_deps.NEWEST_FRONTEND,
served with --front-end-root from the folder tests/install_deps.py installs it into).

- The template browser lists the pack under its folder name, each card titled without "..." and pictured
  by its thumbnail (which carries the description).
- Each template opened by clicking its card opens at a zoom where the frontend draws text, every node in
  view, and the frontend's own POST /prompt for it is accepted (no validation error; running it later fails
  on the empty model files, which is fine). A template whose nodes this ComfyUI lacks says so in its title.
- One bad setting gives exactly one node error, under its input.

Needs Playwright (pip) and Chromium (/usr/bin/chromium, or ULTRAGEN_CHROMIUM); .ci/run installs both.
Without them (or without the newest frontend) the test is skipped, except when ULTRAGEN_REQUIRE_COMFYUI=1
(CI), where it fails.
"""
from __future__ import annotations

import importlib.metadata as md
import json
import os
import re
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from comfyui_finder import PACK_DIR, find_comfyui
from harness import PACK_NAME, placeholder, running_server
from install_deps import NEWEST_FRONTEND, frontend_root
from make_workflows import NEWER_NODES
from test_server import get

CHROMIUM = os.environ.get("ULTRAGEN_CHROMIUM", "/usr/bin/chromium")
REQUIRED = os.environ.get("ULTRAGEN_REQUIRE_COMFYUI") == "1" or os.environ.get("CI", "").lower() == "true"
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--no-first-run", "--disable-dev-shm-usage"]
WINDOW = {"width": 1920, "height": 1080}
WORKFLOWS = sorted((PACK_DIR / "workflows").glob("*.json"))
READABLE_ZOOM = 0.6  # node text is drawn from 8 / 14 = 0.571 (LiteGraph.Canvas.MinFontSizeForLOD 8, 14 px text)


def _browser_problem() -> str | None:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the Python package playwright is not installed (pip install playwright)"
    if not (Path(CHROMIUM).is_file() and os.access(CHROMIUM, os.X_OK)):
        return f"no Chromium at {CHROMIUM} (apt-get install chromium, or set ULTRAGEN_CHROMIUM)"
    return None


def _skip_or_fail(why: str):
    if REQUIRED:
        pytest.fail(f"the browser test must run here (ULTRAGEN_REQUIRE_COMFYUI / CI): {why}")
    pytest.skip(why)


def _tree_version(root: Path) -> tuple[int, ...]:
    found = re.search(r'__version__\s*=\s*"([\d.]+)"', (root / "comfyui_version.py").read_text())
    return tuple(int(x) for x in found.group(1).split(".")) if found else (0,)


@pytest.fixture(scope="module", params=["pinned", "newest"])
def frontend(request, tmp_path_factory):
    """(page, server url, frontend version): the real server with the pack and placeholder models, and a page
    on its UI; ``pinned``: the frontend of the Python environment, ``newest``: NEWEST_FRONTEND (0.33+ only)."""
    root, why = find_comfyui()
    if root is None:
        pytest.skip(f"ComfyUI tier skipped: {why}")
    problem = _browser_problem()
    if problem:
        _skip_or_fail(f"browser test skipped: {problem}")
    extra, expected = (), md.version("comfyui-frontend-package")
    if request.param == "newest":
        if _tree_version(root) < (0, 33):
            pytest.skip(f"frontend {NEWEST_FRONTEND} is tested against ComfyUI 0.33+ servers, not this "
                        f"{'.'.join(map(str, _tree_version(root)))}")
        static = frontend_root()
        if not (static / "index.html").is_file():
            _skip_or_fail(f"frontend {NEWEST_FRONTEND} is not in {static} (python tests/install_deps.py <ComfyUI>)")
        extra, expected = ("--front-end-root", str(static)), NEWEST_FRONTEND
    import numpy as np
    from PIL import Image
    from playwright.sync_api import sync_playwright

    tmp = tmp_path_factory.mktemp(f"frontend-{request.param}")
    base = tmp / "base"
    (base / "custom_nodes").mkdir(parents=True)
    (base / "custom_nodes" / PACK_NAME).symlink_to(PACK_DIR, target_is_directory=True)
    for path in WORKFLOWS:
        for m in json.loads(path.read_text())["models"]:
            (base / "models" / m["directory"]).mkdir(parents=True, exist_ok=True)
            placeholder(base / "models" / m["directory"] / m["name"])
    (base / "input").mkdir()
    Image.fromarray(np.full((32, 32, 3), 128, np.uint8)).save(base / "input" / "example.png")  # LoadImage's

    with running_server(root, base, tmp / "server.log", timeout_s=120, extra_args=extra) as url:
        with sync_playwright() as pw:
            context = pw.chromium.launch_persistent_context(
                str(tmp / "chromium-profile"), executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS,
                viewport=WINDOW)
            try:
                page = context.new_page()
                # nothing but the server on 127.0.0.1 may be contacted
                page.route(lambda u: urllib.parse.urlsplit(u).hostname not in ("127.0.0.1", None),
                           lambda route: route.abort())
                page.goto(url, wait_until="domcontentloaded")
                page.wait_for_function("() => window.app && window.app.graph && window.app.canvas", timeout=60000)
                version = page.evaluate("() => window.__COMFYUI_FRONTEND_VERSION__")
                assert version == expected, f"the server serves frontend {version}, not {expected}"
                yield page, url, version
            finally:
                context.close()


def open_pack_templates(page) -> None:
    """Workflow -> Browse Templates, then the pack's entry in the side bar (its cards then show)."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
    entry = page.get_by_text(PACK_NAME, exact=True).first
    for attempt in range(4):  # right after start-up the command may not be registered yet
        page.keyboard.press("Escape")  # a dialog left open (e.g. a new user's template browser)
        page.evaluate("() => window.app.extensionManager.command.execute('Comfy.BrowseTemplates')")
        try:
            entry.wait_for(state="visible", timeout=5000)
            break
        except PlaywrightTimeout:
            if attempt == 3:
                raise
    entry.click()
    page.wait_for_selector('[data-testid^="template-workflow-"]', timeout=15000)


def queue_current(page) -> tuple[int, dict]:
    """Press Queue (app.queuePrompt) on the graph the frontend holds; the status and JSON of its POST /prompt."""
    with page.expect_response(lambda r: r.url.endswith("/prompt") and r.request.method == "POST",
                              timeout=30000) as response:
        page.evaluate("async () => { await window.app.queuePrompt(0, 1); }")
    return response.value.status, response.value.json()


def interrupt_until_idle(url: str, timeout_s: float = 120.0) -> None:
    """POST /interrupt until the server runs and holds no prompt: a template that really runs here (the demo
    with its bundled model; the others stop at their placeholder model files) must not hold the CPU for the
    tests after it. An interrupt sent before the prompt starts is cleared by its start, hence the loop."""
    import time
    deadline = time.monotonic() + timeout_s
    while True:
        queue = get(url + "/queue")
        if not queue["queue_running"] and not queue["queue_pending"]:
            return
        assert time.monotonic() < deadline, f"the server still runs {queue} after {timeout_s} s of interrupts"
        urllib.request.urlopen(urllib.request.Request(url + "/interrupt", data=b"{}", method="POST"), timeout=10)
        time.sleep(0.5)


def test_template_cards_show_titles_and_pictures(frontend):
    page, url, version = frontend
    listed = get(url + "/api/workflow_templates")[PACK_NAME]
    assert sorted(listed) == sorted(p.stem for p in WORKFLOWS)
    page.evaluate("""() => { window.__ultragenLog = []; const w = console.warn;  // for a card's diagnosis below
        console.warn = (...a) => { window.__ultragenLog.push(a.map(String).join(' ').slice(0, 300)); w(...a); }; }""")
    open_pack_templates(page)
    # where the README says the pack's templates are: under "Custom Nodes" (1.27) / "Extensions" (1.49+)
    section = "Custom Nodes" if tuple(map(int, version.split(".")[:2])) < (1, 30) else "Extensions"
    assert page.get_by_text(re.compile(f"^{section}$", re.I)).first.is_visible(), f"{version}: no {section}"
    page.wait_for_function("""(n) => {  // frontend 1.27 shows 12 cards, 12 more each time the list's end is in view
        const cards = document.querySelectorAll('[data-testid^="template-workflow-"]');
        for (let el = cards[cards.length - 1]; el; el = el.parentElement) {  // scroll the list to its end
            if (el.scrollHeight > el.clientHeight + 1 && /auto|scroll/.test(getComputedStyle(el).overflowY)) {
                el.scrollTop = el.scrollHeight;
                break;
            }
        }
        return cards.length === n; }""", arg=len(listed), timeout=15000)
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
    cards = []
    for name in listed:  # each card in view until its picture has loaded (the frontends load them lazily)
        try:
            # Frontend 1.27 sets a picture's src when its card enters the view; a card already in view when the
            # list grew sometimes never gets one (src ''), and 1.49 sometimes never renders its img at all. Every
            # 40th poll without a picture takes the card out of view for one frame (its list scrolled to the
            # other end), so that it enters the view again.
            cards.append(page.wait_for_function("""(name) => {
                const c = document.querySelector(`[data-testid="template-workflow-${CSS.escape(name)}"]`);
                if (!c) return false;
                const h = c.querySelector('h3'), i = c.querySelector('img');
                const polls = window.__ultragenPolls = (window.__ultragenPolls || 0) + 1;
                if ((!i || !i.getAttribute('src')) && polls % 40 === 0) {
                    for (let el = c.parentElement; el; el = el.parentElement) {
                        if (el.scrollHeight > el.clientHeight + 1 && /auto|scroll/.test(getComputedStyle(el).overflowY)) {
                            el.scrollTop = el.scrollTop > el.scrollHeight / 2 ? 0 : el.scrollHeight;
                            return false;
                        }
                    }
                }
                c.scrollIntoView({block: 'center'});
                if (!h || !i || !i.complete || !i.naturalWidth) return false;
                return {name, title: h.textContent.trim(), size: [i.naturalWidth, i.naturalHeight],
                        cut: h.scrollWidth > h.clientWidth + 1 || h.scrollHeight > h.clientHeight + 1}; }""",
                                                arg=name, timeout=20000).json_value())
        except PlaywrightTimeout:
            state = page.evaluate("""(name) => {
                const c = document.querySelector(`[data-testid="template-workflow-${CSS.escape(name)}"]`);
                const i = c && c.querySelector('img');
                return {cards: document.querySelectorAll('[data-testid^="template-workflow-"]').length, card: !!c,
                        img: i && {src: i.src.slice(0, 120), complete: i.complete, width: i.naturalWidth},
                        error_icon: !!(c && c.querySelector('.pi-image')), log: window.__ultragenLog || []}; }""", name)
            raise AssertionError(f"{version}: card {name!r} not shown with its picture within 20 s: {state}") from None
    page.keyboard.press("Escape")
    assert sorted(c["name"] for c in cards) == sorted(listed)
    for c in cards:
        assert c["title"] == c["name"] and not c["cut"], f"{version}: card title {c['title']!r} is cut off"
        assert c["size"] == [512, 512], f"{version}: card {c['name']!r} shows no 512x512 thumbnail: {c}"
        jpg = f"{url}/api/workflow_templates/{PACK_NAME}/{urllib.parse.quote(c['name'])}.jpg"
        with urllib.request.urlopen(jpg, timeout=10) as r:  # the picture the card loads (1.49+: as a blob)
            assert r.read(2) == b"\xff\xd8", jpg


def test_every_template_opens_readable_and_is_accepted(frontend):
    page, url, version = frontend
    listed = get(url + "/api/workflow_templates")[PACK_NAME]
    registered = set(get(url + "/object_info"))
    queued = 0
    for i, name in enumerate(listed):
        workflow = json.loads((PACK_DIR / "workflows" / f"{name}.json").read_text())
        if i == 0:  # by its card, as a user opens it
            open_pack_templates(page)
            page.locator(f'[data-testid="template-workflow-{name}"]').click()
        else:  # the call the card makes (1.27 ignores openSource and restores the file's view), 2 s quicker
            page.evaluate("""async ([wf, name]) => {
                await window.app.loadGraphData(wf, true, true, name, {openSource: 'template'}); }""",
                          [workflow, name])
        page.wait_for_function("(n) => window.app.graph.nodes.length === n && "
                               "!document.querySelector('[data-testid^=\"template-workflow-\"]')",
                               arg=len(workflow["nodes"]), timeout=30000)
        page.wait_for_timeout(300)  # the view is restored / fitted in the next frames
        view = page.evaluate("""() => { const c = window.app.canvas, ds = c.ds;
            const x0 = -ds.offset[0], y0 = -ds.offset[1];
            const x1 = x0 + c.canvas.width / devicePixelRatio / ds.scale, y1 = y0 + c.canvas.height / devicePixelRatio / ds.scale;
            const outside = window.app.graph.nodes.filter(n => { const r = n.boundingRect;
                return r[0] < x0 || r[1] < y0 || r[0] + r[2] > x1 || r[1] + r[3] > y1; }).map(n => n.title);
            return {scale: ds.scale, low_quality: c.low_quality, outside}; }""")
        assert view["scale"] >= READABLE_ZOOM - 1e-6 and not view["low_quality"], f"{version} {name}: {view}"
        assert not view["outside"], f"{version} {name}: out of view when it opens: {view['outside']}"
        missing = {n["type"] for n in workflow["nodes"] if n["type"] not in ("Note", "MarkdownNote")} - registered
        if missing:  # a template for newer ComfyUI versions (NEWER_NODES: MultiGPU CFG Split, HunyuanVideo 1.5, ...)
            assert "(0.33+)" in name, f"{name} needs {sorted(missing)} and does not say which ComfyUI it needs"
            assert name in NEWER_NODES, f"{name} needs {sorted(missing)}; make_workflows.NEWER_NODES does not say so"
            page.keyboard.press("Escape")  # the frontend's "Some Nodes Are Missing" dialog
            continue
        queued += 1
        status, body = queue_current(page)
        assert status == 200 and body.get("prompt_id"), f"{version} {name}: {status} {body}"
        assert not body.get("node_errors"), f"{version} {name}: {body['node_errors']}"
        interrupt_until_idle(url)
    assert queued >= len(listed) - len(NEWER_NODES), "only the templates of NEWER_NODES may need a newer ComfyUI"


def test_a_bad_setting_gives_one_error_under_its_input(frontend):
    page, url, version = frontend
    workflow = json.loads((PACK_DIR / "workflows" / "Wan 2.1 1.3B native 1080p.json").read_text())
    page.keyboard.press("Escape")
    page.evaluate("""async (wf) => {
        await window.app.loadGraphData(wf);
        const node = window.app.graph.findNodesByType('UltraGenAttentionSettings')[0];
        node.widgets.find(w => w.name === 'full_attention_blocks').value = '0,x';
    }""", workflow)
    status, body = queue_current(page)
    assert status == 400, body
    settings_id = str(next(n["id"] for n in workflow["nodes"] if n["type"] == "UltraGenAttentionSettings"))
    assert list(body["node_errors"]) == [settings_id], body["node_errors"]
    errors = body["node_errors"][settings_id]["errors"]
    assert len(errors) == 1, errors
    assert errors[0]["extra_info"]["input_name"] == "full_attention_blocks"
    assert "'x' is not a block number" in errors[0]["details"]
