"""The Redis transport's consumer polls an idle task queue often enough for figure 2's target."""

from __future__ import annotations

import secrets
from pathlib import Path

import dramatiq

from darkroom.queue.broker import REDIS_IDLE_POLL_MS, make_broker
from tests.conftest import make_settings

WORKER_TIMEOUT_MS = 1000  # dramatiq.Worker's default, which it passes to consume()


def test_idle_redis_consumer_backs_off_at_most_the_idle_poll(tmp_path: Path) -> None:
    settings = make_settings(
        tmp_path, broker_url="redis://127.0.0.1:6379/0", broker_queue=f"t{secrets.token_hex(4)}"
    )
    broker = make_broker(settings)
    try:
        queue = f"q{secrets.token_hex(4)}"
        broker.declare_queue(queue)
        consumer = broker.consume(queue, prefetch=1, timeout=WORKER_TIMEOUT_MS)
        # Before: the backoff of an idle consumer grew to the worker's 1 s timeout, so a task sent
        # to an idle worker waited up to a second for the next fetch.
        assert consumer.timeout <= REDIS_IDLE_POLL_MS
        for _ in range(8):  # idle: every fetch misses
            assert next(consumer) is None
        message = dramatiq.Message(queue_name=queue, actor_name="a", args=("x",), kwargs={}, options={})
        broker.enqueue(message)
        got = next(consumer)
        while got is None:
            got = next(consumer)
        assert got.args == ("x",)
        consumer.ack(got)
        consumer.close()
        # the delay queue (retries with a backoff of seconds) keeps Dramatiq's own timeout
        delayed = broker.consume(f"{queue}.DQ", prefetch=1, timeout=WORKER_TIMEOUT_MS)
        assert delayed.timeout == WORKER_TIMEOUT_MS
        delayed.close()
    finally:
        broker.flush_all()
        broker.close()
