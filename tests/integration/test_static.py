"""The published client files over HTTP (spec 3.7): manifest, versioned and plain paths, source
maps, compression."""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import re
import tomllib
from pathlib import Path
from typing import Any

import brotli
import httpx2
import pytest

import broker as broker_package
from broker.web.clientfiles import NAMES, SERVED, ClientFiles, preferred_encoding

ROOT = Path(__file__).resolve().parents[2]
CLIENT = ROOT / "clients" / "js"
DIST = CLIENT / "dist"  # what build.mjs writes and the broker serves
VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
ORIGIN = "https://shop.example"  # allowed by the test settings


def sri(body: bytes) -> str:
    return "sha384-" + base64.b64encode(hashlib.sha384(body).digest()).decode()


def test_versions_agree() -> None:
    """pyproject, the broker package and the npm package carry one version."""
    package = json.loads((CLIENT / "package.json").read_text())
    assert broker_package.__version__ == VERSION
    assert package["version"] == VERSION


def test_manifest_lists_every_file_with_its_integrity(broker: Any) -> None:
    """manifest.json names the four files, their versioned paths and the SRI of the built bytes."""
    answer = broker.client.get("/static/manifest.json")
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("application/json")
    assert answer.headers["vary"] == "Origin"
    assert answer.headers["cache-control"] == "public, max-age=60"
    manifest = answer.json()
    assert manifest["version"] == VERSION
    assert set(manifest["files"]) == set(NAMES)
    for name, entry in manifest["files"].items():
        assert entry == {
            "path": f"/static/{VERSION}/{name}",
            "integrity": sri((DIST / name).read_bytes()),
        }


IDENTITY = {"Accept-Encoding": "identity"}
MEDIA = {".js": "text/javascript", ".ts": "application/typescript", ".map": "application/json"}


@pytest.mark.parametrize("name", SERVED)
def test_versioned_path_serves_the_built_bytes_immutably(broker: Any, name: str) -> None:
    """/static/<version>/<name> is byte for byte clients/js/dist/<name> (source maps included),
    cached for a year, immutable."""
    answer = broker.client.get(f"/static/{VERSION}/{name}", headers=IDENTITY)
    assert answer.status_code == 200
    assert "content-encoding" not in answer.headers
    assert answer.content == (DIST / name).read_bytes()
    assert answer.headers["cache-control"] == "public, max-age=31536000, immutable"
    assert answer.headers["vary"] == "Origin, Accept-Encoding"
    assert answer.headers["x-content-type-options"] == "nosniff"
    assert answer.headers["content-type"].startswith(MEDIA[Path(name).suffix])
    assert "access-control-allow-origin" not in answer.headers


@pytest.mark.parametrize("name", SERVED)
def test_plain_path_is_short_lived(broker: Any, name: str) -> None:
    """/static/<name> serves the same bytes with a short explicit Cache-Control."""
    answer = broker.client.get(f"/static/{name}", headers=IDENTITY)
    assert answer.status_code == 200
    assert answer.content == (DIST / name).read_bytes()
    assert answer.headers["cache-control"] == "public, max-age=300"
    assert answer.headers["vary"] == "Origin, Accept-Encoding"


@pytest.mark.parametrize("name", ["referrals.js", "referral-widget.js"])
def test_scripts_name_their_source_maps(broker: Any, name: str) -> None:
    """Each script ends by naming its map beside it, which is served and maps back to the
    package's sources with their text."""
    script = broker.client.get(f"/static/{VERSION}/{name}").text
    assert script.rstrip().endswith(f"//# sourceMappingURL={name}.map")
    source_map = broker.client.get(f"/static/{VERSION}/{name}.map").json()
    assert source_map["version"] == 3
    assert source_map["sources"][-1] == f"../{name}"
    assert source_map["sourcesContent"][-1] == (CLIENT / name).read_text()


def raw_get(url: str, accept_encoding: str | None) -> tuple[httpx2.Headers, bytes]:
    """One GET over a real socket: the answer's headers and its bytes as they came, undecoded
    (``None``: no Accept-Encoding header at all)."""
    with httpx2.Client(timeout=10) as client:
        del client.headers["Accept-Encoding"]
        if accept_encoding is not None:
            client.headers["Accept-Encoding"] = accept_encoding
        with client.stream("GET", url) as answer:
            assert answer.status_code == 200
            assert ("accept-encoding" in answer.request.headers) == (accept_encoding is not None)
            return answer.headers, b"".join(answer.iter_raw())


DECODERS = {"br": brotli.decompress, "gzip": gzip.decompress}


@pytest.mark.parametrize(
    ("accept_encoding", "coding"),
    [
        ("br", "br"),
        ("gzip", "gzip"),
        ("gzip, deflate, br, zstd", "br"),  # what Chromium sends
        ("gzip;q=1.0, br;q=0.5", "gzip"),
        ("br;q=0, *", "gzip"),
        ("*;q=0.1, gzip;q=0.2", "gzip"),
        ("deflate", None),
        ("identity", None),
        ("br;q=0, gzip;q=0", None),
        ("", None),
        (None, None),
    ],
)
def test_compressed_on_request_with_the_integrity_of_the_plain_bytes(
    wire_broker: Any, accept_encoding: str | None, coding: str | None
) -> None:
    """Over a socket, Accept-Encoding gets br or gzip bytes that decode to bytes whose sha384 is
    the manifest's integrity; anything else gets the plain bytes; Vary names Accept-Encoding."""
    manifest = httpx2.get(f"{wire_broker.url}/static/manifest.json", timeout=10).json()
    for name in ("referral-widget.js", "referrals.d.ts"):
        entry = manifest["files"][name]
        headers, body = raw_get(wire_broker.url + entry["path"], accept_encoding)
        assert headers["vary"] == "Origin, Accept-Encoding"
        assert int(headers["content-length"]) == len(body)
        if coding is None:
            assert "content-encoding" not in headers
            plain = body
        else:
            assert headers["content-encoding"] == coding
            assert len(body) < len((DIST / name).read_bytes())
            plain = DECODERS[coding](body)
        assert plain == (DIST / name).read_bytes()
        assert sri(plain) == entry["integrity"]


def test_each_encoding_has_its_own_etag(broker: Any) -> None:
    """br, gzip and plain answers carry different ETags, and each revalidates only itself."""
    path = f"/static/{VERSION}/referral-widget.js"
    tags = {
        coding: broker.client.get(path, headers={"Accept-Encoding": coding}).headers["etag"]
        for coding in ("br", "gzip", "identity")
    }
    assert len(set(tags.values())) == 3
    same = broker.client.get(path, headers={"Accept-Encoding": "br", "If-None-Match": tags["br"]})
    assert (same.status_code, same.headers["vary"]) == (304, "Origin, Accept-Encoding")
    other = broker.client.get(
        path, headers={"Accept-Encoding": "gzip", "If-None-Match": tags["br"]}
    )
    assert other.status_code == 200


def test_files_are_compressed_once_per_process() -> None:
    """Loading the files twice gives the same object: compression happens at start, not again
    for each app or request."""
    assert ClientFiles.load() is ClientFiles.load()
    widget = ClientFiles.load().files["referral-widget.js"]
    assert set(widget.encoded) == {"br", "gzip"}
    assert brotli.decompress(widget.encoded["br"].body) == widget.body


@pytest.mark.parametrize(
    ("header", "expected"),
    [("BR", "br"), ("gzip;q=abc, br;q=0", None), ("x, , gzip ; q=0.3", "gzip"), ("br", None)],
)
def test_accept_encoding_edge_cases(header: str, expected: str | None) -> None:
    """Coding names are case-insensitive, a broken weight refuses its coding, empty items are
    skipped, and a coding the file lacks is never chosen."""
    available = ("br", "gzip") if header != "br" else ("gzip",)
    assert preferred_encoding(header, available) == expected


def test_allowed_origin_gets_cors_and_one_vary(broker: Any) -> None:
    """A storefront origin gets Access-Control-Allow-Origin, and Vary names Origin once."""
    answer = broker.client.get(f"/static/{VERSION}/referrals.js", headers={"Origin": ORIGIN})
    assert answer.headers["access-control-allow-origin"] == ORIGIN
    assert answer.headers["vary"] == "Origin, Accept-Encoding"
    other = broker.client.get("/static/referrals.js", headers={"Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in other.headers
    assert other.headers["vary"] == "Origin, Accept-Encoding"
    manifest = broker.client.get("/static/manifest.json", headers={"Origin": ORIGIN})
    assert manifest.headers["vary"] == "Origin"


def test_script_points_at_its_types(broker: Any) -> None:
    """A module answers X-TypeScript-Types with the versioned path of its declarations."""
    answer = broker.client.get("/static/referral-widget.js")
    assert answer.headers["x-typescript-types"] == f"/static/{VERSION}/referral-widget.d.ts"


@pytest.mark.parametrize(
    "path",
    [
        "/static/package.json",
        "/static/README.md",
        "/static/build.mjs",
        "/static/dist/referrals.js",
        "/static/react.js",
        f"/static/{VERSION}/package.json",
        "/static/node_modules/typescript/package.json",
        "/static/test/client.test.mjs",
        "/static/0.0.1/referrals.js",
        "/static/demo.js",
        "/static/",
    ],
)
def test_anything_else_is_not_found(broker: Any, path: str) -> None:
    """Only the four files and the manifest are published; the rest is a 404 with Vary: Origin."""
    answer = broker.client.get(path)
    assert answer.status_code == 404
    assert answer.headers["content-type"].startswith("application/problem+json")
    assert answer.json()["id"] == "not_found"
    assert answer.headers["vary"] == "Origin"


def test_other_methods_are_refused(broker: Any) -> None:
    """A POST to a client file is 405 method_not_allowed, with Vary: Origin."""
    answer = broker.client.post("/static/referrals.js", content=b"{}")
    assert answer.status_code == 405
    assert answer.json()["id"] == "method_not_allowed"
    assert answer.headers["vary"] == "Origin"


def test_etag_revalidates(broker: Any) -> None:
    """A plain path revalidated with its ETag answers 304 with the same cache headers."""
    first = broker.client.get("/static/referrals.js")
    etag = first.headers["etag"]
    again = broker.client.get("/static/referrals.js", headers={"If-None-Match": etag})
    assert again.status_code == 304
    assert again.content == b""
    assert again.headers["cache-control"] == "public, max-age=300"
    assert again.headers["vary"] == "Origin, Accept-Encoding"


def test_a_build_without_the_client_files_fails_loudly(tmp_path: Path) -> None:
    """Loading from a directory without the built files names what is missing."""
    with pytest.raises(RuntimeError, match=r"referrals\.js is missing"):
        ClientFiles.load(tmp_path)


DOCS = [
    ROOT / "README.md",
    ROOT / "deploy" / "README.md",
    ROOT / "clients" / "js" / "README.md",
    *sorted((ROOT / "docs").glob("*.md")),
]


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_docs_load_the_versioned_files_with_integrity(doc: Path) -> None:
    """Every script tag in the docs loads /static/<this version>/..., with integrity and CORS."""
    text = doc.read_text()
    for version in re.findall(r"/static/(\d+\.\d+\.\d+)/", text):
        assert version == VERSION
    for tag in re.findall(r"<script[^>]*src=\"[^\"]*/static/[^>]*>", text):
        assert f"/static/{VERSION}/" in tag
        assert 'integrity="sha384-' in tag
        assert 'crossorigin="anonymous"' in tag
