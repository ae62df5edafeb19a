"""Model sessions: the options every onnxruntime session of the local provider is built with."""

from __future__ import annotations

from darkroom.providers.local import models


def test_sessions_stop_spinning_when_a_run_ends() -> None:
    """By default onnxruntime's threads spin for ~30-40 ms after a run, on a core the work after
    the model (figure 7's cut-out and PNG encode, in two threads) needs."""
    for session in (models.u2netp_session(), models.multistyle_session()):
        options = session.get_session_options()
        assert options.get_session_config_entry("session.force_spinning_stop") == "1"
        assert options.inter_op_num_threads == 1
