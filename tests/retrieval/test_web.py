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

    data = load_data(compose("serve", ["bundle=x", "data=grocery", f"data.root={grocery_root}", "data.train_limit=10",
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


def _serve(args: list[str], cwd: Path):
    """`spnas-serve ...` as a user starts it; returns (process, the page's URL, the lines printed so far)."""
    import subprocess
    import sys
    import threading

    p = subprocess.Popen([str(Path(sys.executable).parent / "spnas-serve"), *args], cwd=cwd, text=True,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(p.stdout), daemon=True).start()
    deadline = time.monotonic() + 240
    while not any("photo search on http" in x for x in lines):
        assert p.poll() is None and time.monotonic() < deadline, "".join(lines)[-3000:]
        time.sleep(0.1)
    url = next(x for x in lines if "photo search on http" in x).split("photo search on ")[1].split("/ ")[0]
    while True:  # the line is printed as the gateway starts: wait until it answers
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                break
        except httpx.TransportError:
            pass
        assert p.poll() is None and time.monotonic() < deadline, "".join(lines)[-3000:]
        time.sleep(0.1)
    return p, url, lines


def test_serving_your_folder_the_page_names_the_model_and_the_photos(own_photos_pipeline, browser_page, tmp_path):
    """`spnas-serve bundle=<your export>` serves the photos it was evaluated on (the README's own-photos run), or
    the folder it is given (`data=folder data.root=...`): every photo, at its own time (EXIF DateTimeOriginal,
    else the file's), and the page says which model and which photos it searches; SIGTERM is logged."""
    import datetime as dt
    import shutil
    import signal

    from PIL import Image

    from spnas.app.serving.serve import photos_config

    from ..conftest import compose

    ov, run, _, _ = own_photos_pipeline
    bundle = run / "export" / "spnas-sd845" / "bundle"
    evaluated = Path(next(o.split("=", 1)[1] for o in ov if o.startswith("data.root=")))
    dcfg, origin = photos_config(compose("serve", [f"bundle={bundle}"]))  # the default: what it was evaluated on
    assert Path(dcfg.root) == evaluated.resolve() and origin == "the bundle was evaluated on"

    mine = tmp_path / "my photos"
    classes = sorted(p.name for p in evaluated.iterdir())[:3]
    for c in classes:
        (mine / c).mkdir(parents=True)
        for f in sorted((evaluated / c).glob("*.jpg"))[:6]:
            shutil.copy2(f, mine / c / f.name)
    shot = sorted((mine / classes[0]).glob("*.jpg"))[0]
    exif = Image.Exif()
    exif.get_ifd(0x8769)[36867] = "2026:11:20 10:00:00"  # DateTimeOriginal, within the months the search keeps
    Image.open(shot).save(shot, exif=exif)
    proc, url, lines = _serve([f"bundle={bundle}", "data=folder", f"data.root={mine}", f"root={tmp_path / 'serve'}",
                               "port=0", "delta.refresh_s=0.2"], tmp_path)
    try:
        started = "".join(lines)
        assert f"from {mine}" in started and "18 listings of 3 classes" in started and "1 exif" in started
        assert "model: spnas-sd845 (96x96 input" in started
        about = httpx.get(f"{url}/about", timeout=10).json()
        assert about["photos"]["root"] == str(mine) and about["photos"]["times"] == {"exif": 1, "file": 17}
        assert about["photos"]["oldest"] == int(dt.datetime(2026, 11, 20, 10, tzinfo=dt.timezone.utc).timestamp())
        page = browser_page
        page.goto(f"{url}/")
        page.wait_for_function("() => document.getElementById('about').textContent.includes('spnas-sd845')")
        shown = page.inner_text("#about")
        assert str(mine) in shown and "18 photos of 3 classes" in shown and "96×96" in shown
        page.set_input_files("#file", str(sorted((mine / classes[1]).glob("*.jpg"))[-1]))
        page.wait_for_selector("#results .card")
        page.wait_for_function("() => [...document.querySelectorAll('#results img')].every(i => i.complete)")
        assert {c["title"] for c in _cards(page)} <= set(classes), "it searches your photos, nothing else"
        assert "not yet in a built version" in page.inner_text("#status")
        SHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SHOTS / "photo_search_your_folder.png"), full_page=True)
    finally:
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(60)
    out = "".join(lines)
    assert rc == 0 and "shutting down (SIGTERM)" in out and "stopped; the listing store" in out, out[-2000:]
