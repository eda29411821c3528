"""Drive the real app in headless Chromium (Debian's package; playwright cannot download one)."""

import os
import shutil

import pytest

from scripts import appserver
from scripts.appserver import CHROMIUM, CHROMIUM_ARGS

pytestmark = pytest.mark.e2e
if not shutil.which(CHROMIUM) and not os.environ.get("CI"):
    pytest.skip("Debian's chromium is not installed (the test script installs it)", allow_module_level=True)


def _start_server(env: dict | None = None):
    try:
        return appserver.start(env)
    except appserver.ServerError as err:
        pytest.fail(str(err))


_stop_server = appserver.stop


@pytest.fixture(scope="module")
def server():
    proc, base = _start_server()
    yield base
    _stop_server(proc)


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


def _idle(page, timeout: float = 180_000) -> None:
    """Wait until the script run is over (Streamlit disables navigation while a page runs)."""
    page.wait_for_timeout(500)
    page.locator('[data-testid="stStatusWidget"]').wait_for(state="hidden", timeout=timeout)


def _no_exception(page) -> None:
    assert page.locator('[data-testid="stException"]').count() == 0
    body = page.inner_text("body")
    assert "Traceback" not in body and "Page not found" not in body


def test_zoo_page_renders_and_measures_a_selected_model(server, browser, tmp_path):
    page = browser.new_page(viewport={"width": 1400, "height": 1800})
    page.goto(f"{server}/?offline=1")
    page.get_by_role("heading", name="Models").wait_for(timeout=180_000)
    page.locator(".js-plotly-plot").first.wait_for(timeout=60_000)
    _no_exception(page)
    assert page.locator('[data-testid="stDataFrame"]').count() >= 1

    # Tick the first row's checkbox in the grid (a canvas: click by position), then measure.
    button = page.get_by_role("button", name="Measure latency (1 selected)")
    for _ in range(5):  # the grid may still be laying out: retry the click a few times
        grid = page.locator('[data-testid="stDataFrame"]').first
        grid.scroll_into_view_if_needed()
        box = grid.bounding_box()
        page.mouse.click(box["x"] + 18, box["y"] + 35 + 17)
        try:
            button.wait_for(timeout=10_000)
            break
        except Exception:
            page.screenshot(path=str(tmp_path / "click.png"), full_page=True)
    button.click()
    page.get_by_text("Measured 1 of 1").wait_for(timeout=180_000)
    _no_exception(page)
    page.screenshot(path=str(tmp_path / "zoo.png"), full_page=True)
    page.close()


@pytest.mark.parametrize("path", ["data", "strategy", "finetune", "visualize"])
def test_other_pages_render(server, browser, path, tmp_path):
    page = browser.new_page()
    page.goto(f"{server}/{path}")
    try:
        page.locator("h1").first.wait_for(timeout=60_000)
        page.get_by_text("Device:").first.wait_for(timeout=60_000)
        _no_exception(page)
    finally:
        page.screenshot(path=str(tmp_path / f"{path}.png"), full_page=True)
        print(page.inner_text("body")[:2000])
        page.close()


def test_data_page_takes_a_zip_upload_and_reports_bad_files(server, browser, tmp_path):
    from tests.data.conftest import jpeg, make_zip, png

    entries = {f"cats/{i}.jpg": jpeg(i) for i in range(4)}
    entries.update({f"dogs/{i}.png": png(10 + i) for i in range(4)})
    entries.update({"dogs/notes.txt": b"not an image", "../escape.jpg": jpeg(99)})
    archive = tmp_path / "pets.zip"
    archive.write_bytes(make_zip(entries))

    page = browser.new_page(viewport={"width": 1400, "height": 1400})
    page.goto(f"{server}/data")
    page.get_by_text("Upload a zip").click()
    page.locator('input[type="file"]').set_input_files(str(archive))
    page.get_by_text("Skipped (2)").wait_for(timeout=120_000)
    # The sample grids render one after the other: wait for each, don't read the page mid-render.
    for caption in ("cats — 4 images", "dogs — 4 images"):
        page.get_by_text(caption).wait_for(timeout=60_000)
    _no_exception(page)
    page.get_by_role("tab", name="Skipped (2)").click()
    page.get_by_text("path escapes the folder").first.wait_for(state="attached", timeout=30_000)
    page.screenshot(path=str(tmp_path / "data.png"), full_page=True)

    # The dataset survives a trip to another page.
    _idle(page)
    page.get_by_role("link", name="Model zoo").click(timeout=120_000)
    page.get_by_role("heading", name="Models").wait_for(timeout=120_000)
    _idle(page)
    page.get_by_role("link", name="Data").click(timeout=120_000)
    page.get_by_text("dogs — 4 images").wait_for(timeout=120_000)
    page.close()


def test_finetune_page_runs_a_trial_and_lists_it(server, browser, tmp_path):
    page = browser.new_page(viewport={"width": 1400, "height": 1500})
    page.goto(f"{server}/finetune")
    run = page.get_by_role("button", name="Run", exact=True)
    run.wait_for(timeout=120_000)
    _idle(page)
    run.click()
    page.get_by_text("done · epoch 5 of 5").wait_for(timeout=300_000)
    page.get_by_text("Run history").wait_for(timeout=60_000)
    page.locator('[data-testid="stDataFrame"]').get_by_text("done").first.wait_for(state="attached",
                                                                                  timeout=60_000)
    _no_exception(page)
    page.screenshot(path=str(tmp_path / "finetune.png"), full_page=True)
    page.close()


def test_a_server_restart_keeps_finished_runs_and_marks_the_running_one_interrupted(browser, tmp_path):
    from tlcore import data
    from tlcore.finetune import TrialConfig
    from tlcore.jobs import JobManager
    from tlcore.store import RunStore

    home = tmp_path / "home"
    home.mkdir()
    finished = JobManager(RunStore(home / "runs.sqlite"))  # a run finished before the server started
    finished.submit(TrialConfig(model="efficientnet_lite0", epochs=1, lr=0.05),
                    data.load("digits", size=32, max_per_class=8), dataset_label="digits")
    assert finished.wait(120)
    finished.shutdown()
    kept_before = finished.store.list()[0]["result"]
    env = dict(os.environ, TLCORE_HOME=str(home))
    proc, base = _start_server(env)
    try:
        page = browser.new_page(viewport={"width": 1400, "height": 1500})
        page.goto(f"{base}/finetune")
        run = page.get_by_role("button", name="Run", exact=True)
        run.wait_for(timeout=120_000)
        _idle(page)
        page.get_by_role("slider").first.focus()
        page.keyboard.press("Home")  # freeze 0: fine-tune everything, many seconds per epoch
        page.get_by_text("(100 %)").wait_for(timeout=60_000)
        _idle(page)
        run.click()
        page.get_by_text("running · epoch 1 of 5").wait_for(timeout=300_000)
        page.close()
    finally:
        _stop_server(proc)

    store = RunStore(home / "runs.sqlite")
    first, second = sorted(store.list(), key=lambda r: r["id"])
    assert first["status"] == "done" and first["result"] == kept_before
    assert second["status"] == "interrupted" and len(second["history"]) >= 1

    proc, base = _start_server(env)  # the restarted server shows both as they are
    try:
        page = browser.new_page(viewport={"width": 1400, "height": 1500})
        page.goto(f"{base}/finetune")
        table = page.locator('[data-testid="stDataFrame"]')
        table.get_by_text("interrupted").first.wait_for(state="attached", timeout=120_000)
        table.get_by_text("done").first.wait_for(state="attached", timeout=60_000)
        _no_exception(page)
        page.screenshot(path=str(tmp_path / "finetune-after-restart.png"), full_page=True)
        page.close()
    finally:
        _stop_server(proc)


def test_inside_the_network_renders_four_channels_and_refuses_a_hostile_photo(server, browser, tmp_path):
    page = browser.new_page(viewport={"width": 1400, "height": 1600})
    page.goto(f"{server}/visualize?layer=_blocks.4&count=4&steps=8&size=64")
    page.get_by_text("Channel 3 ·").wait_for(timeout=300_000)
    _idle(page)
    _no_exception(page)
    renders = page.locator('img[alt^="render of channel"]')
    assert renders.count() == 4
    for i in range(4):
        assert renders.nth(i).evaluate("img => img.complete && img.naturalWidth") == 64
    page.screenshot(path=str(tmp_path / "visualize.png"), full_page=True)

    page.get_by_role("tab", name="One channel").click()
    with page.expect_download(timeout=300_000) as download:
        page.get_by_role("button", name="Download PNG").click()
    saved = tmp_path / download.value.suggested_filename
    download.value.save_as(saved)
    assert saved.name == "efficientnet_lite0__blocks.4_0.png" and saved.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    page.get_by_role("tab", name="DeepDream").click()
    page.get_by_text("Upload", exact=True).click()
    bad = tmp_path / "holiday.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 this is not really a JPEG")
    page.locator('input[type="file"]').set_input_files(str(bad))
    page.get_by_text("holiday.jpg").wait_for(timeout=60_000)
    page.get_by_role("button", name="Dream").click()
    page.get_by_text("not a usable photo").wait_for(timeout=120_000)
    _no_exception(page)


def test_demo_mode_shows_its_banner_and_offers_no_server_folder(browser, tmp_path):
    env = {**os.environ, "TLCORE_DEMO": "1", "TLCORE_HOME": str(tmp_path / "home")}
    proc, base = _start_server(env)
    page = browser.new_page(viewport={"width": 1400, "height": 1200})
    try:
        for path in ("", "data"):
            page.goto(f"{base}/{path}")
            page.get_by_text("Shared demo").first.wait_for(timeout=180_000)
            _idle(page)
            _no_exception(page)
            body = page.inner_text("body")
            assert "20 epochs per trial" in body and "no folders on the server" in body
        assert page.get_by_text("Built-in (offline)").count() == 1  # the data page's choices are there…
        assert page.get_by_text("Folder on this server").count() == 0  # …but not the server's folders
        page.screenshot(path=str(tmp_path / "demo.png"), full_page=True)
    finally:
        page.close()
        _stop_server(proc)
