"""The demo's client: the app in process, with the demo tenant's admin key."""

from __future__ import annotations

from typing import Any

import httpx


class DemoError(RuntimeError):
    """The API refused a demo request: a bug in the demo, said with the API's own words."""


class Api:
    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client

    async def post(self, path: str, body: Any = None, *, expect: tuple[int, ...] = (200, 201)) -> Any:
        resp = await self.client.post(path, json=body)
        return self._answer(resp, expect)

    async def get(self, path: str, **params: Any) -> Any:
        return self._answer(await self.client.get(path, params=params), (200,))

    @staticmethod
    def _answer(resp: httpx.Response, expect: tuple[int, ...]) -> Any:
        if resp.status_code not in expect:
            raise DemoError(f"{resp.request.method} {resp.request.url.path}: {resp.status_code} {resp.text}")
        return resp.json() if resp.content else None
