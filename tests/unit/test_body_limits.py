"""`POST /predict` reads no body it will refuse, gives a body a deadline, and bounds the
bytes all connections hold at once (the ASGI endpoint, driven by hand)."""

from __future__ import annotations

import asyncio
from typing import Any

from mlcycle.serve.asgi import BodyBudget, PredictEndpoint
from mlcycle.serve.security import KeyRing, hash_key, parse_keys
from mlcycle.serve.service import PredictService

KEY = "a-key-for-the-body-tests"


def _service() -> PredictService:
    keys = KeyRing(parse_keys(f'[{{"name": "c", "role": "predict", "sha256": "{hash_key(KEY)}"}}]'))
    return PredictService(keys, lambda: None, max_body_bytes=10_000, max_batch=10)


def _scope(key: str | None = KEY, length: int | None = None) -> dict[str, Any]:
    headers = [(b"content-type", b"application/json")]
    if key:
        headers.append((b"x-api-key", key.encode()))
    if length is not None:
        headers.append((b"content-length", str(length).encode()))
    return {"type": "http", "method": "POST", "path": "/predict", "headers": headers}


class Peer:
    """A client: its body messages come when the test releases them."""

    def __init__(self, parts: list[bytes]) -> None:
        self.parts = parts
        self.reads = 0
        self.sent: list[dict[str, Any]] = []
        self.gate = asyncio.Event()
        self.gate.set()

    async def receive(self) -> dict[str, Any]:
        await self.gate.wait()
        self.reads += 1
        if not self.parts:
            return {"type": "http.disconnect"}
        chunk = self.parts.pop(0)
        return {"type": "http.request", "body": chunk, "more_body": bool(self.parts)}

    async def send(self, message: dict[str, Any]) -> None:
        self.sent.append(message)

    @property
    def body(self) -> bytes:
        return b"".join(m.get("body", b"") for m in self.sent if m["type"] == "http.response.body")

    @property
    def status(self) -> int | None:
        starts = [m for m in self.sent if m["type"] == "http.response.start"]
        return starts[0]["status"] if starts else None


def test_a_request_without_a_key_is_refused_before_its_body_is_read() -> None:
    peer = Peer([b"x" * 5000])
    asyncio.run(PredictEndpoint(_service())(_scope(key=None), peer.receive, peer.send))
    assert peer.status == 401 and peer.reads == 0
    peer = Peer([b"x" * 5000])
    asyncio.run(PredictEndpoint(_service())(_scope(key="wrong"), peer.receive, peer.send))
    assert peer.status == 401 and peer.reads == 0


def test_a_body_that_does_not_arrive_in_time_gets_408_and_gives_its_bytes_back() -> None:
    async def run() -> tuple[Peer, BodyBudget]:
        budget = BodyBudget(100_000)
        endpoint = PredictEndpoint(_service(), body_timeout=0.2, budget=budget)
        peer = Peer([b"{", b"}"])
        first = peer.receive

        async def stalls() -> dict[str, Any]:
            if peer.reads >= 1:
                peer.gate.clear()  # the second part never comes
            return await first()

        await endpoint(_scope(), stalls, peer.send)
        return peer, budget

    peer, budget = asyncio.run(run())
    assert peer.status == 408
    assert budget.held == 0


def test_bodies_held_at_once_are_bounded_across_connections() -> None:
    async def run() -> tuple[Peer, Peer, BodyBudget]:
        budget = BodyBudget(6_000)
        endpoint = PredictEndpoint(_service(), body_timeout=30, budget=budget)
        slow = Peer([b"x" * 4_000, b"y" * 10])
        fast = Peer([b"z" * 4_000])
        sent = slow.receive

        async def holds() -> dict[str, Any]:
            message = await sent()
            slow.gate.clear()  # after its first 4,000 bytes, it waits
            return message

        task = asyncio.create_task(endpoint(_scope(), holds, slow.send))
        while budget.held < 4_000:
            await asyncio.sleep(0)
        await endpoint(_scope(), fast.receive, fast.send)
        slow.gate.set()
        await task
        return slow, fast, budget

    slow, fast, budget = asyncio.run(run())
    assert fast.status == 503 and b"too many request bodies" in fast.body
    assert b"no model is loaded yet" in slow.body  # read whole, then handled
    assert budget.held == 0


def test_the_declared_length_is_checked_before_reading() -> None:
    peer = Peer([b"x"])
    asyncio.run(PredictEndpoint(_service())(_scope(length=20_000), peer.receive, peer.send))
    assert peer.status == 413 and peer.reads == 0
