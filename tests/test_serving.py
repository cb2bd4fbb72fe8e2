"""Responses leave in one write: the head waits for the body of the same turn."""

from __future__ import annotations

import asyncio

from allotment.serving import HeadHeldForBody

HEAD = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n"


class RecordingTransport:
    """A transport that keeps what was written to it, write by write."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def close(self) -> None:
        self.closed = True

    def get_extra_info(self, name: str) -> str:
        return f"info:{name}"


async def test_head_and_body_of_one_turn_are_one_write() -> None:
    real = RecordingTransport()
    transport = HeadHeldForBody(real)
    transport.write(HEAD)
    transport.write(b"{}")
    assert real.writes == [HEAD + b"{}"]
    await asyncio.sleep(0)
    assert real.writes == [HEAD + b"{}"]


async def test_a_head_without_a_body_goes_out_at_the_end_of_the_turn() -> None:
    real = RecordingTransport()
    transport = HeadHeldForBody(real)
    transport.write(HEAD)
    assert real.writes == []
    await asyncio.sleep(0)
    assert real.writes == [HEAD]


async def test_closing_sends_a_held_head_first() -> None:
    real = RecordingTransport()
    transport = HeadHeldForBody(real)
    transport.write(HEAD)
    transport.close()
    assert real.writes == [HEAD] and real.closed


async def test_other_writes_and_calls_pass_straight_through() -> None:
    real = RecordingTransport()
    transport = HeadHeldForBody(real)
    transport.write(b"5\r\nhello\r\n")
    assert real.writes == [b"5\r\nhello\r\n"]
    assert transport.get_extra_info("peername") == "info:peername"
