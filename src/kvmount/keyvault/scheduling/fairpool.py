"""A bounded pool that serves concurrent batches (mounts) round-robin.

A first-come pool lets one mount of 2,000 objects hold every worker until
its backlog drains, so every other mount on the node waits behind it. Here
each batch keeps its own queue, and a free worker takes the next job from the
next batch in turn: a small mount waits for at most one job of each other
batch, whatever their backlogs. The number of jobs running at once stays at
the pool's size. A batch that fails or runs out of time drops its queued jobs.

Hand-offs are kept cheap (profiled, bench/RESULTS.md): each new job puts one token
in a queue (C-level, no Python lock per wait) that wakes one idle worker; a finished
job wakes no one unless it finishes its batch, and then only that batch's caller.
Workers start as jobs arrive, up to the pool's size, and a worker that finishes
a job takes the next one without sleeping. A batch may cap how many of its jobs
run at once: threads that all want the GIL cost CPU in hand-offs, so one batch
need not occupy every worker when a few keep up with the network.

Below that cap, a batch runs as many jobs at once as the jobs' waiting calls for
(profiled, bench/RESULTS.md): the pool keeps a moving average of how long a job
takes against the CPU it uses (its thread's CPU time). A job that mostly waits
(Key Vault 20 ms away) is worth running beside others; a job that mostly computes
(Key Vault answering at once) is not: a second thread then only adds GIL hand-offs,
about a third more CPU per job for no shorter mount. The average starts high
(every batch at its cap) and follows each finished job, so a slower network raises
the concurrency again within one job. A job that has held a batch's only slots
for many times the average job's time (a read stalled or waiting out a
Retry-After) is waiting too: the batch then gets its cap at once rather than
after that job ends.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar

T = TypeVar("T")
# A batch runs about one job at once per this many times a job's CPU time it takes.
WAIT_PER_JOB = 4.0
# Weight of the newest job in the moving averages (time taken / CPU time, time taken).
SMOOTHING = 0.25
# A batch below its cap whose jobs all run and none ends for this many times the
# average job's time (and at least STALL_FLOOR seconds) is widened to its cap.
STALL_FACTOR = 10.0
STALL_FLOOR = 0.05


class BatchTimeout(Exception):
    """The batch's deadline passed before all its jobs ran; ``item`` is the first unfinished one."""

    def __init__(self, item: Any) -> None:
        super().__init__("deadline passed")
        self.item = item


class _Batch(Generic[T]):
    def __init__(self, func: Callable[[T], Any], items: Sequence[T], lock: threading.Lock, cap: int) -> None:
        self.func = func
        # At most ``cap`` jobs at once, and now at most ``limit`` (the pool's estimate).
        self.cap = cap
        self.limit = cap
        # In the pool's ring: it has queued jobs and fewer than ``limit`` running.
        self.in_ring = False
        # The caller waits on this; it shares the pool's lock.
        self.changed = threading.Condition(lock)
        self.queue: deque[int] = deque(range(len(items)))
        self.items = items
        self.results: list[Any] = [None] * len(items)
        self.errors: dict[int, BaseException] = {}
        self.done: set[int] = set()
        self.running = 0
        self.cancelled = False
        # A job of this batch stalled: it keeps its cap whatever later jobs teach the pool.
        self.stalled = False

    @property
    def finished(self) -> bool:
        return self.running == 0 and (self.cancelled or not self.queue)


class FairPool:
    def __init__(self, workers: int, name: str = "fairpool") -> None:
        self._lock = threading.Lock()
        # One token per queued job (None: shut down); an idle worker waits for one.
        self._tokens: queue.SimpleQueue[bool | None] = queue.SimpleQueue()
        # Batches with queued jobs and room under their limit, in turn order.
        self._ring: deque[_Batch[Any]] = deque()
        # Every batch whose caller waits (for shutdown; some are out of the ring, at their limit).
        self._batches: set[_Batch[Any]] = set()
        self._closed = False
        self._name = name
        self._size = max(1, workers)
        self._threads: list[threading.Thread] = []
        self._idle = 0
        # Moving average of a job's time taken over its CPU time; high: no job seen yet.
        self._waiting = float("inf")
        # Moving average of a job's time taken, in seconds.
        self._job_seconds = 0.0

    def _limit(self, batch: _Batch[Any]) -> int:
        """How many of ``batch``'s jobs should run at once now; the lock is held."""
        wanted = self._waiting / WAIT_PER_JOB
        return batch.cap if wanted >= batch.cap else max(1, int(wanted))

    def _learn(self, batch: _Batch[Any], took: float, cpu: float) -> None:
        """Fold a finished job of ``batch`` into the average, and let the batch run more
        jobs at once if it may now; the lock is held."""
        ratio = took / max(cpu, 1e-6)
        average = self._waiting
        self._waiting = ratio if average == float("inf") else average + SMOOTHING * (ratio - average)
        self._job_seconds += SMOOTHING * (took - self._job_seconds)
        limit = self._limit(batch)
        if limit > batch.limit:
            self._widen(batch, limit)
        elif not batch.stalled:
            batch.limit = limit

    def _widen(self, batch: _Batch[Any], limit: int) -> None:
        """Let ``batch`` run up to ``limit`` jobs at once, starting the extra ones now;
        the lock is held."""
        before, batch.limit = batch.limit, limit
        more = min(limit - before, len(batch.queue))
        if more <= 0 or batch.cancelled:
            return
        if not batch.in_ring:
            self._ring.append(batch)
            batch.in_ring = True
        self._add_workers(more)
        for _ in range(more):
            self._tokens.put(True)

    def _add_workers(self, jobs: int) -> None:
        """Start workers for ``jobs`` new jobs that idle ones cannot take, up to the pool's size."""
        for _ in range(min(self._size - len(self._threads), jobs - self._idle)):
            thread = threading.Thread(
                target=self._work, name=f"{self._name}-{len(self._threads)}", daemon=True
            )
            self._threads.append(thread)
            thread.start()

    def map(
        self,
        func: Callable[[T], Any],
        items: Sequence[T],
        deadline: float | None = None,
        limit: int | None = None,
    ) -> list[Any]:
        """func over items, results in item order, at most ``limit`` at once. On the
        first failure the batch's queued jobs are dropped and, once its running jobs
        end, the failure of the lowest item index is raised; after ``deadline``
        (time.monotonic()) the queued jobs are dropped and BatchTimeout is raised
        without waiting for running ones."""
        cap = len(items) if limit is None else max(1, min(limit, len(items)))
        batch: _Batch[T] = _Batch(func, items, self._lock, cap)
        if not items:
            return []
        with self._lock:
            if self._closed:
                raise RuntimeError("the fetch pool is shut down")
            wanted = batch.limit = self._limit(batch)
            self._ring.append(batch)
            batch.in_ring = True
            self._batches.add(batch)
            self._add_workers(wanted)
            for _ in range(wanted):
                self._tokens.put(True)
            try:
                while not batch.finished:
                    now = time.monotonic()
                    remaining = None if deadline is None else deadline - now
                    if remaining is not None and remaining <= 0:
                        self._cancel(batch)
                        raise BatchTimeout(items[min(set(range(len(items))) - batch.done)])
                    patience = None
                    if batch.limit < batch.cap and batch.queue:
                        patience = max(STALL_FLOOR, STALL_FACTOR * self._job_seconds)
                    waits = [w for w in (remaining, patience) if w is not None]
                    progress = len(batch.done)
                    batch.changed.wait(min(waits) if waits else None)
                    stalled = len(batch.done) == progress and batch.queue and not batch.cancelled
                    if patience is not None and stalled and time.monotonic() - now >= patience:
                        batch.stalled = True
                        self._widen(batch, batch.cap)
            finally:
                self._batches.discard(batch)
        if batch.errors:
            raise batch.errors[min(batch.errors)]
        if batch.cancelled:
            raise RuntimeError("the fetch pool was shut down")
        return batch.results

    def _cancel(self, batch: _Batch[Any]) -> None:
        batch.cancelled = True
        batch.queue.clear()
        if batch.in_ring:
            self._ring.remove(batch)
            batch.in_ring = False

    def _next_job(self) -> tuple[_Batch[Any], int] | None:
        while True:
            with self._lock:
                self._idle += 1
            # A token may outlive its job (a cancelled batch): the ring is then empty; wait again.
            token = self._tokens.get()
            with self._lock:
                self._idle -= 1
                if token is None or self._closed:
                    return None
                if self._ring:
                    return self._take()

    def _take(self) -> tuple[_Batch[Any], int]:
        """The next job in turn; the lock is held."""
        batch = self._ring.popleft()
        index = batch.queue.popleft()
        batch.running += 1
        batch.in_ring = bool(batch.queue) and batch.running < batch.limit
        if batch.in_ring:
            self._ring.append(batch)  # to the back of the line: one job per turn
        return batch, index

    def _work(self) -> None:
        job = self._next_job()
        while job is not None:
            batch, index = job
            began, cpu = time.perf_counter(), time.thread_time()
            try:
                result, error = batch.func(batch.items[index]), None
            except BaseException as err:  # handed to the waiting caller
                result, error = None, err
            took, cpu = time.perf_counter() - began, time.thread_time() - cpu
            with self._lock:
                batch.running -= 1
                self._learn(batch, took, cpu)
                batch.done.add(index)
                if error is None:
                    batch.results[index] = result
                else:
                    batch.errors[index] = error
                    self._cancel(batch)
                if batch.queue and not batch.in_ring and not batch.cancelled and batch.running < batch.limit:
                    self._ring.append(batch)  # below its limit again
                    batch.in_ring = True
                if batch.finished:
                    batch.changed.notify()
                # Straight on to the next job, if any: no sleep, no wake-up.
                job = self._take() if self._ring and not self._closed else None
            if job is None:
                job = self._next_job()

    def shutdown(self) -> None:
        """Stop taking jobs; queued jobs of waiting batches are dropped."""
        with self._lock:
            self._closed = True
            for batch in self._batches:
                batch.cancelled = True
                batch.queue.clear()
                batch.in_ring = False
                batch.changed.notify()
            self._ring.clear()
            for _ in self._threads:
                self._tokens.put(None)
