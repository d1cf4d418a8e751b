"""The web console in a real browser (chromium) against a real ``vislex serve``: every tab end to end.

Each test saves screenshots under ``test-artifacts/browser/``; the pages may not load anything from
outside the server (every such request is refused and fails the test) nor log a script error.
"""

from __future__ import annotations

import re
import time

import httpx
import pytest

from tests.browser.conftest import API_KEY, SEED_PAIRS

pytestmark = pytest.mark.slow
TIMEOUT_MS = 60_000


def expect_text(page, selector: str, pattern: str, timeout: int = TIMEOUT_MS):
    from playwright.sync_api import expect

    expect(page.locator(selector).first).to_contain_text(re.compile(pattern), timeout=timeout)


def wait_js(page, expression: str, timeout: float = TIMEOUT_MS / 1000):
    """Poll a JavaScript expression until it is truthy (the page's CSP refuses the eval behind Playwright's
    own polling of a predicate string)."""
    deadline = time.monotonic() + timeout
    while True:
        value = page.evaluate(expression)
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"still false after {timeout:.0f} s: {expression}")
        time.sleep(0.2)


def wait_ready(page):
    expect_text(page, "#status", r"^Ready")
    wait_js(page, "document.querySelector('#tr-src').options.length >= 3")


def translate(page, words: str, src: str, tgt: str, k: int = 5, retrieval: str = "csls"):
    page.select_option("#tr-src", src)
    page.select_option("#tr-tgt", tgt)
    page.fill("#tr-k", str(k))
    page.check(f"input[name=retrieval][value={retrieval}]")
    page.fill("#tr-words", words)
    page.press("#tr-words", "Enter")


def test_console_loads_offline_keyboard_tabs_and_docs(open_page):
    p = open_page()
    page = p.page
    wait_ready(page)
    options = page.eval_on_selector_all("#tr-src option", "els => els.map(e => e.value)")
    assert options == ["de", "en", "fr"]
    # keyboard: the tab list follows the arrow keys (and the panels follow the tabs)
    page.focus("#tab-translate")
    page.keyboard.press("ArrowRight")
    assert page.get_attribute("#tab-jobs", "aria-selected") == "true" and page.is_visible("#panel-jobs")
    assert page.evaluate("document.activeElement.id") == "tab-jobs"
    page.keyboard.press("End")
    assert page.is_visible("#panel-galleries") and page.is_hidden("#panel-translate")
    page.keyboard.press("Home")
    assert page.is_visible("#panel-translate")
    # every form control has an accessible name (a label, aria-label or the like)
    unnamed = page.evaluate("""() => [...document.querySelectorAll('input, select, textarea, button')]
        .filter(el => !(el.labels && el.labels.length) && !el.getAttribute('aria-label') && !el.textContent.trim())
        .map(el => el.id || el.outerHTML.slice(0, 60))""")
    assert unnamed == []
    page.click("#readiness summary")
    expect_text(page, "#readiness-body", r"spaces")
    p.shot("ready")
    # /docs and /redoc render from the server's own assets (the guard refuses any CDN)
    page.goto(p.base + "/docs")
    expect_text(page, ".swagger-ui .info .title", r"vislex")
    expect_text(page, ".swagger-ui", r"/v1/translate")
    p.shot("docs", full_page=False)
    page.goto(p.base + "/redoc")
    expect_text(page, "redoc, #redoc-container, body", r"/v1/alignments")
    p.shot("redoc", full_page=False)


def test_loading_state_shows_readyz_progress(open_page):
    """While the service starts, the header and the status panel show /readyz's progress (a starting server
    is simulated: the page's /readyz answers are replaced with a 503 of the contract, then the real one)."""
    p = open_page(None)
    body = {"error": {"code": "not_ready", "message": "still loading, failed or unreachable: spaces", "detail": {"components": {
        "redis": {"state": "ready", "reason": None, "required": True, "seconds": 0.01},
        "spaces": {"state": "loading", "reason": None, "required": True, "seconds": None,
                   "progress": {"languages_built": 2, "languages_total": 6, "building": "de", "seconds": 14.2,
                                "built": ["en", "fr"], "per_language_s": {"en": 7.0, "fr": 7.2}}},
        "clip": {"state": "unavailable", "reason": "no weights", "required": False, "seconds": 0.1}}}}}
    starting = {"on": True}

    def readyz(route):
        if starting["on"]:
            route.fulfill(status=503, json=body, headers={"Retry-After": "1"})
        else:
            route.continue_()

    p.page.route("**/readyz", readyz)
    p.page.goto(p.base + "/")
    expect_text(p.page, "#status", r"Starting: spaces loading · languages 2/6 \(building de\)")
    assert p.page.get_attribute("#readiness", "open") is not None  # opened while not ready
    expect_text(p.page, "#readiness-body", r"Word spaces built: 2 of 6 · building de")
    assert p.page.eval_on_selector("#ready-progress", "e => [e.value, e.max]") == [2, 6]
    expect_text(p.page, "#readiness-body", r"VISLEX_CLIP_CHECKPOINT")  # the unavailable component's setting
    p.shot("starting")
    starting["on"] = False
    expect_text(p.page, "#status", r"^Ready", timeout=10_000)


def test_translate_a_word_a_list_and_neighbours(open_page):
    p = open_page()
    page = p.page
    wait_ready(page)
    expect_text(page, "#tr-pair", r"Mapping")
    translate(page, "w7", "en", "fr", k=5)
    card = page.locator(".word-card").first
    expect_text(page, ".word-card .translations li:first-child .word", r"^m7$")
    assert card.locator(".translations li").count() == 5
    widths = page.eval_on_selector_all(".word-card .bar-fill", "els => els.map(e => e.getBoundingClientRect().width)")
    assert widths[0] > 0 and widths[0] >= max(widths) - 0.5  # the best score fills the most
    # the query's own neighbours, on demand
    card.get_by_role("button", name=re.compile("Neighbours of")).click()
    expect_text(page, ".neighbours ol li:first-child .word", r"^w\d+$")
    neighbours = card.locator(".neighbours ol li .word").all_inner_texts()
    assert len(neighbours) == 5 and "w7" not in neighbours  # its own space, the word itself left out
    p.shot("word")
    # a pasted list: each word translated, the unknown one reports its own error in place
    translate(page, "w1\nqwzx\nw2", "en", "fr", k=3, retrieval="nn")
    expect_text(page, ".word-card[data-word=qwzx] .word-error", r"qwzx|not")
    expect_text(page, ".word-card[data-word=w1] .translations li:first-child .word", r"^m1$")
    expect_text(page, ".word-card[data-word=w2] .translations li:first-child .word", r"^m2$")
    expect_text(page, "#tr-results .meta", r"1 of 3 words not translated")
    p.shot("list")
    # narrow screen: one column, still usable
    m = open_page(viewport=(390, 844), suffix="-narrow")
    wait_ready(m.page)
    translate(m.page, "w9", "en", "fr", k=4)
    expect_text(m.page, ".word-card .translations li:first-child .word", r"^m9$")
    assert m.page.evaluate("document.documentElement.scrollWidth") <= 391  # no sideways scrolling
    m.shot("word")


def test_error_states_for_bad_input(open_page):
    p = open_page()
    page = p.page
    wait_ready(page)
    # no mapping fr -> de (no job makes one): the pair line says so and the answer is the contract's 404
    page.select_option("#tr-src", "fr")
    page.select_option("#tr-tgt", "de")
    expect_text(page, "#tr-pair", r"No mapping fr → de")
    translate(page, "m3", "fr", "de")
    expect_text(page, "#tr-results .error .error-title", r"Not found \(404\)")
    # an unknown word alone: 404 naming it
    translate(page, "zzzz", "en", "fr")
    expect_text(page, "#tr-results .error", r"zzzz")
    p.shot("translate-404")
    # a job with an unknown method and malformed options: the console names the field
    page.click("#tab-jobs")
    page.fill("#job-options", "{not json")
    page.click("#job-form button[type=submit]")
    expect_text(page, "#job-feedback .error", r"Options are not valid JSON")
    page.fill("#job-options", "")
    page.click("#key-button")  # with the key (writes need one here), the service itself judges the method
    page.fill("#api-key", API_KEY)
    page.press("#api-key", "Enter")
    page.fill("#job-method", "procrustes+nope")
    page.click("#job-form button[type=submit]")
    expect_text(page, "#job-feedback .error .error-title", r"Invalid input \(422\)")
    expect_text(page, "#job-feedback .error .error-message", r"nope")
    expect_text(page, "#job-feedback .error .error-fields", r"field: method")
    expect_text(page, "#job-feedback .error .error-fields", r"known: .*procrustes")
    p.shot("job-errors")


def test_jobs_api_key_submit_watch_finish_translate_and_cancel(open_page, console_server, tmp_path):
    p = open_page("/#jobs")
    page = p.page
    wait_ready(page)
    page.select_option("#job-src", "en")
    page.select_option("#job-tgt", "de")
    page.fill("#job-method", "walip")
    page.select_option("#job-seed", "dictionary")
    seed = tmp_path / "en-de.txt"
    seed.write_text("".join(f"w{i}\td{i}\n" for i in range(SEED_PAIRS)))
    page.set_input_files("#job-dict", str(seed))
    expect_text(page, "#job-dict-info", rf"{SEED_PAIRS} pairs read")
    # writes need a key on this server: 401, then the key panel, then the same submit succeeds
    page.click("#job-form button[type=submit]")
    expect_text(page, "#job-feedback .error .error-title", r"API key needed \(401\)")
    p.shot("401")
    page.get_by_role("button", name="Enter an API key").click()
    assert page.is_visible("#key-panel") and page.evaluate("document.activeElement.id") == "api-key"
    page.fill("#api-key", API_KEY)
    page.press("#api-key", "Enter")
    expect_text(page, "#key-button", r"✓")
    assert page.evaluate("sessionStorage.getItem('vislex.apiKey')") == API_KEY
    page.click("#job-form button[type=submit]")
    expect_text(page, "#job-feedback", r"Queued|identical job already exists")  # the latter on a reused server
    card = page.get_attribute("#job-feedback a", "href")  # "#job-<id>": the card of the job just submitted
    finished_id = card.removeprefix("#job-")
    job = page.locator(card)
    expect_text(page, f"{card} .job-state", r"succeeded", timeout=120_000)
    expect_text(page, f"{card} .job-result", r"serving: installed")
    assert job.locator(".job-chart svg polyline").count() == 1  # the validation-loss curve
    assert "validation loss" in (job.locator(".job-chart svg").get_attribute("aria-label") or "").lower()
    with page.expect_download() as download:
        job.get_by_role("button", name="Dictionary (TSV)").click()
    lines = open(download.value.path(), encoding="utf-8").read().splitlines()
    assert lines and all(len(line.split("\t")) == 3 for line in lines)
    with page.expect_download() as download:
        job.get_by_role("button", name="Mapping (.npz)").click()
    assert open(download.value.path(), "rb").read(2) == b"PK"  # an .npz is a zip
    p.shot("finished")
    # its mapping is served at once: Translate en -> de answers a held-out word
    job.get_by_role("button", name="Translate with it").click()
    # the tab switches on `hashchange`, an event after the click returns: wait for it, never sample it
    page.wait_for_selector("#panel-translate", state="visible", timeout=10_000)
    assert page.input_value("#tr-tgt") == "de"
    page.fill("#tr-words", "w321")
    page.press("#tr-words", "Enter")
    expect_text(page, ".word-card .translations li:first-child .word", r"^d321$")
    p.shot("translate-with-job")
    # a long job (WALIP's paper loop, ~1 s an iteration here), cancelled while it runs
    page.click("#tab-jobs")
    max_iter = 300 + time.time_ns() % 100  # new work each run (identical work would be answered from the cache)
    page.fill("#job-options", f'{{"variant": "paper", "max_iter": {max_iter}, "patience": 300, "tol": -1}}')
    page.click("#job-form button[type=submit]")
    wait_js(page, f"(document.querySelector('#job-feedback a')?.getAttribute('href') || '#job-{finished_id}') "
                  f"!== '#job-{finished_id}'")  # the answer to this submission, not the last one
    expect_text(page, "#job-feedback", r"Queued")
    card = page.get_attribute("#job-feedback a", "href")
    slow_id = card.removeprefix("#job-")
    expect_text(page, f"{card} .job-state", r"running")
    expect_text(page, f"{card} .job-progress-label", r"\d+ / \d+")
    page.locator(card).get_by_role("button", name=re.compile("^Cancel job")).click()
    expect_text(page, f"{card} .job-state", r"cancelled", timeout=60_000)
    p.shot("cancelled")
    state = {i: httpx.get(f"{console_server['base']}/v1/alignments/{i}").json()["state"] for i in (finished_id, slow_id)}
    assert state == {finished_id: "succeeded", slow_id: "cancelled"}


def test_fingerprints_side_by_side(open_page, console_server):
    p = open_page("/#fingerprints")
    page = p.page
    wait_ready(page)
    a, b = ("red", "rouge") if console_server["clip"] == "trained" else ("dog", "chien")
    page.fill("#fp-word-a", a)
    page.fill("#fp-lang-a", "en")
    page.fill("#fp-word-b", b)
    page.fill("#fp-lang-b", "fr")
    page.fill("#fp-top", "6")
    page.click("#fp-form button[type=submit]")
    for side in ("a", "b"):
        expect_text(page, f".fp-column[data-side={side}] .verdict", r"visual word")
    wait_js(page, "[...document.querySelectorAll('.fp-column img')].length === 12 && "
                  "[...document.querySelectorAll('.fp-column img')].every(i => i.complete && i.naturalWidth > 0)")
    # the grids show what the API answers, in its order, with the shared photos marked and counted
    api = {w: httpx.get(console_server["base"] + "/v1/fingerprints", params={"word": w, "lang": lang, "top": 6}).json()
           for w, lang in ((a, "en"), (b, "fr"))}
    shown = {w: page.eval_on_selector_all(f".fp-column[data-side={side}] .image-item", "els => els.map(e => e.dataset.key)")
             for w, side in ((a, "a"), (b, "b"))}
    for w in (a, b):
        assert shown[w] == [m["name"] for m in api[w]["images"]]
        verdict = page.get_attribute(f".fp-column[data-side={'a' if w == a else 'b'}] .verdict", "data-visual")
        assert verdict == str(api[w]["is_visual"]).lower()
    shared = set(shown[a]) & set(shown[b])
    expect_text(page, "#fp-results .meta", rf"^{len(shared)} of the top 6 photos are shared")
    marked = page.eval_on_selector_all(".fp-column[data-side=a] .image-item.highlight", "els => els.map(e => e.dataset.key)")
    assert set(marked) == shared
    assert api[b]["reused_from"] == "en"
    expect_text(page, ".fp-column[data-side=b]", r"borrows the en text tower")
    p.shot("pair")
    # a word the service refuses: the error is shown in its column, the other column still answers
    page.fill("#fp-word-b", "x" * 101)
    page.click("#fp-form button[type=submit]")
    expect_text(page, ".fp-column[data-side=b] .error", r"422")
    assert page.locator(".fp-column[data-side=a] .image-item").count() == 6


def test_gallery_upload_and_search_by_text_and_photo(open_page, console_server):
    p = open_page("/#galleries")
    page = p.page
    wait_ready(page)
    page.click("#key-button")  # the key is kept per tab: enter it for this one through the panel
    page.fill("#api-key", API_KEY)
    page.press("#api-key", "Enter")
    gallery = f"colours-{time.time_ns()}"  # a new gallery each run, also against a reused server
    page.fill("#gal-name", "colours")
    page.fill("#gal-id", gallery)
    page.click("#gal-create button[type=submit]")
    wait_js(page, f"document.querySelector('#gal-select').value === '{gallery}'")
    photos = sorted(console_server["images_dir"].iterdir())[:12]
    page.set_input_files("#gal-files", [str(x) for x in photos])
    expect_text(page, "#gal-upload-out", r"Added 12")
    wait_js(page, "document.querySelectorAll('#gal-contents img').length === 12")
    # text in French
    page.fill("#gal-q", "une photo rouge")
    page.fill("#gal-lang", "fr")
    page.fill("#gal-k", "4")
    page.click("#gal-search-submit")
    wait_js(page, "document.querySelectorAll('#gal-results .image-item').length === 4")
    scores = [float(s) for s in page.eval_on_selector_all("#gal-results .score-value", "els => els.map(e => e.textContent)")]
    assert scores == sorted(scores, reverse=True)
    p.shot("text")
    # by a photo: the same photo comes first, with similarity 1
    page.check("#gal-mode-photo")
    page.set_input_files("#gal-query-file", str(photos[5]))
    page.click("#gal-search-submit")
    expect_text(page, "#gal-results .image-item:first-child .image-name", re.escape(photos[5].name))
    expect_text(page, "#gal-results .image-item:first-child .score-value", r"^(1\.000|0\.99\d)$")
    wait_js(page, "document.querySelector('#gal-results .image-item:first-child img')?.naturalWidth > 0")
    p.shot("photo")
