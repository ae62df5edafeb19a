"""The Redis transport's doorbell: an idle consumer waits on it instead of polling, and a send
wakes it at once (bench figure 2), on a real Redis server."""

from __future__ import annotations

import secrets
import threading
import time
from pathlib import Path
from typing import Any

import dramatiq
import redis

from darkroom.queue.broker import BELL_TOKENS, REDIS_IDLE_WAIT_S, make_broker
from tests.conftest import make_settings

WORKER_TIMEOUT_MS = 1000  # dramatiq.Worker's default, which it passes to consume()
REDIS_URL = "redis://127.0.0.1:6379/0"


def _broker(tmp_path: Path) -> Any:
    settings = make_settings(tmp_path, broker_url=REDIS_URL, broker_queue=f"t{secrets.token_hex(4)}")
    return make_broker(settings)


def _message(queue: str, arg: str) -> dramatiq.Message[Any]:
    return dramatiq.Message(queue_name=queue, actor_name="a", args=(arg,), kwargs={}, options={})


def _commands(client: redis.Redis) -> int:
    return int(client.info("stats")["total_commands_processed"])


def test_an_idle_consumer_waits_for_the_doorbell_and_a_send_wakes_it(tmp_path: Path) -> None:
    broker = _broker(tmp_path)
    probe = redis.Redis.from_url(REDIS_URL)
    try:
        queue = f"q{secrets.token_hex(4)}"
        broker.declare_queue(queue)
        consumer = broker.consume(queue, prefetch=2, timeout=WORKER_TIMEOUT_MS)
        assert next(consumer) is None  # nothing there: it waited on the bell (up to 1 s)

        # Idle, it neither spins nor polls Redis every few ms: a handful of commands per second
        # (a fetch and a BLPOP per idle wait), not hundreds. Counted on the server, not timed.
        before = _commands(probe)
        started = time.monotonic()
        while time.monotonic() - started < 2 * REDIS_IDLE_WAIT_S:
            assert next(consumer) is None
        idle_commands = _commands(probe) - before
        assert idle_commands < 30, idle_commands  # polling every 5 ms would be ~800

        # A send from another thread while the consumer waits wakes it long before its 1 s wait
        # ends: the message arrives in the first next() that was waiting.
        got: list[Any] = []

        def wait() -> None:
            message = next(consumer)
            if message is None:  # only if the bell rang before the send landed: fetch again
                message = next(consumer)
            got.append(message)

        waiter = threading.Thread(target=wait)
        waiter.start()
        time.sleep(0.2)  # the consumer is inside BLPOP now
        broker.enqueue(_message(queue, "x"))
        waiter.join(timeout=5 * REDIS_IDLE_WAIT_S)
        assert got and got[0] is not None and got[0].args == ("x",)
        consumer.ack(got[0])
        consumer.close()
    finally:
        broker.flush_all()
        broker.close()
        probe.close()


def test_the_bell_is_bounded_and_the_delay_queue_keeps_dramatiqs_backoff(tmp_path: Path) -> None:
    broker = _broker(tmp_path)
    probe = redis.Redis.from_url(REDIS_URL)
    try:
        queue = f"q{secrets.token_hex(4)}"
        broker.declare_queue(queue)
        for n in range(BELL_TOKENS + 20):  # nobody listening: the tokens do not pile up
            broker.enqueue(_message(queue, str(n)))
        assert probe.llen(broker.bell_key(queue)) == BELL_TOKENS
        consumer = broker.consume(queue, prefetch=200, timeout=WORKER_TIMEOUT_MS)
        seen = []
        while len(seen) < BELL_TOKENS + 20:
            message = next(consumer)
            if message is not None:
                seen.append(message.args[0])
                consumer.ack(message)
        assert sorted(seen, key=int) == [str(n) for n in range(BELL_TOKENS + 20)]
        consumer.close()
        delayed = broker.consume(f"{queue}.DQ", prefetch=1, timeout=WORKER_TIMEOUT_MS)
        assert delayed.timeout == WORKER_TIMEOUT_MS and not hasattr(delayed, "bell")
        delayed.close()
    finally:
        broker.flush_all()
        broker.close()
        probe.close()


class _CountingConnection(redis.Connection):
    sends = 0

    def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        type(self).sends += 1
        super().send_packed_command(command, check_health)


def test_a_send_is_one_round_trip_and_survives_an_unloaded_script(tmp_path: Path) -> None:
    """The message and the bell go in one pipeline; when Redis has lost Dramatiq's script (a
    restart, SCRIPT FLUSH) the send still lands and the bell still rings."""
    broker = _broker(tmp_path)
    probe = redis.Redis.from_url(REDIS_URL)
    try:
        broker.client.connection_pool.connection_class = _CountingConnection
        broker.client.connection_pool.reset()
        queue = f"q{secrets.token_hex(4)}"
        broker.declare_queue(queue)
        broker.enqueue(_message(queue, "first"))  # loads the script if this Redis lacks it
        before = _CountingConnection.sends
        broker.enqueue(_message(queue, "second"))
        assert _CountingConnection.sends - before == 1  # was 2: the script, then the bell

        probe.script_flush()
        broker.enqueue(_message(queue, "third"))
        assert probe.llen(broker.bell_key(queue)) >= 3
        consumer = broker.consume(queue, prefetch=10, timeout=WORKER_TIMEOUT_MS)
        seen = []
        while len(seen) < 3:
            message = next(consumer)
            if message is not None:
                seen.append(message.args[0])
                consumer.ack(message)
        assert sorted(seen) == ["first", "second", "third"]
        consumer.close()
    finally:
        broker.flush_all()
        broker.close()
        probe.close()
