"""Executors: map a picklable function over picklable tasks, yielding results as they complete.

``map_unordered(fn, tasks)`` yields ``(index, result)`` pairs in completion order, so a caller can
advance a progress bar as each task finishes and put the results back in task order itself.

- :class:`LocalExecutor` runs a process pool on this machine (``concurrent.futures``); with one
  worker it runs the tasks in this process, one after the other, with no pool at all.
- :class:`RayExecutor` runs Ray tasks, on a running cluster (``address``) or on a local Ray
  instance it starts and stops itself. Ray is an optional extra (``clusterplan[ray]``) and is
  imported only when this executor is asked for.

Use an executor as a context manager: leaving it releases what it started (the Ray instance it
started; a pool lives only as long as one ``map_unordered`` call).
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import signal
import socket
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from types import ModuleType, TracebackType
from typing import Any, TypeVar

from clusterplan.errors import SpecError, shorten

T = TypeVar("T")
R = TypeVar("R")

EXECUTORS = ("local", "ray")
RAY_MISSING = "Ray is not installed: pip install 'clusterplan[ray]'"
#: Seconds to open a TCP connection to a --ray-address before Ray is asked to join it.
RAY_PROBE_TIMEOUT_S = 5.0
#: Seconds ``ray.init`` may take to join a cluster or start a local instance.
RAY_INIT_TIMEOUT_S = 60.0


class Executor:
    """Base class: a context manager with ``map_unordered``."""

    name = "executor"

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        """Release what this executor started (nothing by default)."""

    def start(self) -> None:
        """Acquire what the tasks need (a Ray connection), or refuse in one line; nothing by
        default. Called before the first task, so a bad cluster costs seconds, not a run."""

    def map_unordered(self, fn: Callable[[T], R], tasks: Sequence[T]) -> Iterator[tuple[int, R]]:
        raise NotImplementedError

    def describe(self) -> str:
        return self.name


def _pool_context() -> multiprocessing.context.BaseContext:
    """Fresh worker processes that do not inherit the parent's threads (a Ray driver, say):
    ``forkserver`` where the platform has it (workers fork from a clean server that has already
    imported clusterplan), else ``spawn``."""
    if "forkserver" in multiprocessing.get_all_start_methods():
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(["clusterplan.sweep"])
        return context
    return multiprocessing.get_context("spawn")


class LocalExecutor(Executor):
    """A process pool on this machine; ``workers=1`` runs in this process without a pool."""

    name = "local"

    def __init__(self, workers: int | None = None) -> None:
        if workers is not None and workers < 1:
            raise SpecError("--workers", workers, "must be >= 1")
        self.workers = workers if workers is not None else (os.cpu_count() or 1)

    def describe(self) -> str:
        return f"local, {self.workers} worker{'s' if self.workers != 1 else ''}"

    def map_unordered(self, fn: Callable[[T], R], tasks: Sequence[T]) -> Iterator[tuple[int, R]]:
        if self.workers == 1 or len(tasks) <= 1:
            for index, task in enumerate(tasks):
                yield index, fn(task)
            return
        pool = ProcessPoolExecutor(max_workers=min(self.workers, len(tasks)), mp_context=_pool_context(),
                                   initializer=_worker_ignores_interrupts)
        interrupted = threading.Event()
        # Ctrl-C only sets a flag while the pool runs; the loop raises KeyboardInterrupt itself
        # between waits. Raised asynchronously inside concurrent.futures.wait, it could leave the
        # futures' locks held, and the pool's manager thread (joined at exit) waiting on them
        # forever: about one Ctrl-C in twenty hung in tests/test_refusals.py.
        main_thread = threading.current_thread() is threading.main_thread()
        previous = signal.signal(signal.SIGINT, lambda *_: interrupted.set()) if main_thread else None
        try:
            pending: dict[Future[R], int] = {pool.submit(fn, task): i for i, task in enumerate(tasks)}
            while pending:
                done, _ = wait(pending, timeout=0.1, return_when=FIRST_COMPLETED)
                if interrupted.is_set():
                    raise KeyboardInterrupt
                for future in done:
                    index = pending.pop(future)
                    yield index, future.result()
            if interrupted.is_set():
                raise KeyboardInterrupt
        except BaseException:
            # An interrupt (Ctrl-C), an error or a caller that stopped reading: queued tasks are
            # dropped and running ones stopped, not awaited.
            _stop_workers(pool)
            pool.shutdown(wait=False, cancel_futures=True)
            raise
        finally:
            if main_thread:
                signal.signal(signal.SIGINT, previous if previous is not None else signal.default_int_handler)
        pool.shutdown(wait=True)


def _worker_ignores_interrupts() -> None:
    """Pool worker initializer: Ctrl-C reaches the whole process group, but only the parent
    handles it (one ``error: aborted`` line); the workers are stopped by the parent."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _stop_workers(pool: ProcessPoolExecutor) -> None:
    """Terminate a pool's worker processes now, without waiting for their running tasks (on an
    interrupt or an error: nothing else will read their results). The pool's task queue is told
    not to wait for its feeder thread: with no worker left to read the pipe, a feeder holding
    queued tasks would block forever, and with it the pool's manager thread, which the
    interpreter joins at exit (about one Ctrl-C in twenty hung in tests/test_refusals.py)."""
    for process in list((getattr(pool, "_processes", None) or {}).values()):
        with contextlib.suppress(Exception):
            process.terminate()
    with contextlib.suppress(Exception):
        pool._call_queue.cancel_join_thread()  # type: ignore[attr-defined]


def ray_address_endpoint(address: str) -> tuple[str, int] | None:
    """The (host, port) a ``--ray-address`` names (``host:port`` or ``ray://host:port``), None
    for ``auto`` (the cluster running on this machine); anything else is refused."""
    if address == "auto":
        return None
    rest = address.removeprefix("ray://")
    host, colon, port = rest.rpartition(":")
    host = host.strip("[]")  # [::1]:6379
    if not colon or not host or not port.isdigit() or not 0 < int(port) < 65536 or "/" in host:
        raise SpecError("--ray-address", address, "must be host:port, ray://host:port or auto")
    return host, int(port)


def probe_ray_address(address: str, timeout_s: float = RAY_PROBE_TIMEOUT_S) -> None:
    """Refuse (one line) a ``--ray-address`` that accepts no TCP connection within ``timeout_s``:
    Ray itself would retry for minutes."""
    endpoint = ray_address_endpoint(address)
    if endpoint is None:
        return
    try:
        with socket.create_connection(endpoint, timeout=timeout_s):
            pass
    except OSError as error:
        reason = "timed out" if isinstance(error, TimeoutError) else (error.strerror or str(error))
        raise SpecError("--ray-address", address, f"cannot connect to {endpoint[0]}:{endpoint[1]} "
                        f"within {timeout_s:g} s ({reason})") from None


def _run_quietly(target: Callable[[], None], timeout_s: float) -> bool:
    """Run ``target`` in a daemon thread with file descriptor 2 sent to /dev/null (Ray's C++
    core logs its connection retries there; a failure is reported in one line by the caller).
    True if it finished within ``timeout_s``. If it did not, it may keep logging: fd 2 stays on
    /dev/null and ``sys.stderr`` moves to a copy of the real stderr, so the caller's one line
    (and anything after it) still shows."""
    thread = threading.Thread(target=target, name="ray-init", daemon=True)
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no real fd 2 (an embedding host): leave it alone
        thread.start()
        thread.join(timeout_s)
        return not thread.is_alive()
    with open(os.devnull, "w") as sink:
        os.dup2(sink.fileno(), 2)
    try:
        thread.start()
        thread.join(timeout_s)
    finally:
        if thread.is_alive():
            sys.stderr = open(saved, "w", encoding=getattr(sys.stderr, "encoding", None) or "utf-8",  # noqa: SIM115
                              errors="backslashreplace", closefd=True)
        else:
            os.dup2(saved, 2)
            os.close(saved)
    return not thread.is_alive()


def import_ray() -> ModuleType:
    """The ``ray`` module, or a one-line refusal naming the extra to install."""
    try:
        import ray
    except ImportError:
        raise SpecError("--executor", "ray", RAY_MISSING) from None
    return ray


class RayExecutor(Executor):
    """Ray tasks, one per task, on the cluster at ``address`` or on a local instance.

    With no address and no Ray already initialised in this process, a local instance is started
    (``num_cpus`` CPUs; all of them when None) on first use and shut down by :meth:`close`. A Ray
    connection that already existed, or a cluster joined by address, is left running.
    """

    name = "ray"

    def __init__(self, address: str | None = None, num_cpus: int | None = None) -> None:
        if num_cpus is not None and num_cpus < 1:
            raise SpecError("--workers", num_cpus, "must be >= 1")
        self.address = address
        self.num_cpus = num_cpus
        self._ray = import_ray()
        self._started = False

    def describe(self) -> str:
        where = self.address or (f"local instance, {self.num_cpus} CPUs" if self.num_cpus else "local instance")
        return f"ray ({where})"

    def start(self) -> None:
        """Join the cluster at ``address`` (probed first) or start a local instance, within
        :data:`RAY_INIT_TIMEOUT_S`; a failure or a timeout is a one-line SpecError."""
        self._ensure_started()

    def _ensure_started(self) -> None:
        ray = self._ray
        if ray.is_initialized():
            return
        if self.address:
            probe_ray_address(self.address)
            options: dict[str, Any] = {"address": self.address}
        else:
            options = {"num_cpus": self.num_cpus, "include_dashboard": False}
        outcome: dict[str, BaseException | None] = {}

        def init() -> None:
            try:
                # no INFO lines under the progress bar
                ray.init(log_to_driver=False, logging_level=logging.WARNING, **options)
                outcome["error"] = None
            except BaseException as error:
                outcome["error"] = error

        where = f"the Ray cluster at {self.address}" if self.address else "a local Ray instance"
        if not _run_quietly(init, RAY_INIT_TIMEOUT_S):
            raise SpecError("--ray-address", self.address, f"{where} did not answer within "
                            f"{RAY_INIT_TIMEOUT_S:g} s (is it a Ray head node?)")
        error = outcome["error"]
        if isinstance(error, KeyboardInterrupt):
            raise error
        if error is not None:
            first = (str(error).strip().splitlines() or [type(error).__name__])[0]
            raise SpecError("--ray-address", self.address, f"cannot use {where} ({type(error).__name__}: "
                            f"{shorten(first)})") from None
        self._started = True

    def close(self) -> None:
        if self._started:
            self._ray.shutdown()
            self._started = False

    def map_unordered(self, fn: Callable[[T], R], tasks: Sequence[T]) -> Iterator[tuple[int, R]]:
        if not tasks:
            return
        self._ensure_started()
        ray = self._ray
        remote: Any = ray.remote(num_cpus=1)(fn)
        refs = [remote.remote(task) for task in tasks]
        index = {ref: i for i, ref in enumerate(refs)}
        pending = list(refs)
        try:
            while pending:
                ready, pending = ray.wait(pending, num_returns=1)
                if pending:  # collect everything else already finished, without waiting
                    more, pending = ray.wait(pending, num_returns=len(pending), timeout=0)
                    ready += more
                for ref, result in zip(ready, ray.get(ready), strict=True):
                    yield index[ref], result
        finally:
            for ref in pending:
                ray.cancel(ref)


def make_executor(name: str, ray_address: str | None = None, workers: int | None = None) -> Executor:
    """The executor the CLI names: ``local`` (process pool) or ``ray``; refusals are SpecErrors."""
    if name not in EXECUTORS:
        raise SpecError("--executor", name, "must be local or ray")
    if workers is not None and workers < 1:
        raise SpecError("--workers", workers, "must be >= 1")
    if name == "local":
        if ray_address is not None:
            raise SpecError("--ray-address", ray_address, "only applies with --executor ray")
        return LocalExecutor(workers)
    return RayExecutor(ray_address, num_cpus=workers)
