"""The scaled transport: Dramatiq on Redis or RabbitMQ carries task ids to ``darkroom worker``.

The database stays the truth: a message is only a doorbell, so every setting below is chosen
for "at least once, quickly" and leaves exactly-once to the conditional claim and settlement.

* **Acks late** (Dramatiq's default on both brokers): a message is acknowledged after the actor
  returns, so a worker that dies mid-task leaves it unacked; RabbitMQ redelivers it when the
  connection drops, Redis re-queues it after ``REDIS_HEARTBEAT_TIMEOUT_MS`` without a heartbeat
  from the dead worker. Our lease expiry plus the reaper bring the task back in any case.
* **Prefetch = concurrency**: a worker holds no more messages than it can run, so a message waits
  at the broker, where any idle worker can take it, rather than behind a busy one.
* **Time limit** (``DARKROOM_TASK_TIME_LIMIT_SECONDS``, default 20 min) is a last resort against a
  hung run; it stays below RabbitMQ's default ``consumer_timeout`` (30 min), past which RabbitMQ
  would close the channel of a worker holding an unacked message. Dead or stalled workers are found
  much sooner by the lease (``DARKROOM_TASK_LEASE_SECONDS``).
* **Retries: 2, backoff 1–10 s** — only for a run that raised before finishing (the database was
  unreachable at claim time, say). Provider failures never raise: they fail the task with a code.
  Everything else is re-delivered by the reaper, which owns re-delivery.
* **RabbitMQ heartbeats**: pika negotiates the server's heartbeat (60 s) unless the URL says
  ``?heartbeat=N``; Dramatiq's consumer thread services it while actors run on other threads, so a
  long task never starves it. Publishing uses ``confirm_delivery`` so a dispatch that returns was
  accepted by the broker.
* **A doorbell for Redis**: Dramatiq's Redis consumer has no blocking pop; when a fetch finds
  nothing it sleeps with an exponential backoff capped by the worker's ``worker_timeout`` (1 s by
  default), so a task sent to an idle worker waited up to a second (dispatch median 23 ms, p99
  116 ms, bench figure 2); polling every few ms instead cost an idle worker ~5 % of a core. So
  sending a task also pushes a token on a short list (``{namespace}:bell:{queue}``, trimmed to
  ``BELL_TOKENS``; in the same pipelined round trip as Dramatiq's enqueue script), and an idle
  consumer of the task queue waits on that list with ``BLPOP`` (up to ``REDIS_IDLE_WAIT_S``, then
  it fetches anyway: messages Dramatiq requeues from a dead worker ring no bell). While all its
  prefetch slots are taken it polls only for acks, every ``REDIS_BUSY_POLL_S``. The delay queue
  (retries, seconds apart) keeps Dramatiq's own backoff. RabbitMQ pushes messages and needs none
  of this.
* **No age limit**, no results backend, no callbacks or pipelines.

Sending never raises into the request: when the broker is down the task simply stays ``pending``
in the database and a worker's reaper dispatches it again (``DARKROOM_REDISPATCH_AFTER_SECONDS``).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import dramatiq
from dramatiq.broker import MessageProxy
from dramatiq.middleware import Middleware, Retries, ShutdownNotifications, TimeLimit

from darkroom.config import Settings

log = logging.getLogger(__name__)

ACTOR_NAME = "darkroom_run_task"
REDIS_HEARTBEAT_TIMEOUT_MS = 30_000
REDIS_IDLE_WAIT_S = 1.0
REDIS_BUSY_POLL_S = 0.01
BELL_TOKENS = 64
MAX_RETRIES = 2
MIN_BACKOFF_MS = 1_000
MAX_BACKOFF_MS = 10_000
SEND_TIMEOUT_SECONDS = 10


class UnsupportedBrokerUrl(ValueError):
    pass


_current = threading.local()


class TaskIdLogging(Middleware):
    """Remembers which task the current Dramatiq worker thread handles, so Dramatiq's own log
    lines about a message ("Failed to process message …") carry ``task_id`` like ours do."""

    def before_process_message(self, broker: dramatiq.Broker, message: MessageProxy) -> None:
        _current.task_id = message.args[0] if message.args else None

    def after_process_message(
        self,
        broker: dramatiq.Broker,
        message: MessageProxy,
        *,
        result: Any | None = None,
        exception: BaseException | None = None,
    ) -> None:
        _current.task_id = None

    def after_skip_message(self, broker: dramatiq.Broker, message: MessageProxy) -> None:
        _current.task_id = None


class TaskIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        task_id = getattr(_current, "task_id", None)
        if task_id is not None and not hasattr(record, "task_id"):
            record.task_id = task_id
        return True


def _redis_broker_class() -> Any:
    import redis
    from dramatiq.brokers.redis import RedisBroker, _RedisConsumer
    from dramatiq.errors import ConnectionClosed

    class DoorbellConsumer(_RedisConsumer):
        """Waits for the doorbell instead of sleeping between fetches (see the module docstring)."""

        def __init__(self, broker: Any, queue_name: str, prefetch: int, timeout: int) -> None:
            super().__init__(broker, queue_name, prefetch, 0)  # type: ignore[no-untyped-call]  # 0: no sleeps of its own
            self.bell = broker.bell_key(queue_name)

        def __next__(self) -> Any:
            could_fetch = self.outstanding_message_count < self.prefetch
            message = super().__next__()  # type: ignore[no-untyped-call]
            if message is None:
                if not could_fetch:  # every slot taken: come back soon to ack finished ones
                    time.sleep(REDIS_BUSY_POLL_S)
                    return None
                try:
                    self.broker.client.blpop([self.bell], timeout=REDIS_IDLE_WAIT_S)
                except redis.ConnectionError as exc:
                    raise ConnectionClosed(exc) from None  # type: ignore[no-untyped-call]
            return message

    class DoorbellRedisBroker(RedisBroker):
        """Rings the task queue's doorbell on every send (see the module docstring)."""

        def bell_key(self, queue_name: str) -> str:
            return f"{self.namespace}:bell:{queue_name}"

        def consume(self, queue_name: str, prefetch: int = 1, timeout: int = 5000) -> Any:
            if queue_name.endswith(".DQ"):
                return super().consume(queue_name, prefetch, timeout)
            return DoorbellConsumer(self, queue_name, prefetch, timeout)

        def do_enqueue(self, queue_name: str, *args: Any) -> Any:
            """Dramatiq's enqueue script and the doorbell in one round trip: a pipeline of the
            script's EVALSHA (queued through Dramatiq's own ``_dispatch``, so its arguments stay
            Dramatiq's), then LPUSH + LTRIM of the bell (bench figure 2: one round trip less
            per send). Redis runs them in order, so the bell never rings before the message is
            in. If the script is not loaded yet (a new or restarted Redis), Dramatiq's own call
            loads and runs it and the bell rings again after it. The delay queue rings no bell."""
            enqueue: Any = RedisBroker._dispatch
            if queue_name.endswith(".DQ"):
                return enqueue(self, "enqueue")(queue_name, *args)
            bell = self.bell_key(queue_name)
            with self.client.pipeline(transaction=False) as pipe:
                enqueue(_Piped(self, pipe), "enqueue")(queue_name, *args)
                sent, *rang = self._ring(bell, pipe)
            if isinstance(sent, redis.exceptions.NoScriptError):
                sent = enqueue(self, "enqueue")(queue_name, *args)
                with self.client.pipeline(transaction=False) as pipe:
                    rang = self._ring(bell, pipe)
            elif isinstance(sent, Exception):
                raise sent
            failed = [r for r in rang if isinstance(r, Exception)]
            if failed:  # the message is in; an idle worker finds it within REDIS_IDLE_WAIT_S
                log.warning("could not ring the Redis doorbell: %s", failed[0])
            return sent

        @staticmethod
        def _ring(bell: str, pipe: Any) -> list[Any]:
            """Push a bell token (after whatever ``pipe`` holds) and send the pipeline: each
            command's reply or error."""
            pipe.lpush(bell, 1)
            pipe.ltrim(bell, 0, BELL_TOKENS - 1)
            return list(pipe.execute(raise_on_error=False))

    class _Piped:
        """The broker as Dramatiq's ``_dispatch`` reads it, its dispatch script queued on ``pipe``."""

        def __init__(self, broker: Any, pipe: Any) -> None:
            self._broker = broker
            script = broker.scripts["dispatch"]

            def queued(args: list[Any], keys: list[str]) -> Any:
                return pipe.evalsha(script.sha, len(keys), *keys, *args)

            self.scripts = {"dispatch": queued}

        def __getattr__(self, name: str) -> Any:
            return getattr(self._broker, name)

    return DoorbellRedisBroker


def make_broker(settings: Settings) -> dramatiq.Broker:
    url = settings.broker_url or ""
    middleware: list[dramatiq.Middleware] = [
        TimeLimit(time_limit=settings.task_time_limit_seconds * 1000),
        ShutdownNotifications(),
        Retries(max_retries=MAX_RETRIES, min_backoff=MIN_BACKOFF_MS, max_backoff=MAX_BACKOFF_MS),
        TaskIdLogging(),
    ]
    broker: dramatiq.Broker
    if url.startswith(("redis://", "rediss://", "unix://")):
        redis_broker = _redis_broker_class()(
            url=url,
            middleware=middleware,
            namespace=f"darkroom-{settings.broker_queue}",
            heartbeat_timeout=REDIS_HEARTBEAT_TIMEOUT_MS,
        )
        # Fail fast when Redis is down instead of hanging the sender.
        pool_kwargs: dict[str, Any] = redis_broker.client.connection_pool.connection_kwargs
        pool_kwargs.setdefault("socket_connect_timeout", 5)
        broker = redis_broker
    elif url.startswith(("amqp://", "amqps://")):
        from dramatiq.brokers.rabbitmq import RabbitmqBroker

        broker = RabbitmqBroker(url=url, middleware=middleware, confirm_delivery=True)
    else:
        raise UnsupportedBrokerUrl(
            f"DARKROOM_BROKER_URL must start with redis:// or amqp:// (got {url.split('://')[0]!r})"
        )
    return broker


class DramatiqTransport:
    """Sends task ids (every process with a broker URL) and, in ``darkroom worker``, runs them.

    ``handler`` is set by the worker process once its context is built; API processes only send.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.broker = make_broker(settings)
        self.handler: Callable[[str], Awaitable[None]] | None = None

        async def run_task(task_id: str) -> None:
            if self.handler is None:
                raise RuntimeError("this process only sends tasks; run `darkroom worker` to run them")
            await self.handler(task_id)

        self.actor: dramatiq.Actor[[str], None] = dramatiq.actor(
            actor_name=ACTOR_NAME,
            queue_name=settings.broker_queue,
            broker=self.broker,
            max_retries=MAX_RETRIES,
            time_limit=settings.task_time_limit_seconds * 1000,
        )(run_task)

    def _send_all(self, task_ids: Sequence[str]) -> list[str]:
        failed = []
        for task_id in task_ids:
            try:
                self.actor.send(task_id)
            except Exception as exc:
                failed.append(task_id)
                log.warning(
                    "could not send the task to the broker; it stays pending and will be dispatched "
                    "again by a worker's reaper: %s",
                    exc,
                    extra={"task_id": task_id},
                )
        return failed

    async def dispatch(self, task_ids: Sequence[str]) -> None:
        """Never raises: a task that could not be sent waits in the database for the reaper."""
        if not task_ids:
            return
        try:
            async with asyncio.timeout(SEND_TIMEOUT_SECONDS * max(1, len(task_ids))):
                await asyncio.to_thread(self._send_all, list(task_ids))
        except TimeoutError:
            log.warning("broker did not answer in time; tasks stay pending for the reaper")

    def close(self) -> None:
        self.broker.close()
