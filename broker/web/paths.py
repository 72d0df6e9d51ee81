"""Paths that no route may take: a request path holding a control character is 404 not_found.

Pure ASGI, before CORS and the router (in the one middleware list that the app and its hot lane
share). Starlette's route patterns end in ``$``, which also matches before a trailing newline,
so ``POST /tokens%0A`` would otherwise reach the ``/tokens`` handler. The path in the scope is
already percent-decoded: ``%0A`` and a raw control byte are the same character here. The answer
is the broker's 404, with no CORS headers (spec 3.4).
"""

from __future__ import annotations

import re

from starlette.types import ASGIApp, Receive, Scope, Send

from broker.errors import NotFound
from broker.web.requestlog import request_info
from broker.web.responses import problem_response

# C0, DEL and C1: the control characters (Unicode category Cc).
CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


class ControlCharacterPaths:
    """Answers 404 not_found to a request whose path holds a control character."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and CONTROL.search(scope["path"]):
            info = request_info(scope)
            info.error_id = NotFound.id
            await problem_response(NotFound(), info.request_id)(scope, receive, send)
            return
        await self.app(scope, receive, send)
