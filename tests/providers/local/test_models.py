"""Model processes: the options every onnxruntime session of the local provider is built with, and
how their memory is kept between tasks and given back when idle."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
from pathlib import Path

import numpy as np

from darkroom.providers.local import models, multistyle


def test_sessions_stop_spinning_when_a_run_ends() -> None:
    """By default onnxruntime's threads spin for ~30-40 ms after a run, on a core the work after
    the model (figure 7's cut-out and PNG encode, in two threads) needs."""
    for session in (models.u2netp_session(), models.multistyle_session()):
        options = session.get_session_options()
        assert options.get_session_config_entry("session.force_spinning_stop") == "1"
        assert options.inter_op_num_threads == 1


def _resident_mb() -> float:
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def test_style_runs_reuse_their_memory_and_idle_sessions_give_it_back() -> None:
    """The style sessions' arenas keep a run's memory for the next run (with the arena off, every
    run took all of it fresh from the kernel: ~27,000 page faults for this 640×480 image, ~240,000
    for a 1600 px one); once idle, the sessions are dropped and the memory goes back."""
    rgb = (np.random.default_rng(1).random((480, 640, 3)) * 255).astype(np.uint8)
    weights = multistyle.style_weights(0)
    first = multistyle.stylize(rgb, weights)
    multistyle.stylize(rgb, weights)  # the arena settles over the first two runs
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    again = multistyle.stylize(rgb, weights)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults < 2_000
    assert np.array_equal(first, again)

    held = _resident_mb()
    with models.in_use():  # work running, however long idle before: nothing is released
        assert not models.release_idle_memory(idle=0)
    assert not models.release_idle_memory(idle=3600)  # ended a moment ago: kept
    assert models.release_idle_memory(idle=0)
    assert not models.release_idle_memory(idle=0)  # once per idle period
    assert models.style_engine()._sessions == {}
    assert held - _resident_mb() > 100

    with models.in_use():
        assert np.array_equal(multistyle.stylize(rgb, weights), first)  # loaded again on next use
    assert "multistyle26" in models.style_engine()._sessions


def test_freed_memory_is_kept_for_the_next_task_and_given_back_when_idle() -> None:
    """What a 12 MP colour enhancement frees is reused by the next one instead of being unmapped
    and faulted in again (~38,000 page faults a run before). Each case in a fresh process: the
    setting is process-wide."""
    script = """
import io, resource, sys
import numpy as np
from PIL import Image
from darkroom.providers.local import memory, operations
buf = io.BytesIO()
pixels = np.random.default_rng(2).integers(0, 256, (3000, 4000, 3), dtype=np.uint8)
Image.fromarray(pixels).save(buf, "JPEG", quality=70)
if sys.argv[1] == "keep":
    assert memory.keep_freed_memory()
faults = []
for _ in range(2):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    operations.run_operation("color_enhancement", buf.getvalue(), {"enhancement": "auto"}, max_pixels=10**8)
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(faults[1], memory.give_back_freed_memory())
"""

    def second_run(mode: str) -> tuple[int, str]:
        run = subprocess.run([sys.executable, "-c", script, mode], capture_output=True, text=True, check=True)
        faults, gave_back = run.stdout.split()
        return int(faults), gave_back

    assert second_run("plain")[0] > 10_000
    kept, gave_back = second_run("keep")
    assert kept < 1_000 and gave_back == "True"


def test_the_heap_settings_start_no_process() -> None:
    """The C library is the process's own: looking it up by name (``ctypes.util.find_library``)
    ran ``ldconfig`` in a new process, ~4 ms, at start-up and at every idle release."""
    script = """
import sys
started = []
sys.addaudithook(lambda event, args: started.append(event) if event == "subprocess.Popen" else None)
from darkroom.providers.local import memory
assert memory.keep_freed_memory()
memory.give_back_freed_memory()
memory.give_back_freed_memory()
print(len(started))
"""
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert run.stdout.split() == ["0"]
