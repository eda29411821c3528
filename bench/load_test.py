"""N visitors at once on one app server: every page, a built-in dataset, one short trial each.

    python bench/load_test.py --users 10                     # demo mode, a fresh data folder
    python bench/load_test.py --users 10 --client protocol   # the server's share alone
    python bench/load_test.py --users 10 --local             # without demo mode

Each simulated visitor is a headless Chromium context on loopback. It opens the app, goes through
every page by the sidebar (as a person does: one browser session), waits for each page's content,
then presses Run in the Fine-tune lab (the default: a linear probe of EfficientNet-Lite0 on the
default built-in dataset, 5 epochs) and waits for the trial to finish. One visitor goes first,
alone, to warm the server (its times are printed as "alone"); then all N go at once.

With ``--client protocol`` each visitor is a websocket speaking the app's own protocol instead (a
rerun request per page, a button's trigger, the live fragment polled at its interval): the same
server work without ten browsers rendering on the same machine. On a 2-core machine the browsers
take most of the CPU (a Streamlit page costs headless Chromium 4–8 CPU-seconds to draw), so the
browser figures say what ten people on one small machine would see and the protocol figures what
the server gives to each of ten people on their own machines.

Printed: each visitor's seconds to each page's content, the trial's wait in the queue and its
total, errors; the server's resident memory alone and at its peak with N sessions (per extra
session); and, from the run store, whether every trial was kept once, finished, and shown to its
own visitor only (demo mode).
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import json
import os
import re
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from scripts import appserver  # noqa: E402

# Page → (sidebar link, what shows that its content is there).
PAGES = {
    "zoo": ("Model zoo", '.js-plotly-plot >> nth=0'),
    "data": ("Data", '[data-testid="stImage"] >> nth=0'),
    "strategy": ("Strategy", 'text="Turn on"'),
    "finetune": ("Fine-tune lab", 'button:has-text("Run") >> nth=0'),
    "visualize": ("Inside the network", 'img[alt^="render of channel"] >> nth=0'),
}
GOAL_S = 5.0  # every page's content within this, with N visitors (issue #12)
TIMEOUT_MS = 300_000


@dataclass
class Visitor:
    name: str
    pages: dict[str, float] = field(default_factory=dict)  # page → seconds to its content
    queue_s: float | None = None  # Run pressed → the trial starts running
    trial_s: float | None = None  # Run pressed → the trial is done
    run_id: int | None = None
    shown_runs: int | None = None  # rows in the run history this visitor sees
    dropped_polls: int = 0  # live-view polls the server never answered (protocol client)
    errors: list[str] = field(default_factory=list)


async def _content(page, title: str, marker: str) -> None:
    await page.locator(f'h1:has-text("{title.split()[0]}")').first.wait_for(timeout=TIMEOUT_MS)
    await page.locator(marker).wait_for(timeout=TIMEOUT_MS)


async def _idle(page) -> None:
    await page.wait_for_timeout(300)
    await page.locator('[data-testid="stStatusWidget"]').wait_for(state="hidden", timeout=TIMEOUT_MS)


async def _problems(page) -> list[str]:
    found = []
    if await page.locator('[data-testid="stException"]').count():
        found.append("exception on the page")
    body = await page.inner_text("body")
    if "Traceback" in body:
        found.append("traceback on the page")
    return found


async def visit(browser, base: str, who: Visitor, pages: list[str], trial: bool) -> Visitor:
    context = await browser.new_context(viewport={"width": 1400, "height": 1400})
    page = await context.new_page()
    try:
        for i, name in enumerate(pages):
            title, marker = PAGES[name]
            started = time.perf_counter()
            if i == 0:
                await page.goto(f"{base}/" if name == "zoo" else f"{base}/{name}")
            else:
                await _idle(page)  # Streamlit ignores navigation while a page's script runs
                started = time.perf_counter()
                await page.get_by_role("link", name=title).click(timeout=TIMEOUT_MS)
            await _content(page, title if name != "zoo" else "Model zoo", marker)
            who.pages[name] = time.perf_counter() - started
            who.errors += [f"{name}: {p}" for p in await _problems(page)]
        if trial:
            await _run_trial(page, who)
    except Exception as err:  # a visitor's failure is a result to print, not the end of the test
        who.errors.append(f"{type(err).__name__}: {str(err).splitlines()[0][:160]}")
    finally:
        await context.close()
    return who


async def _run_trial(page, who: Visitor) -> None:
    await _idle(page)
    if "finetune" not in page.url:
        await page.get_by_role("link", name=PAGES["finetune"][0]).click(timeout=TIMEOUT_MS)
        await page.locator(PAGES["finetune"][1]).wait_for(timeout=TIMEOUT_MS)
        await _idle(page)
    pressed = time.perf_counter()
    await page.get_by_role("button", name="Run", exact=True).click(timeout=TIMEOUT_MS)
    status = page.get_by_text(re.compile(r"Run #\d+: (running|done|failed)"))
    await status.first.wait_for(timeout=TIMEOUT_MS)
    who.queue_s = time.perf_counter() - pressed
    who.run_id = int(re.search(r"Run #(\d+)", await status.first.inner_text()).group(1))
    await page.get_by_text(re.compile(r"Run #\d+: (done|failed|cancelled)")).first.wait_for(timeout=TIMEOUT_MS)
    who.trial_s = time.perf_counter() - pressed
    if await page.get_by_text(re.compile(r"Run #\d+: failed")).count():
        who.errors.append("the trial failed")
    table = page.locator('[data-testid="stDataFrame"]').last
    await table.get_by_text("done").first.wait_for(state="attached", timeout=TIMEOUT_MS)
    who.shown_runs = await table.locator('[role="row"]').count() - 1  # less the header row


async def sample_memory(pid: int, peak: list[float], stop: asyncio.Event) -> None:
    while not stop.is_set():
        peak[0] = max(peak[0], appserver.rss_mb(pid))
        await asyncio.sleep(0.25)


# --- the protocol client: what a browser sends, without a browser ---------------------------

class Session:
    """One Streamlit session over its websocket, speaking the app's protocol as the browser does:
    a page run is a rerun request answered by deltas and a script-finished message; a button press
    is a rerun carrying its trigger; a fragment with run_every is re-requested at its interval."""

    def __init__(self, ws):
        self.ws = ws
        self.buttons: dict[str, str] = {}  # label → widget id, from the last full run
        self.texts: list[str] = []  # markdown of the last run
        self.auto_rerun: tuple[float, str] | None = None  # (interval, fragment id)
        self.page_hash = ""  # the page shown, from the navigation message: a browser sends it back

    async def run(self, page: str, *, trigger: str | None = None, fragment: str | None = None,
                  timeout: float = TIMEOUT_MS / 1000) -> None:
        from streamlit.proto.BackMsg_pb2 import BackMsg
        from streamlit.proto.ForwardMsg_pb2 import ForwardMsg

        msg = BackMsg()
        msg.rerun_script.page_name = page
        if trigger is not None:
            state = msg.rerun_script.widget_states.widgets.add()
            state.id, state.trigger_value = trigger, True
        if fragment is not None:  # with the page's hash, as a browser sends it: without it, an
            # st.rerun() inside the fragment reruns the default page and the fragment is gone
            msg.rerun_script.fragment_id, msg.rerun_script.is_auto_rerun = fragment, True
            msg.rerun_script.page_script_hash = self.page_hash
        else:
            self.buttons, self.auto_rerun = {}, None
        self.texts = []
        await self.ws.send(msg.SerializeToString())
        while True:
            fm = ForwardMsg()
            fm.ParseFromString(await asyncio.wait_for(self.ws.recv(), timeout))
            kind = fm.WhichOneof("type")
            if kind == "delta" and fm.delta.WhichOneof("type") == "new_element":
                element = fm.delta.new_element
                if element.WhichOneof("type") == "button":
                    self.buttons[element.button.label] = element.button.id
                elif element.WhichOneof("type") == "markdown":
                    self.texts.append(element.markdown.body)
            elif kind == "auto_rerun":
                self.auto_rerun = (fm.auto_rerun.interval, fm.auto_rerun.fragment_id)
            elif kind == "stop_auto_rerun":
                self.auto_rerun = None
            elif kind == "navigation":
                self.page_hash = fm.navigation.page_script_hash
            elif kind == "script_finished" and fm.script_finished != ForwardMsg.FINISHED_EARLY_FOR_RERUN:
                return


async def visit_protocol(base: str, who: Visitor, pages: list[str], trial: bool) -> Visitor:
    import websockets

    try:
        async with websockets.connect(base.replace("http", "ws", 1) + "/_stcore/stream", subprotocols=["streamlit"],
                                      max_size=2**28, open_timeout=TIMEOUT_MS / 1000) as ws:
            session = Session(ws)
            for name in pages:
                started = time.perf_counter()
                await session.run("" if name == "zoo" else name)
                who.pages[name] = time.perf_counter() - started
            if trial:
                await _run_trial_protocol(session, who)
    except Exception as err:
        who.errors.append(f"{type(err).__name__}: {str(err).splitlines()[0][:160] if str(err) else ''}")
    return who


async def _run_trial_protocol(session: Session, who: Visitor) -> None:
    await session.run("finetune")
    pressed = time.perf_counter()
    await session.run("finetune", trigger=session.buttons["Run"])
    deadline = pressed + TIMEOUT_MS / 1000
    while time.perf_counter() < deadline:
        status = next((m for m in session.texts if m.startswith("**Run #")), "")
        if who.run_id is None and status:
            who.run_id = int(re.search(r"Run #(\d+)", status).group(1))
        if who.queue_s is None and re.search(r":\*\* (running|done|failed)", status):
            who.queue_s = time.perf_counter() - pressed
        if re.search(r":\*\* (done|failed|cancelled)", status):
            who.trial_s = time.perf_counter() - pressed
            if "failed" in status:
                who.errors.append("the trial failed")
            return
        interval, fragment = session.auto_rerun or (1.0, None)
        await asyncio.sleep(interval)
        try:
            await session.run("finetune", fragment=fragment, timeout=30)
        except TimeoutError:  # a poll the server never answered: count it, then run the page
            who.dropped_polls += 1
            session.auto_rerun = None
    who.errors.append("the trial did not finish in time")


# --- the run ----------------------------------------------------------------------------------

async def main_async(args) -> int:
    home = Path(args.home or tempfile.mkdtemp(prefix="tlcore-load-"))
    if not args.home:  # ours to remove; a --home folder is the caller's
        atexit.register(shutil.rmtree, home, ignore_errors=True)
    env = dict(os.environ, TLCORE_HOME=str(home))
    env.pop("TLCORE_DEMO", None)
    if not args.local:
        env["TLCORE_DEMO"] = "1"
    pages = args.pages
    proc, base = appserver.start(env)
    print(f"server {base} (pid {proc.pid}) · {'local' if args.local else 'demo'} mode · data folder {home} · "
          f"{os.cpu_count()} CPU cores · {args.client} client", flush=True)
    try:
        if args.client == "browser":
            from playwright.async_api import async_playwright

            async with async_playwright() as p:
                browser = await p.chromium.launch(executable_path=appserver.CHROMIUM, args=appserver.CHROMIUM_ARGS)
                crowd, measured = await crowd_run(
                    proc, pages, args, lambda who, trial: visit(browser, base, who, pages, trial))
                await browser.close()
        else:
            crowd, measured = await crowd_run(proc, pages, args,
                                              lambda who, trial: visit_protocol(base, who, pages, trial))
    finally:
        appserver.stop(proc)
    return report(crowd, pages, *measured, home, args)


async def crowd_run(proc, pages: list[str], args, visit_one) -> tuple[list[Visitor], tuple]:
    """One visitor alone (cold, then warm), then all of them at once; times, CPU and memory."""
    started = time.perf_counter()
    alone = await visit_one(Visitor("alone"), False)
    print(f"warm-up visitor alone, first visit: {_row(alone, pages)} ({time.perf_counter() - started:.0f} s)",
          flush=True)
    alone = await visit_one(Visitor("alone"), False)
    print(f"one visitor alone, warm server:     {_row(alone, pages)}", flush=True)
    rss_alone = appserver.rss_mb(proc.pid)
    peak, stop = [rss_alone], asyncio.Event()
    sampler = asyncio.create_task(sample_memory(proc.pid, peak, stop))
    cpu = (appserver.cpu_seconds(proc.pid), appserver.cpu_seconds())
    started = time.perf_counter()
    crowd = await asyncio.gather(*(visit_one(Visitor(f"v{i + 1:02d}"), not args.no_trial) for i in range(args.users)))
    wall = time.perf_counter() - started
    server_cpu = appserver.cpu_seconds(proc.pid) - cpu[0]
    other_cpu = appserver.cpu_seconds() - cpu[1] - server_cpu
    print(f"CPU while the crowd ran ({wall:.0f} s, {os.cpu_count()} cores): app server {server_cpu:.0f} s, "
          f"everything else (the clients) {other_cpu:.0f} s", flush=True)
    stop.set()
    await sampler
    return crowd, (wall, rss_alone, peak[0])


def _row(v: Visitor, pages: list[str]) -> str:
    return "  ".join(f"{p} {v.pages[p]:5.1f}" if p in v.pages else f"{p}   —  " for p in pages)


def report(crowd: list[Visitor], pages: list[str], wall: float, rss_alone: float, rss_peak: float,
           home: Path, args) -> int:
    print(f"\n{len(crowd)} visitors at once ({wall:.0f} s in all) — seconds to each page's content:")
    print(f"{'visitor':8} " + " ".join(f"{p:>9}" for p in pages) + f" {'queue':>7} {'trial':>7}  errors")
    for v in crowd:
        cells = " ".join(f"{v.pages[p]:9.1f}" if p in v.pages else f"{'—':>9}" for p in pages)
        q = f"{v.queue_s:7.1f}" if v.queue_s is not None else f"{'—':>7}"
        t = f"{v.trial_s:7.1f}" if v.trial_s is not None else f"{'—':>7}"
        print(f"{v.name:8} {cells} {q} {t}  {'; '.join(v.errors) or '-'}")
    times = {p: [v.pages[p] for v in crowd if p in v.pages] for p in pages}
    print(f"{'median':8} " + " ".join(f"{statistics.median(t):9.1f}" if t else f"{'—':>9}" for t in times.values()))
    print(f"{'max':8} " + " ".join(f"{max(t):9.1f}" if t else f"{'—':>9}" for t in times.values()))
    slowest = max((x for t in times.values() for x in t), default=float("nan"))
    errors = sum(len(v.errors) for v in crowd)
    print(f"\nserver memory: {rss_alone:.0f} MB with one visitor, peak {rss_peak:.0f} MB with {len(crowd)} "
          f"(+{(rss_peak - rss_alone) / max(1, len(crowd) - 1):.0f} MB per extra session)")
    runs_ok = True if args.no_trial else check_runs(crowd, home, demo=not args.local)
    dropped = sum(v.dropped_polls for v in crowd)
    if dropped:  # a browser's live view would have stood still there
        print(f"{dropped} live-view poll(s) went unanswered (each adds 30 s to its visitor's queue and trial times)")
    met = errors == 0 and slowest <= GOAL_S and runs_ok and not dropped
    print(f"slowest page {slowest:.1f} s (goal ≤ {GOAL_S:.0f} s) · {errors} error(s) · runs "
          f"{'consistent' if runs_ok else 'NOT consistent'} → goal {'met' if met else 'not met'}")
    return 0 if met else 1


def check_runs(crowd: list[Visitor], home: Path, demo: bool) -> bool:
    """Every visitor's trial is in the store once, done, and (demo mode) the only run they see."""
    with sqlite3.connect(home / "runs.sqlite") as db:
        rows = db.execute("SELECT id, status, config FROM runs").fetchall()
    by_id = {r[0]: (r[1], json.loads(r[2]).get("tags", {}).get("session")) for r in rows}
    mine = [v.run_id for v in crowd]
    problems = []
    if None in mine or len(set(mine)) != len(mine):
        problems.append(f"run ids shown to the visitors: {mine}")
    if len(rows) != len(crowd):
        problems.append(f"{len(rows)} runs in the store for {len(crowd)} trials")
    if any(by_id.get(r, ("missing",))[0] != "done" for r in mine if r is not None):
        problems.append("not every run is done: " + ", ".join(f"#{r} {by_id.get(r, ('missing',))[0]}" for r in mine))
    if len({by_id[r][1] for r in mine if r in by_id}) != len(crowd):
        problems.append("runs share a session tag")
    if demo and any(v.shown_runs not in (None, 1) for v in crowd):  # (None: the protocol client does not count)
        problems.append(f"history rows each visitor sees (demo: 1): {[v.shown_runs for v in crowd]}")
    for p in problems:
        print(f"runs: {p}")
    return not problems


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--users", type=int, default=10)
    ap.add_argument("--local", action="store_true", help="without demo mode")
    ap.add_argument("--no-trial", action="store_true", help="pages only")
    ap.add_argument("--client", choices=["browser", "protocol"], default="browser",
                    help="browser: headless Chromium (what a person sees, the browsers' CPU included); "
                         "protocol: the app's websocket protocol without a browser (the server's share)")
    ap.add_argument("--pages", nargs="+", choices=list(PAGES), default=list(PAGES),
                    help="the pages each visitor opens, in this order (default: all)")
    ap.add_argument("--home", help="the server's TLCORE_HOME (default: a fresh temporary folder)")
    sys.exit(asyncio.run(main_async(ap.parse_args())))


if __name__ == "__main__":
    main()
