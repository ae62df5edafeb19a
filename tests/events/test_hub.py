"""The in-process wake-up hub."""

from __future__ import annotations

import asyncio

from darkroom.events.hub import InProcessHub


async def test_a_wake_up_before_waiting_is_not_lost() -> None:
    hub = InProcessHub()
    with hub.subscribe("u1") as waiter:
        hub.notify(["u1"])
        assert await waiter.wait(5) is True
        # consumed: the next wait times out (short timeout; only the outcome is checked)
        assert await waiter.wait(0.01) is False


async def test_only_the_named_users_are_woken_and_leaving_unsubscribes() -> None:
    hub = InProcessHub()
    with hub.subscribe("a") as a, hub.subscribe("b") as b:
        assert hub.listeners("a") == 1
        waiting = asyncio.create_task(a.wait(5))
        await asyncio.sleep(0)
        hub.notify(["b"])
        assert await b.wait(5) is True
        assert not waiting.done()
        hub.notify(["a", "a"])
        assert await waiting is True
    assert hub.listeners("a") == 0 and hub.listeners("b") == 0
    hub.notify(["a"])  # nobody listens: nothing happens


async def test_close_ends_every_listener_and_every_later_one() -> None:
    hub = InProcessHub()
    with hub.subscribe("a") as a, hub.subscribe("b") as b:
        waiting = asyncio.create_task(a.wait(5))
        await asyncio.sleep(0)
        assert not a.closed and not b.closed
        hub.close()
        assert await waiting is True
        assert a.closed and b.closed
        with hub.subscribe("c") as c:  # a stream opened while the server stops
            assert c.closed
