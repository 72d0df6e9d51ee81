"""The published storefront files (spec 3.7): a manifest, versioned immutable URLs, plain ones.

The files are the built output of the npm package in ``clients/js`` (``node build.mjs`` writes
``clients/js/dist``, which is committed: the production image has no Node). ``broker/clientjs``
points at the package in a checkout and holds copies of exactly :data:`SERVED` in a built wheel.
Only those files are served, whatever else lies in the directory::

    /static/manifest.json          {"version", "files": {name: {"path", "integrity"}}} for NAMES
    /static/<version>/<name>       the bytes, Cache-Control: public, max-age=31536000, immutable
    /static/<name>                 the same bytes, a short Cache-Control (the latest version)

The source maps (``<name>.js.map``) are served beside their scripts, which name them. Every file
is compressed once, when the files are loaded (brotli and gzip, each kept only when smaller), and
answered in the encoding the request's ``Accept-Encoding`` prefers, with ``Vary:
Accept-Encoding``; the integrity in the manifest is that of the uncompressed bytes, which is
what browsers check. Every answer, errors included, carries ``Vary: Origin`` (the CORS
middleware adds the ``Access-Control-Allow-Origin`` of allowed storefronts, so a shared cache
must key on it).
"""

from __future__ import annotations

import base64
import functools
import gzip
import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import brotli
import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount, Route

from broker import __version__
from broker.errors import BrokerError, MethodNotAllowed, NotFound
from broker.web.requestlog import request_info
from broker.web.responses import refused

# The files of the manifest (spec 3.7), and what else is served: their source maps.
NAMES = ("referrals.js", "referrals.d.ts", "referral-widget.js", "referral-widget.d.ts")
MAPS = ("referrals.js.map", "referral-widget.js.map")
SERVED = NAMES + MAPS
DIRECTORY = Path(__file__).parents[1] / "clientjs" / "dist"
IMMUTABLE = "public, max-age=31536000, immutable"
SHORT = "public, max-age=300"
MANIFEST_CACHE = "public, max-age=60"
VARY = "Origin"
VARY_ENCODED = "Origin, Accept-Encoding"
MEDIA_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".ts": "application/typescript; charset=utf-8",
    ".map": "application/json",
}
# Most preferred first, when a request accepts several with the same weight.
ENCODINGS = ("br", "gzip")


@dataclass(frozen=True)
class Encoded:
    """One representation of a file: its bytes and its entity tag."""

    body: bytes
    etag: str


@dataclass(frozen=True)
class ClientFile:
    """One published file: its bytes, what the manifest says of them, its compressed forms."""

    name: str
    body: bytes
    media_type: str
    integrity: str  # SRI, "sha384-<base64>", of the uncompressed bytes
    etag: str
    encoded: dict[str, Encoded] = field(default_factory=dict)  # "br", "gzip"


def integrity(body: bytes) -> str:
    """The Subresource Integrity value of ``body`` (sha384, as browsers check it)."""
    return "sha384-" + base64.b64encode(hashlib.sha384(body).digest()).decode()


def compressed(body: bytes, tag: str, quality: int = 11) -> dict[str, Encoded]:
    """``body`` in brotli (at ``quality``) and gzip (level 9, no timestamp: the same bytes every
    start), each kept only when it is smaller; tagged ``"<tag>-br"`` and ``"<tag>-gzip"``."""
    forms = {
        "br": brotli.compress(body, quality=quality),
        "gzip": gzip.compress(body, compresslevel=9, mtime=0),
    }
    return {
        coding: Encoded(packed, f'"{tag}-{coding}"')
        for coding, packed in forms.items()
        if len(packed) < len(body)
    }


def preferred_encoding(accept_encoding: str, available: tuple[str, ...]) -> str | None:
    """The content coding of ``available`` that ``Accept-Encoding`` weighs highest (RFC 9110
    12.5.3: ``q=0`` refuses a coding, ``*`` stands for the unnamed ones); None for identity."""
    weights: dict[str, float] = {}
    for item in accept_encoding.split(","):
        coding, *params = (part.strip() for part in item.split(";"))
        weight = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    weight = min(max(float(value), 0.0), 1.0)
                except ValueError:
                    weight = 0.0
        if coding:
            weights[coding.lower()] = weight
    best, best_weight = None, 0.0
    for coding in ENCODINGS:
        weight = weights.get(coding, weights.get("*", 0.0))
        if coding in available and weight > best_weight:
            best, best_weight = coding, weight
    return best


def matches(if_none_match: str, etag: str) -> bool:
    """Whether ``If-None-Match`` names ``etag`` (weak comparison, as RFC 9110 asks for it)."""
    tags = {tag.strip().removeprefix("W/") for tag in if_none_match.split(",")}
    return "*" in tags or etag in tags


@functools.cache
def _read(directory: Path, version: str) -> ClientFiles:
    """The files of ``directory``, read and compressed once per process (every app a process
    builds serves the same bytes; compressing takes a few hundred milliseconds)."""
    files = {}
    for name in SERVED:
        path = directory / name
        if not path.is_file():
            # A build without clients/js/dist (say, an image that copied only broker/).
            raise RuntimeError(f"{path} is missing: build the broker with clients/js/dist")
        body = path.read_bytes()
        tag = hashlib.sha256(body).hexdigest()[:32]
        media = MEDIA_TYPES[path.suffix]
        # Brotli's best for what shoppers download; a source map, read by developers' tools
        # only, at 9: a few percent larger, seven times faster to make (about 50 ms, not 350).
        quality = 9 if name in MAPS else 11
        files[name] = ClientFile(
            name, body, media, integrity(body), f'"{tag}"', compressed(body, tag, quality)
        )
    return ClientFiles(files, version)


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
                    if name in NAMES
                },
            },
            option=orjson.OPT_INDENT_2,
        )

    @classmethod
    def load(cls, directory: Path = DIRECTORY, version: str = __version__) -> ClientFiles:
        """The files of ``directory``, read and compressed once per process."""
        return _read(directory, version)

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
        if found is not None:
            if found.encoded:
                headers["Vary"] = VARY_ENCODED
            accepted = request.headers.get("accept-encoding", "")
            coding = preferred_encoding(accepted, tuple(found.encoded))
            if coding is not None:
                body, etag = found.encoded[coding].body, found.encoded[coding].etag
                headers["Content-Encoding"] = coding
        if etag is not None:
            headers["ETag"] = etag
            if matches(request.headers.get("if-none-match", ""), etag):
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
