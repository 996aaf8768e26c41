"""The templates through ComfyUI's real frontend: headless Chromium (Debian's, driven by Playwright) on the
real server on 127.0.0.1, with placeholder (empty) model files.

Each template is fetched from the server's template route, loaded with ``app.loadGraphData`` and queued
with ``app.queuePrompt`` as the Queue button does; the frontend's own POST /prompt must be accepted
(no validation error; running it later fails on the empty model files, which is fine). Then one bad
setting must give exactly one node error, under its input.

Needs Playwright (pip) and Chromium (/usr/bin/chromium, or ULTRAGEN_CHROMIUM); .ci/run installs both.
Without them the test is skipped, except when ULTRAGEN_REQUIRE_COMFYUI=1 (CI), where it fails.
"""
from __future__ import annotations

import json
import os
import urllib.parse
from pathlib import Path

import pytest

from comfyui_finder import PACK_DIR, find_comfyui
from harness import PACK_NAME, placeholder, running_server
from test_server import get

CHROMIUM = os.environ.get("ULTRAGEN_CHROMIUM", "/usr/bin/chromium")
REQUIRED = os.environ.get("ULTRAGEN_REQUIRE_COMFYUI") == "1" or os.environ.get("CI", "").lower() == "true"
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--no-first-run", "--disable-dev-shm-usage"]
WORKFLOWS = sorted((PACK_DIR / "workflows").glob("*.json"))


def _browser_problem() -> str | None:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the Python package playwright is not installed (pip install playwright)"
    if not (Path(CHROMIUM).is_file() and os.access(CHROMIUM, os.X_OK)):
        return f"no Chromium at {CHROMIUM} (apt-get install chromium, or set ULTRAGEN_CHROMIUM)"
    return None


@pytest.fixture(scope="module")
def frontend(tmp_path_factory):
    """(page, server url): the real server with the pack and placeholder models, and a page on its UI."""
    root, why = find_comfyui()
    if root is None:
        pytest.skip(f"ComfyUI tier skipped: {why}")
    problem = _browser_problem()
    if problem:
        if REQUIRED:
            pytest.fail(f"the browser test must run here (ULTRAGEN_REQUIRE_COMFYUI / CI): {problem}")
        pytest.skip(f"browser test skipped: {problem}")
    import numpy as np
    from PIL import Image
    from playwright.sync_api import sync_playwright

    tmp = tmp_path_factory.mktemp("frontend")
    base = tmp / "base"
    (base / "custom_nodes").mkdir(parents=True)
    (base / "custom_nodes" / PACK_NAME).symlink_to(PACK_DIR, target_is_directory=True)
    for path in WORKFLOWS:
        for m in json.loads(path.read_text())["models"]:
            (base / "models" / m["directory"]).mkdir(parents=True, exist_ok=True)
            placeholder(base / "models" / m["directory"] / m["name"])
    (base / "input").mkdir()
    Image.fromarray(np.full((32, 32, 3), 128, np.uint8)).save(base / "input" / "example.png")  # LoadImage's

    with running_server(root, base, tmp / "server.log", timeout_s=120) as url:
        with sync_playwright() as pw:
            context = pw.chromium.launch_persistent_context(
                str(tmp / "chromium-profile"), executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS)
            try:
                page = context.new_page()
                # nothing but the server on 127.0.0.1 may be contacted
                page.route(lambda u: urllib.parse.urlsplit(u).hostname not in ("127.0.0.1", None),
                           lambda route: route.abort())
                page.goto(url, wait_until="domcontentloaded")
                page.wait_for_function("() => window.app && window.app.graph && window.app.canvas", timeout=45000)
                yield page, url
            finally:
                context.close()


def queue(page, workflow: dict, edit: str = "") -> tuple[int, dict]:
    """Load ``workflow`` into the frontend, run the JS ``edit`` on the graph, press Queue (app.queuePrompt);
    return the status and JSON of the frontend's POST /prompt."""
    with page.expect_response(lambda r: r.url.endswith("/prompt") and r.request.method == "POST",
                              timeout=30000) as response:
        page.evaluate("""async ([wf, edit]) => {
            await window.app.loadGraphData(wf);
            if (edit) new Function('graph', edit)(window.app.graph);
            await window.app.queuePrompt(0, 1);
        }""", [workflow, edit])
    r = response.value
    return r.status, r.json()


def test_every_template_is_accepted_and_a_bad_setting_gives_one_error(frontend):
    page, url = frontend
    listed = get(url + "/api/workflow_templates")[PACK_NAME]
    assert sorted(listed) == sorted(p.stem for p in WORKFLOWS)
    registered = set(get(url + "/object_info"))
    queued = 0
    for name in listed:
        # the file as the template browser fetches it
        workflow = page.evaluate("async (u) => (await fetch(u)).json()",
                                 f"/api/workflow_templates/{PACK_NAME}/{urllib.parse.quote(name)}.json")
        missing = {n["type"] for n in workflow["nodes"] if n["type"] not in ("Note", "MarkdownNote")} - registered
        if missing:  # a template for newer ComfyUI versions (e.g. MultiGPU CFG Split: 0.33+)
            print(f"not queued on this ComfyUI: {name} (needs {', '.join(sorted(missing))})")
            continue
        queued += 1
        status, body = queue(page, workflow)
        assert status == 200 and body.get("prompt_id"), f"{name}: {status} {body}"
        assert not body.get("node_errors"), f"{name}: {body['node_errors']}"
    assert queued >= len(listed) - 1, "only the MultiGPU template may need a newer ComfyUI"

    # one bad setting in a template the frontend loaded: exactly one error, under that input
    workflow = json.loads((PACK_DIR / "workflows" / "UltraGen Wan 2.1 T2V 1.3B native 1080p.json").read_text())
    edit = """const node = graph.findNodesByType('UltraGenAttentionSettings')[0];
              node.widgets.find(w => w.name === 'full_attention_blocks').value = '0,x';"""
    status, body = queue(page, workflow, edit)
    assert status == 400, body
    settings_id = str(next(n["id"] for n in workflow["nodes"] if n["type"] == "UltraGenAttentionSettings"))
    assert list(body["node_errors"]) == [settings_id], body["node_errors"]
    errors = body["node_errors"][settings_id]["errors"]
    assert len(errors) == 1, errors
    assert errors[0]["extra_info"]["input_name"] == "full_attention_blocks"
    assert "'x' is not a block number" in errors[0]["details"]
