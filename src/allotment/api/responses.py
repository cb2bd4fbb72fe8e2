"""A JSON response rendered like every other document we send (allotment.codec.render)."""

from __future__ import annotations

from typing import Any

from starlette.responses import JSONResponse

from allotment.codec import render


class Json(JSONResponse):
    def render(self, content: Any) -> bytes:
        return render(content)
