"""Drive the real app in headless Chromium (Debian's package; playwright cannot download one)."""

import os
import re
import shutil
from pathlib import Path

import pytest

from scripts import appserver
from scripts.appserver import CHROMIUM, CHROMIUM_ARGS
from ui.data_view import DEFAULT_CHOICE

pytestmark = pytest.mark.e2e
if not shutil.which(CHROMIUM) and not os.environ.get("CI"):
    pytest.skip("Debian's chromium is not installed (the test script installs it)", allow_module_level=True)


def _start_server(env: dict | None = None):
    try:
        return appserver.start(env)
    except appserver.ServerError as err:
        pytest.fail(str(err))


_stop_server = appserver.stop


def _home_knowing_the_architectures(tmp_path) -> str:
    """A fresh data dir that already holds every architecture's depth, blocks and layers (and Lite0's
    smallest input), as the Docker image's does, where the package ships none for this torchvision
    (tlcore.zoo.facts): a new home would otherwise spend ~17 s of a 2-core CI machine rebuilding
    them on the meta device, which other tests cover."""
    from tlcore import paths, zoo

    zoo.zoo_table()  # fills this test session's own home once (free when a page test ran first)
    zoo.smallest_input(zoo.get_spec("efficientnet_lite0"))  # ~4 s of meta passes, the model the tests use
    home = tmp_path / "home"
    home.mkdir()
    for known in [*paths.home().glob("arch-info-*.json"), *paths.home().glob("layers-*.json"),
                  *paths.home().glob("smallest-input-*.json")]:
        shutil.copy(known, home / known.name)
    return str(home)


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


def _grid_rows(grid) -> list[dict[str, str]]:
    """The rows of a st.dataframe as the grid's accessible table shows them (header → text)."""
    header = grid.locator('[role="columnheader"]').all_inner_texts()
    rows = []
    for row in grid.locator('[role="row"]').all()[1:]:
        cells = row.locator('[role="gridcell"]').all_inner_texts()
        rows.append(dict(zip(header, cells[-len(header):], strict=True)))
    return rows


def _tick_rows(page, grid, rows: list[int], button: str) -> None:
    """Tick rows' checkboxes in the grid (a canvas: click by position) until ``button`` shows."""
    for _ in range(5):  # the grid may still be laying out: retry the clicks a few times
        grid.scroll_into_view_if_needed()
        box = grid.bounding_box()
        for row in rows:
            page.mouse.click(box["x"] + 18, box["y"] + 35 * (row + 1) + 17)
            page.wait_for_timeout(700)
        try:
            page.get_by_role("button", name=button).wait_for(timeout=10_000)
            return
        except Exception:
            _idle(page)
            for row in rows:  # untick what was ticked, then try again
                page.mouse.click(box["x"] + 18, box["y"] + 35 * (row + 1) + 17)
                page.wait_for_timeout(700)
    pytest.fail(f"could not tick rows {rows}")


def test_zoo_journey_filter_then_measure_two_models(server, browser, tmp_path):
    page = browser.new_page(viewport={"width": 1400, "height": 1800})
    page.goto(server)
    page.get_by_role("heading", name="Models").wait_for(timeout=180_000)
    page.locator(".js-plotly-plot").first.wait_for(timeout=60_000)
    _idle(page)
    page.get_by_text("Offline only").click()  # the filter: weights on this machine only (the Lite models)
    metrics = page.locator('[data-testid="stMetric"]')
    metrics.filter(has_text="Models shown").get_by_text("3", exact=True).wait_for(timeout=60_000)
    _idle(page)
    _no_exception(page)

    grid = page.locator('[data-testid="stDataFrame"]').filter(has_text="Model · weights")
    _tick_rows(page, grid, [0, 1], "Measure latency (2 selected)")
    page.get_by_role("button", name="Measure latency (2 selected)").click()
    page.get_by_text("Measured 2 of 2").wait_for(timeout=180_000)
    _idle(page)
    metrics.filter(has_text="Measured (this config)").get_by_text("2", exact=True).wait_for(timeout=60_000)
    rows = _grid_rows(page.locator('[data-testid="stDataFrame"]').filter(has_text="Model · weights"))
    measured = [r for r in rows if r["Latency ms"] not in ("", "—")]
    assert len(measured) == 2, rows  # both ticked rows now show a figure…
    assert all(float(r["Latency ms"]) > 0 and float(r["Images/s"]) > 0 for r in measured)
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


@pytest.fixture
def own_server(tmp_path):
    """A server with a run history of its own (the shared one holds every other test's runs)."""
    proc, base = _start_server(dict(os.environ, TLCORE_HOME=_home_knowing_the_architectures(tmp_path)))
    yield base
    _stop_server(proc)


def test_journey_data_strategy_fine_tune_and_the_run_survives_a_reload(own_server, browser, tmp_path):
    server = own_server
    page = browser.new_page(viewport={"width": 1400, "height": 1600})
    page.goto(f"{server}/data")
    cap = page.get_by_role("spinbutton", name="Max images per class (0 = all)")
    cap.wait_for(timeout=120_000)
    _idle(page)
    cap.fill("10")  # a small dataset on purpose: 10 digits per class
    cap.press("Enter")
    page.locator('[data-testid="stMetric"]').filter(has_text="Images").get_by_text("100", exact=True).wait_for(
        timeout=120_000)
    _idle(page)

    # Strategy: the dataset lands as a point on the matrix, with the advice and its reasons.
    page.get_by_role("link", name="Strategy").click()
    page.get_by_text("Turn on").wait_for(timeout=120_000)
    _idle(page)
    page.locator('[data-testid="stCheckbox"]').filter(has_text="Measure").click()  # the toggle
    advice = page.locator('[data-testid="stAlertContentSuccess"]')
    advice.wait_for(timeout=300_000)
    _idle(page)
    point = page.locator(".js-plotly-plot").first.evaluate(
        "el => el.data.filter(t => t.name === 'your data').map(t => [t.x[0], t.y[0]])")
    assert len(point) == 1
    per_class, similarity = 10 ** point[0][0], point[0][1]
    assert abs(per_class - 8) < 0.01 and 0 <= similarity <= 1  # 8 of the 10 per class train
    reasons = advice.locator("xpath=ancestor::div[@data-testid='stColumn']").locator("li")
    assert reasons.count() >= 2 and advice.inner_text().strip().endswith(".")
    _no_exception(page)
    page.screenshot(path=str(tmp_path / "strategy.png"), full_page=True)

    # Fine-tune the last block: a live curve, then the run in the history, which survives a reload.
    page.get_by_role("link", name="Fine-tune lab").click()
    run = page.get_by_role("button", name="Run", exact=True)
    run.wait_for(timeout=120_000)
    _idle(page)
    page.get_by_role("slider").first.focus()
    page.keyboard.press("End")  # "all": a linear probe…
    page.keyboard.press("ArrowLeft")  # …one step back: the last block trains too
    page.get_by_text("The new classifier reads").wait_for(state="detached", timeout=60_000)
    _idle(page)
    run.click()
    status = page.get_by_text("done · epoch 5 of 5")
    status.wait_for(timeout=300_000)
    run_id = int(re.search(r"Run #(\d+):", page.get_by_text(re.compile(r"^Run #\d+:")).first.inner_text()).group(1))
    # the block strip and the live curve: the run's status is drawn just before its curve, so wait for it
    page.wait_for_function("document.querySelectorAll('[data-testid=\"stPlotlyChart\"]').length >= 2",
                           timeout=60_000)
    _idle(page)
    _no_exception(page)
    page.screenshot(path=str(tmp_path / "finetune.png"), full_page=True)

    page.reload()
    history = page.locator('[data-testid="stDataFrame"]').filter(has_text="status")
    history.get_by_text("done").first.wait_for(state="attached", timeout=120_000)
    mine = [r for r in _grid_rows(history) if r["run"] == str(run_id)]
    assert len(_grid_rows(history)) == 1 and len(mine) == 1 and mine[0]["status"] == "done" and mine[0]["epochs"] == "5/5"
    assert mine[0]["freeze"] not in ("all", "") and mine[0]["dataset"].startswith(f"digits@{DEFAULT_CHOICE.size}px")
    _no_exception(page)
    page.close()


def test_a_server_restart_keeps_finished_runs_and_marks_the_running_one_interrupted(browser, tmp_path):
    from tlcore import data
    from tlcore.finetune import TrialConfig
    from tlcore.jobs import JobManager
    from tlcore.store import RunStore

    home = Path(_home_knowing_the_architectures(tmp_path))
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
        # 40 digits a class at 32 px: an epoch of a few seconds on 2 CPU cores (22 s for all of them
        # at 64 px), yet 100 epochs on a GPU outlast the second or two between epoch 1 and the stop.
        page.goto(f"{base}/finetune?dataset=builtin:digits&dataset_px=32&dataset_cap=40")
        run = page.get_by_role("button", name="Run", exact=True)
        run.wait_for(timeout=120_000)
        _idle(page)
        page.get_by_role("slider").first.focus()
        page.keyboard.press("Home")  # freeze 0: fine-tune everything
        page.get_by_text("(100\u00a0%)").wait_for(timeout=60_000)
        _idle(page)
        page.get_by_text("Training settings").click()
        epochs = page.get_by_label("Epochs")  # many: on a GPU five would end before the server stops
        epochs.fill("100")
        epochs.press("Enter")
        _idle(page)
        run.click()
        page.get_by_text("running · epoch 1 of 100").wait_for(timeout=300_000)
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
    env = {**os.environ, "TLCORE_DEMO": "1", "TLCORE_HOME": _home_knowing_the_architectures(tmp_path)}
    proc, base = _start_server(env)
    page = browser.new_page(viewport={"width": 1400, "height": 1200})
    try:
        for path in ("", "data"):
            page.goto(f"{base}/{path}")
            page.get_by_text("Shared demo").first.wait_for(timeout=180_000)
            _idle(page)
            _no_exception(page)
            body = page.inner_text("body")
            assert "20 epochs and 10 minutes per trial" in body and "no folders on the server" in body
        assert page.get_by_text("Built-in (offline)").count() == 1  # the data page's choices are there…
        assert page.get_by_text("Folder on this server").count() == 0  # …but not the server's folders
        page.screenshot(path=str(tmp_path / "demo.png"), full_page=True)

        # A refresh is a new Streamlit session, yet the same visitor: the page follows their run
        # still training, and they can cancel it.
        page.goto(f"{base}/finetune?dataset=builtin:digits&dataset_px=32&dataset_cap=8")
        run = page.get_by_role("button", name="Run", exact=True)
        run.wait_for(timeout=120_000)
        _idle(page)
        page.get_by_role("slider").first.focus()
        page.keyboard.press("Home")  # fine-tune everything: long enough to outlive the reload
        _idle(page)
        page.get_by_text("Training settings").click()
        epochs = page.get_by_role("spinbutton", name="Epochs")
        epochs.fill("20")
        epochs.press("Enter")
        _idle(page)
        run.click()
        run_id = re.search(r"Run #(\d+):", page.get_by_text(re.compile(r"^Run #\d+:")).first.inner_text()).group(1)
        page.reload()
        page.get_by_text(f"Run #{run_id}:").wait_for(timeout=120_000)
        _idle(page)
        page.get_by_role("button", name="Cancel").click()
        page.get_by_text(re.compile(rf"Run #{run_id}: cancelled")).wait_for(timeout=120_000)
        history = page.locator('[data-testid="stDataFrame"]').filter(has_text="status")
        history.get_by_text("cancelled").first.wait_for(state="attached", timeout=120_000)
        assert [r["run"] for r in _grid_rows(history)] == [run_id]
        other = browser.new_context().new_page()  # another visitor: another browser's cookies
        try:
            other.goto(f"{base}/finetune?dataset=builtin:digits&dataset_px=32&dataset_cap=8")
            other.get_by_text("No runs yet.").wait_for(timeout=120_000)
            _no_exception(other)
        finally:
            other.context.close()
    finally:
        page.close()
        _stop_server(proc)
