"""Real-browser tests of the web console: Debian's chromium driven by Playwright against a real
``vislex serve`` on loopback (embedded Redis, one worker), with small generated word spaces and a
tiny CLIP.

Skipped with the reason when Playwright or a chromium binary is missing (``make test`` installs both
where it can: Playwright from the package registry, chromium with apt when run as root). Playwright
never downloads a browser here: it drives the system's (``VISLEX_CHROMIUM`` or the first of
chromium / chromium-browser / google-chrome on PATH).

Screenshots go to ``test-artifacts/browser/`` (git-ignored; ``VISLEX_TEST_ARTIFACTS`` moves it).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlparse

import httpx
import numpy as np
import pytest

from services.infra.redis import free_port
from tests.conftest import write_npy_space

ROOT = Path(__file__).resolve().parents[2]
N_WORDS, DIM = 400, 32
SEED_PAIRS = 150  # the dictionary uploaded to the alignment job: w_i d_i for i < SEED_PAIRS
API_KEY = "console-test-key-0123456789"  # writes need it (reads stay open): the tests enter it in the console
AUTH = {"Authorization": f"Bearer {API_KEY}"}
LOOPBACK = {"127.0.0.1", "localhost", "[::1]", "::1"}


def chromium_path() -> str | None:
    explicit = os.environ.get("VISLEX_CHROMIUM")
    if explicit:
        return explicit if Path(explicit).is_file() else None
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        found = shutil.which(name)
        if found:
            return found
    return None


@pytest.fixture(scope="session")
def artifacts() -> Path:
    folder = Path(os.environ.get("VISLEX_TEST_ARTIFACTS", ROOT / "test-artifacts")) / "browser"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


# Package scope, not session: Playwright's sync API keeps an asyncio loop running in the main thread
# while it is open, and every later test calling asyncio.run() would fail ("cannot be called from a
# running event loop"). Closing it when the browser tests end keeps the rest of the suite clean.
@pytest.fixture(scope="package")
def browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("Playwright is not installed (pip install playwright; `make test` installs it)")
    executable = chromium_path()
    if executable is None:
        pytest.skip("no chromium binary (apt-get install chromium, or set VISLEX_CHROMIUM): browser tests need one")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=executable, headless=True,
                                     args=["--no-sandbox", "--disable-dev-shm-usage"])
        yield browser
        browser.close()


class Page:
    """A browser tab on the console that refuses (and records) every request off loopback."""

    def __init__(self, browser, base: str, artifacts: Path, name: str, viewport=(1280, 900)):
        self.base = base
        self.artifacts = artifacts
        self.name = name
        self.external: list[str] = []
        self.console_errors: list[str] = []
        self.context = browser.new_context(viewport={"width": viewport[0], "height": viewport[1]}, accept_downloads=True)
        self.context.route("**/*", self._guard)
        self.page = self.context.new_page()
        self.page.on("console", lambda m: self.console_errors.append(m.text) if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.console_errors.append(str(e)))

    def _guard(self, route):
        host = urlparse(route.request.url).hostname or ""
        if route.request.url.startswith(("data:", "blob:")) or host in LOOPBACK:
            route.continue_()
        else:
            self.external.append(route.request.url)
            route.abort()

    def shot(self, step: str, full_page: bool = True) -> Path:
        path = self.artifacts / f"{self.name}-{step}.png"
        self.page.screenshot(path=str(path), full_page=full_page)
        return path

    def close(self) -> None:
        self.context.close()


@pytest.fixture()
def open_page(browser, console_server, artifacts, request):
    pages: list[Page] = []

    def factory(path: str | None = "/", viewport=(1280, 900), suffix: str = "") -> Page:
        p = Page(browser, console_server["base"], artifacts, request.node.name + suffix, viewport)
        if path is not None:  # None: the test routes requests first, then opens the page
            p.page.goto(console_server["base"] + path)
        pages.append(p)
        return p

    yield factory
    for p in pages:
        external, errors = p.external, p.console_errors
        p.close()
        assert not external, f"the page tried to load from outside the server: {external}"
        # 4xx/5xx answers the tests provoke are logged by the browser as failed loads; nothing else may fail.
        unexpected = [e for e in errors if "Failed to load resource" not in e]
        assert not unexpected, f"errors in the browser console: {unexpected}"


# ---- the server ------------------------------------------------------------------------------------------
def _spaces(tmp: Path) -> dict[str, Path]:
    """en (w_i), fr (m_i) and de (d_i): fr and de are rotations of en plus a little noise."""
    rng = np.random.default_rng(11)
    en = rng.standard_normal((N_WORDS, DIM)).astype(np.float32)
    out = {"en": write_npy_space(tmp, "en", [f"w{i}" for i in range(N_WORDS)], en)}
    for lang, prefix in (("fr", "m"), ("de", "d")):
        q, _ = np.linalg.qr(rng.standard_normal((DIM, DIM)))
        out[lang] = write_npy_space(tmp, lang, [f"{prefix}{i}" for i in range(N_WORDS)],
                                    en @ q + 0.02 * rng.standard_normal((N_WORDS, DIM)))
    return out


def _clip(tmp: Path) -> dict[str, str]:
    """Settings of a tiny CLIP and its image folder: the compact CLIP trained on coloured photos when this
    build has it (services/clip/testing.py), else a random-weight tiny open_clip over noise images."""
    try:
        from services.clip.testing import tiny_trained_clip
    except ImportError:
        tiny_trained_clip = None
    if tiny_trained_clip is not None:
        checkpoint = tiny_trained_clip(tmp / "clip")
        return {"VISLEX_CLIP_CHECKPOINT": str(checkpoint), "VISLEX_IMAGES_DIR": str(tmp / "clip" / "data" / "images"),
                "VISLEX_CLIP_MODELS": json.dumps({"fr": {"reuse": "en"}}), "kind": "trained"}
    from services.retrieval.testing import tiny_clip_config
    from tests.conftest import random_clip_checkpoint, write_random_pngs

    config = tiny_clip_config()
    checkpoint = random_clip_checkpoint("vislex-tiny-console", config, tmp / "tiny-clip.pt")
    images = write_random_pngs(tmp / "images", 24)
    models = {"en": {"model": "vislex-tiny-console", "checkpoint": str(checkpoint), "model_config": config},
              "fr": {"reuse": "en"}}
    return {"VISLEX_CLIP_MODELS": json.dumps(models), "VISLEX_IMAGES_DIR": str(images), "kind": "random"}


def _wait(url: str, proc: subprocess.Popen, log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"vislex serve exited ({proc.returncode}); log:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"{url} not 200 after {timeout:.0f} s; log:\n{log.read_text()[-3000:]}")


def _wait_component(base: str, name: str, timeout: float = 180) -> dict:
    """Optional components (CLIP, uCLIP) load after /readyz turns 200: wait until ``name`` has loaded or failed."""
    deadline = time.monotonic() + timeout
    state: dict = {}
    while time.monotonic() < deadline:
        body = httpx.get(base + "/readyz", timeout=5).json()
        components = body.get("components") or body.get("error", {}).get("detail", {}).get("components", {})
        state = components.get(name, {})
        if state.get("state") not in (None, "pending", "loading"):
            return state
        time.sleep(0.3)
    return state


def _train_heads(base: str, images_dir: str) -> dict:
    """uCLIP heads through the API (a job on the server's worker), so text searches across languages work."""
    colours = ["red", "green", "blue", "yellow", "black", "white", "purple", "orange", "grey", "pink", "brown", "cyan"]
    body = {"queries": [f"a {c} photo" for c in colours] + [f"something {c}" for c in colours],
            "images_dir": images_dir, "texts": ["une photo rouge", "une photo bleue", "ein rotes Foto", "ein blaues Foto"],
            "config": {"heads": {"hidden_dim": 32, "out_dim": 16}, "epochs": 3, "batch_size": 8}}
    job = httpx.post(base + "/v1/uclip/trainings", json=body, headers=AUTH, timeout=30).json()
    deadline = time.monotonic() + 180
    while job.get("state") in ("queued", "running") and time.monotonic() < deadline:
        time.sleep(0.5)
        job = httpx.get(f"{base}/v1/uclip/trainings/{job['id']}", timeout=10).json()
    return job


@pytest.fixture(scope="package")
def console_server(tmp_path_factory, browser):
    """``vislex serve`` on a free loopback port: spaces en/fr/de, an en-fr mapping (procrustes on a seed
    dictionary, made by `vislex align`), no de mapping (a job makes it), a tiny CLIP, its photos, uCLIP heads.

    ``VISLEX_CONSOLE_TEST_SERVER=http://127.0.0.1:PORT`` (+ ``VISLEX_CONSOLE_TEST_IMAGES``, its image folder)
    points the tests at a server already set up that way instead (debugging the pages without restarts)."""
    external = os.environ.get("VISLEX_CONSOLE_TEST_SERVER")
    if external:
        yield {"base": external.rstrip("/"), "clip": "trained", "images_dir": Path(os.environ["VISLEX_CONSOLE_TEST_IMAGES"])}
        return
    tmp = tmp_path_factory.mktemp("console")
    spaces = _spaces(tmp / "spaces")
    seeds = tmp / "en-fr.seed.txt"
    seeds.write_text("".join(f"w{i} m{i}\n" for i in range(SEED_PAIRS)))
    subprocess.run([sys.executable, "-m", "vislex.cli", "align", str(spaces["en"]), str(spaces["fr"]), "--method",
                    "procrustes", "--dictionary", str(seeds), "--out", str(tmp / "en-fr.npz")],
                   check=True, cwd=ROOT, capture_output=True, timeout=300)
    clip = _clip(tmp)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("VISLEX_")}
    env.update({
        "VISLEX_DATA_DIR": str(tmp / "data"), "VISLEX_PORT": str(port), "VISLEX_PROBE_PORT": "0",
        "VISLEX_SPACES": json.dumps({k: str(v) for k, v in spaces.items()}),
        "VISLEX_MAPPINGS": json.dumps({"en-fr": str(tmp / "en-fr.npz")}),
        "VISLEX_ENCODER_LANGUAGES": "[]", "VISLEX_ENCODER_LANGUAGES_LAZY": "[]", "VISLEX_CLIP_PRETRAINED": "",
        "VISLEX_CLIP_REFERENCE_WORDS": "50", "VISLEX_SPACE_PATH_ROOTS": json.dumps([str(tmp)]),
        "VISLEX_JOB_HEARTBEAT_S": "1", "VISLEX_LOG_LEVEL": "warning", "VISLEX_LOG_JSON": "false",
        "VISLEX_API_KEYS": API_KEY, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONPATH": str(ROOT),
        **{k: v for k, v in clip.items() if k.startswith("VISLEX_")},
    })
    log = tmp / "serve.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "vislex.cli", "serve"], cwd=ROOT, env=env, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        _wait(base + "/readyz", proc, log, timeout=240)
        for component in ("clip", "uclip"):
            state = _wait_component(base, component)
            assert state.get("state") == "ready", f"{component}: {state}\n{log.read_text()[-3000:]}"
        heads = _train_heads(base, clip["VISLEX_IMAGES_DIR"])
        assert heads.get("state") == "succeeded", f"uCLIP heads training: {heads}\n{log.read_text()[-3000:]}"
        yield {"base": base, "clip": clip["kind"], "images_dir": Path(clip["VISLEX_IMAGES_DIR"]), "tmp": tmp, "log": log}
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(60)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait(10)
