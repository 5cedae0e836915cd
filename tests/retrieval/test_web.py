"""The photo-search page in a real headless Chromium (Debian's `chromium`, driven by Playwright):
upload and drop a Grocery test photo, see its product among the listings, narrow the time window,
add and delete a listing with the token. Saves screenshots (runs/screenshots/ in the checkout).

Outside CI a missing browser or Playwright skips with the reason; in CI (CI=true) it fails.
"""

import base64
import os
import shutil
import tempfile
import time
from pathlib import Path

import httpx
import pytest

CHROMIUM = os.environ.get("SPNAS_CHROMIUM", "/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SHOTS = Path(__file__).resolve().parents[2] / "runs" / "screenshots"


def _missing(reason: str) -> None:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI=true but {reason} (.ci/run installs both)")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def browser_page():
    """A page of a fresh headless Chromium (its own profile folder, no network beyond loopback use)."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("the playwright package is not installed (pip install -c constraints.txt -e '.[test]')")
    if not (Path(CHROMIUM).exists() or shutil.which(CHROMIUM)):
        _missing(f"no Chromium at {CHROMIUM} (apt-get install -y chromium)")
    profile = tempfile.mkdtemp(prefix="spnas-chromium-")
    with sync_playwright() as p:
        ctx = p.chromium.launch_persistent_context(profile, executable_path=CHROMIUM, headless=True, args=ARGS,
                                                   viewport={"width": 1200, "height": 900})
        page = ctx.new_page()
        page.set_default_timeout(30_000)
        yield page
        ctx.close()
    shutil.rmtree(profile, ignore_errors=True)


def _query_with_its_product_found(d, grocery_root):
    """The first Grocery test photo (in list order) whose product the search finds among 10 listings,
    with the REST answer the page must show; the model's accuracy is the benchmarks' business."""
    from training.datasets import load_data

    from ..conftest import compose

    data = load_data(compose("serve", ["bundle=x", f"data.root={grocery_root}", "data.train_limit=10",
                                       "data.test_limit=60", "data.val_limit=10"]).data)
    for path, label in zip(data.test.ids, data.test.labels):
        product = data.classes[int(label)]
        with open(path, "rb") as f:
            r = httpx.post(f"{d.url}/search", files={"image": ("q.jpg", f.read(), "image/jpeg")}, data={"k": "10"},
                           timeout=30)
        assert r.status_code == 200, r.text
        if product in [h["title"] for h in r.json()["results"]]:
            return Path(path), product, r.json()["results"]
    pytest.fail("no test photo among the first 60 finds its product in the top 10: the bundle embeds nothing useful")


def _cards(page):
    return page.eval_on_selector_all(
        "#results .card", "cs => cs.map(c => ({id: Number(c.dataset.id), title: c.querySelector('.title').textContent,"
        " loaded: c.querySelector('img').complete && c.querySelector('img').naturalWidth > 0}))")


def _search_again(page):
    """Clear the shown results, search, and wait for the new answer."""
    page.evaluate("() => { document.getElementById('results').replaceChildren(); "
                  "document.getElementById('status').textContent = ''; }")
    page.click("#search")
    page.wait_for_function("() => / index versions? /.test(document.getElementById('status').textContent)")


def test_photo_search_page(deployment, grocery_root, browser_page):
    d, page = deployment, browser_page
    query, product, expected = _query_with_its_product_found(d, grocery_root)
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.goto(f"{d.url}/")
    assert page.title() == "spnas photo search"

    # upload: the listings the search returns, as pictures with scores and ids, its product among them
    page.set_input_files("#file", str(query))
    page.wait_for_selector("#results .card")
    page.wait_for_function("() => [...document.querySelectorAll('#results img')].every(i => i.complete)")
    cards = _cards(page)
    assert [c["id"] for c in cards] == [h["id"] for h in expected]
    assert product in [c["title"] for c in cards]
    assert all(c["loaded"] for c in cards), "every listing shows its photo"
    assert "score" in page.inner_text("#results .card .meta")
    page.screenshot(path=str(SHOTS / "photo_search.png"), full_page=True)

    # drop: the same photo dropped on the page gives the same listings
    page.evaluate("() => document.getElementById('results').replaceChildren()")
    b64 = base64.b64encode(query.read_bytes()).decode()
    page.evaluate("""(b64) => {
        const bytes = Uint8Array.from(atob(b64), c => c.charCodeAt(0));
        const dt = new DataTransfer();
        dt.items.add(new File([bytes], 'dropped.jpg', {type: 'image/jpeg'}));
        document.getElementById('drop').dispatchEvent(new DragEvent('drop', {dataTransfer: dt, bubbles: true}));
    }""", b64)
    page.wait_for_selector("#results .card")
    assert [c["id"] for c in _cards(page)] == [h["id"] for h in expected]

    # a time window with no listings in it
    page.fill("#start", "2001-01-01T00:00")
    page.fill("#end", "2001-01-02T00:00")
    _search_again(page)
    assert page.inner_text("#status").startswith("0 listings") and _cards(page) == []
    page.fill("#start", "")
    page.fill("#end", "")

    # add a listing with the token; the search finds it; delete it again
    new_id = str(9_000_000_000 + int(time.time()) % 1000)
    page.fill("#item-id", new_id)
    page.fill("#item-title", "Page test listing")
    page.set_input_files("#item-photo", str(query))
    page.click("#add")  # without the token first: refused, and the page says why
    page.wait_for_function("() => document.getElementById('manage-status').textContent.includes('401')")
    page.fill("#token", d.token)
    page.click("#add")
    page.wait_for_function(f"() => document.getElementById('manage-status').textContent.includes('{new_id} added')")
    _search_again(page)
    assert int(new_id) in [c["id"] for c in _cards(page)]
    assert "Page test listing" in [c["title"] for c in _cards(page)]
    page.screenshot(path=str(SHOTS / "photo_search_added.png"), full_page=True)
    page.click("#delete")
    page.wait_for_function(f"() => document.getElementById('manage-status').textContent.includes('{new_id} deleted')")
    _search_again(page)
    assert _cards(page) and int(new_id) not in [c["id"] for c in _cards(page)]
