"""The fetch pool: mounts served in turn, the global bound kept, a failed mount's queue dropped."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import pytest

from kvmount.keyvault.scheduling.fairpool import BatchTimeout, FairPool
from tests.support import eventually


@pytest.fixture
def pool() -> Iterator[FairPool]:
    p = FairPool(2, name="test")
    yield p
    p.shutdown()


def test_a_small_batch_is_served_before_a_big_backlog_drains(pool: FairPool) -> None:
    log: list[str] = []
    lock = threading.Lock()

    def job(tag: str) -> Callable[[int], int]:
        def run(i: int) -> int:
            with lock:
                log.append(tag)
            time.sleep(0.005)
            return i

        return run

    big = threading.Thread(target=lambda: pool.map(job("big"), list(range(200))))
    big.start()
    eventually(lambda: len(log) >= 4, timeout=10, what="the big batch started")
    with lock:
        started = len(log)
    assert pool.map(job("small"), [0, 1, 2]) == [0, 1, 2]
    with lock:
        done = len(log)
        big_between = log[started:done].count("big")
    big.join(60)
    # Served in turn: the small batch waits for about one big job per small job (and the
    # ones already running), not for the big one's backlog of ~190.
    assert big_between <= 8, big_between
    assert log.count("big") == 200


def test_concurrency_never_exceeds_the_pool_size_across_batches(pool: FairPool) -> None:
    active, peak = 0, 0
    lock = threading.Lock()

    def run(i: int) -> int:
        nonlocal active, peak
        with lock:
            active += 1
            peak = max(peak, active)
        time.sleep(0.002)
        with lock:
            active -= 1
        return i * 2

    results: list[list[int]] = []
    threads = [
        threading.Thread(target=lambda: results.append(pool.map(run, list(range(30))))) for _ in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert results == [[i * 2 for i in range(30)]] * 4
    assert peak == 2


def test_a_failure_drops_the_rest_of_its_batch_and_raises_the_first(pool: FairPool) -> None:
    ran: list[int] = []

    def run(i: int) -> int:
        ran.append(i)
        if i in (0, 1):
            raise ValueError(f"job {i}")
        return i

    with pytest.raises(ValueError, match="job 0"):
        pool.map(run, list(range(100)))
    assert len(ran) < 10, ran
    # The pool serves the next batch as before.
    assert pool.map(lambda i: i + 1, [1, 2]) == [2, 3]


def test_a_deadline_drops_the_queue_and_returns_without_waiting(pool: FairPool) -> None:
    release = threading.Event()
    ran: list[int] = []

    def run(i: int) -> int:
        ran.append(i)
        release.wait(30)
        return i

    start = time.monotonic()
    with pytest.raises(BatchTimeout):
        pool.map(run, list(range(50)), deadline=time.monotonic() + 0.3)
    assert time.monotonic() - start < 10
    release.set()
    assert pool.map(lambda i: i, [7]) == [7]
    assert len(ran) == 2  # the two running when the deadline passed; the rest never ran


def test_shutdown_fails_a_waiting_batch() -> None:
    pool = FairPool(1)
    gate, started = threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def run(i: int) -> bool:
        started.set()
        return gate.wait(30)

    def waiter() -> None:
        try:
            pool.map(run, list(range(5)))
        except BaseException as err:  # handed to the test thread
            errors.append(err)

    thread = threading.Thread(target=waiter)
    thread.start()
    assert started.wait(10)
    pool.shutdown()
    gate.set()
    thread.join(10)
    assert len(errors) == 1 and isinstance(errors[0], RuntimeError)


def compute(_: object = None) -> None:
    """A job that reads from a Key Vault answering at once: CPU in slices, the GIL let go
    between them as a read's socket calls do."""
    for _ in range(3):
        end = time.thread_time() + 0.001
        while time.thread_time() < end:
            pass
        time.sleep(0)


def test_jobs_that_compute_run_one_at_a_time_and_jobs_that_wait_run_side_by_side() -> None:
    pool = FairPool(6, name="adaptive")
    lock = threading.Lock()
    active = 0
    seen: list[int] = []  # how many of the batch's jobs ran, each time one started

    def tracked(work: Callable[[], None]) -> Callable[[int], int]:
        def run(i: int) -> int:
            nonlocal active
            with lock:
                active += 1
                seen.append(active)
            work()
            with lock:
                active -= 1
            return i

        return run

    try:
        # The pool learns from the first jobs (it starts them all side by side).
        assert pool.map(tracked(compute), list(range(60)), limit=6) == list(range(60))
        assert max(seen[-30:]) == 1, seen
        seen.clear()
        assert pool.map(tracked(lambda: time.sleep(0.02)), list(range(30)), limit=6) == list(range(30))
        assert max(seen) == 6, seen
    finally:
        pool.shutdown()


def test_a_stalled_job_lets_the_rest_of_its_batch_run_beside_it() -> None:
    pool = FairPool(6, name="stall")
    gate = threading.Event()
    ran: list[int] = []
    results: list[list[int]] = []

    def run(i: int) -> int:
        if i == 0:
            assert gate.wait(30)  # a read stalled mid-body, or waiting out a Retry-After
        else:
            ran.append(i)
        return i

    try:
        pool.map(compute, list(range(60)), limit=6)  # learned: jobs compute, one at a time
        waiting = threading.Thread(target=lambda: results.append(pool.map(run, list(range(5)), limit=6)))
        waiting.start()
        try:
            eventually(
                lambda: sorted(ran) == [1, 2, 3, 4], timeout=5, what="the others run while job 0 is stalled"
            )
        finally:
            gate.set()
            waiting.join(30)
        assert results == [[0, 1, 2, 3, 4]]
    finally:
        pool.shutdown()
