"""HTTP clients for delivery: one session per endpoint, its connections bounded.

A session keeps its connections alive for the next round; `per_endpoint` bounds how many
requests one worker loop has in flight to one receiver. Sessions of endpoints not used
lately are closed beyond `capacity`.
"""

from __future__ import annotations

import ssl
from collections import OrderedDict
from typing import Self

import aiohttp
import certifi

from allotment.notifications.sender import Client


class Lanes:
    def __init__(self, *, timeout: float, per_endpoint: int = 100, capacity: int = 1000) -> None:
        self.timeout = timeout
        self.per_endpoint = per_endpoint
        self.capacity = capacity
        self._sessions: OrderedDict[str, Client] = OrderedDict()
        # One context for all sessions: loading the CA bundle takes tens of milliseconds.
        self._tls = ssl.create_default_context(cafile=certifi.where())

    async def client(self, endpoint_id: str, slot: int = 0) -> Client:
        """The session to one endpoint (`slot` is kept for callers that spread requests)."""
        found = self._sessions.get(endpoint_id)
        if found is not None:
            self._sessions.move_to_end(endpoint_id)
            return found
        while len(self._sessions) >= self.capacity:
            _, oldest = self._sessions.popitem(last=False)
            await oldest.close()
        made = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=self.per_endpoint, ssl=self._tls),
            timeout=aiohttp.ClientTimeout(total=self.timeout),
            auto_decompress=False,
            trust_env=False,
        )
        self._sessions[endpoint_id] = made
        return made

    async def aclose(self) -> None:
        while self._sessions:
            await self._sessions.popitem()[1].close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()
