"""The published storefront files (spec 3.7): a manifest, versioned immutable URLs, plain ones.

The one source of the files is the npm package in ``clients/js``; ``broker/clientjs`` points at
it in a checkout and holds copies of exactly :data:`NAMES` in a built wheel. Only those files
are served, whatever else lies in the directory (``package.json``, tests, ``node_modules``)::

    /static/manifest.json          {"version", "files": {name: {"path", "integrity"}}}
    /static/<version>/<name>       the bytes, Cache-Control: public, max-age=31536000, immutable
    /static/<name>                 the same bytes, a short Cache-Control (the latest version)

Every answer, errors included, carries ``Vary: Origin`` (the CORS middleware adds the
``Access-Control-Allow-Origin`` of allowed storefronts, so a shared cache must key on it).
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from pathlib import Path

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount, Route

from broker import __version__
from broker.errors import BrokerError, MethodNotAllowed, NotFound
from broker.web.requestlog import request_info
from broker.web.responses import refused

NAMES = ("referrals.js", "referrals.d.ts", "referral-widget.js", "referral-widget.d.ts")
DIRECTORY = Path(__file__).parents[1] / "clientjs"
IMMUTABLE = "public, max-age=31536000, immutable"
SHORT = "public, max-age=300"
MANIFEST_CACHE = "public, max-age=60"
VARY = "Origin"
JS = "text/javascript; charset=utf-8"
TS = "application/typescript; charset=utf-8"


@dataclass(frozen=True)
class ClientFile:
    """One published file: its bytes and what the manifest says of them."""

    name: str
    body: bytes
    media_type: str
    integrity: str  # SRI, "sha384-<base64>"
    etag: str


def integrity(body: bytes) -> str:
    """The Subresource Integrity value of ``body`` (sha384, as browsers check it)."""
    return "sha384-" + base64.b64encode(hashlib.sha384(body).digest()).decode()


class ClientFiles:
    """The files of one broker version, read once when the app is built."""

    def __init__(self, files: dict[str, ClientFile], version: str) -> None:
        self.files = files
        self.version = version
        self.manifest = orjson.dumps(
            {
                "version": version,
                "files": {
                    name: {"path": f"/static/{version}/{name}", "integrity": file.integrity}
                    for name, file in files.items()
                },
            },
            option=orjson.OPT_INDENT_2,
        )

    @classmethod
    def load(cls, directory: Path = DIRECTORY, version: str = __version__) -> ClientFiles:
        files = {}
        for name in NAMES:
            path = directory / name
            if not path.is_file():
                # A build without clients/js (say, an image that copied only broker/).
                raise RuntimeError(f"{path} is missing: build the broker with clients/js beside it")
            body = path.read_bytes()
            digest = hashlib.sha256(body).hexdigest()[:32]
            files[name] = ClientFile(
                name, body, JS if name.endswith(".js") else TS, integrity(body), f'"{digest}"'
            )
        return cls(files, version)

    def answer(self, request: Request) -> Response:
        """The answer to one request under ``/static``."""
        info = request_info(request.scope)
        path = request.path_params.get("path", "")
        parts = path.split("/")
        if path == "manifest.json":
            info.route = "/static/manifest.json"
            found: ClientFile | None = None
            body, media, cache, etag = self.manifest, "application/json", MANIFEST_CACHE, None
        elif len(parts) == 2 and parts[0] == self.version:
            info.route = "/static/{version}/{name}"
            found = self.files.get(parts[1])
            cache = IMMUTABLE
        else:
            info.route = "/static/{name}"
            found = self.files.get(path)
            cache = SHORT
        try:
            if request.method not in ("GET", "HEAD"):
                raise MethodNotAllowed(("GET", "HEAD"))
            if path != "manifest.json":
                if found is None:
                    raise NotFound()
                body, media, etag = found.body, found.media_type, found.etag
        except BrokerError as error:
            answer = refused(info, error)
            answer.headers["Vary"] = VARY
            return answer
        headers = {"Cache-Control": cache, "Vary": VARY, "X-Content-Type-Options": "nosniff"}
        if etag is not None:
            headers["ETag"] = etag
            if etag in request.headers.get("if-none-match", ""):
                return Response(status_code=304, headers=headers)
        if found is not None and found.name.endswith(".js"):
            # Deno and some CDNs find the types of a module through this header.
            types = found.name.removesuffix(".js") + ".d.ts"
            headers["X-TypeScript-Types"] = f"/static/{self.version}/{types}"
        return Response(body, media_type=media, headers=headers)


def static_mount(files: ClientFiles) -> Mount:
    """``/static/...``: every method and path lands in :meth:`ClientFiles.answer`."""

    async def serve(request: Request) -> Response:
        return files.answer(request)

    methods = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
    return Mount("/static", routes=[Route("/{path:path}", serve, methods=methods)])
