"""Live task events: a wake-up hub, a table tailer for other processes' changes, SSE streams."""
