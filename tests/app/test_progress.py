"""Progress bars for the engine's passes, and the shared cache that lets a page show them."""

import threading

import pytest
from streamlit.testing.v1 import AppTest

from ui import progress


def test_a_shared_value_is_computed_once_and_each_caller_gets_a_copy():
    calls = []

    def compute():
        calls.append(1)
        return {"points": [1, 2, 3]}

    first = progress.shared("test-once", ("a",), compute)
    first["points"].append(4)  # a page changing what it got changes nothing for the next caller
    assert progress.shared("test-once", ("a",), compute) == {"points": [1, 2, 3]} and len(calls) == 1
    assert progress.shared("test-once", ("b",), compute) == {"points": [1, 2, 3]} and len(calls) == 2


def test_a_failed_or_interrupted_computation_stores_nothing():
    def fail():
        raise RuntimeError("out of memory")

    with pytest.raises(RuntimeError):
        progress.shared("test-fail", 1, fail)
    assert progress.shared("test-fail", 1, lambda: "done") == "done"


def test_the_oldest_values_go_beyond_the_size():
    for i in range(4):
        progress.shared("test-size", i, lambda i=i: i, max_entries=3)
    assert progress.shared("test-size", 0, lambda: "again", max_entries=3) == "again"
    assert progress.shared("test-size", 3, lambda: "again", max_entries=3) == 3


def test_two_sessions_asking_at_once_compute_it_once():
    started, release, calls = threading.Event(), threading.Event(), []

    def slow():
        calls.append(1)
        started.set()
        release.wait(10)
        return "value"

    results = []
    first = threading.Thread(target=lambda: results.append(progress.shared("test-race", 0, slow)))
    first.start()
    started.wait(10)
    second = threading.Thread(target=lambda: results.append(progress.shared("test-race", 0, slow)))
    second.start()
    release.set()
    first.join(10)
    second.join(10)
    assert results == ["value", "value"] and len(calls) == 1


def _page_with_a_pass(steps: int):
    import streamlit as st

    from ui import progress

    with progress.bar("Features of lite0") as on_step:
        for done in range(1, steps + 1):
            on_step(done, steps)
            st.session_state.setdefault("seen", []).append(done)
    st.write("after")


def test_the_bar_shows_only_while_work_runs_and_only_when_there_is_work():
    for steps in (3, 0):  # 0: served from a cache, nothing to show
        at = AppTest.from_function(_page_with_a_pass, args=(steps,)).run()
        assert not at.exception
        assert not at.get("progress")  # gone once the pass is over
        assert [m.value for m in at.markdown] == ["after"]


def test_the_bar_says_how_far_and_how_long():
    assert progress.status(412, 1797, started=0.0).startswith("412 of 1,797 images · ")
    import time
    now = time.perf_counter()
    assert progress.status(100, 400, started=now - 10).endswith("10 s, about 30 s left")
    assert "left" not in progress.status(100, 400, started=now - 1)  # too early to tell
    assert "left" not in progress.status(400, 400, started=now - 10)
