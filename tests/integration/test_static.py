"""The published client files over HTTP (spec 3.7): manifest, versioned and plain paths."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest

import broker as broker_package
from broker.web.clientfiles import NAMES, ClientFiles

ROOT = Path(__file__).resolve().parents[2]
CLIENT = ROOT / "clients" / "js"
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
    """manifest.json names the four files, their versioned paths and the SRI of the source bytes."""
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
            "integrity": sri((CLIENT / name).read_bytes()),
        }


@pytest.mark.parametrize("name", NAMES)
def test_versioned_path_serves_the_package_bytes_immutably(broker: Any, name: str) -> None:
    """/static/<version>/<name> is byte for byte clients/js/<name>, cached for a year, immutable."""
    answer = broker.client.get(f"/static/{VERSION}/{name}")
    assert answer.status_code == 200
    assert answer.content == (CLIENT / name).read_bytes()
    assert answer.headers["cache-control"] == "public, max-age=31536000, immutable"
    assert answer.headers["vary"] == "Origin"
    assert answer.headers["x-content-type-options"] == "nosniff"
    expected = "text/javascript" if name.endswith(".js") else "application/typescript"
    assert answer.headers["content-type"].startswith(expected)
    assert "access-control-allow-origin" not in answer.headers


@pytest.mark.parametrize("name", NAMES)
def test_plain_path_is_short_lived(broker: Any, name: str) -> None:
    """/static/<name> serves the same bytes with a short explicit Cache-Control and Vary: Origin."""
    answer = broker.client.get(f"/static/{name}")
    assert answer.status_code == 200
    assert answer.content == (CLIENT / name).read_bytes()
    assert answer.headers["cache-control"] == "public, max-age=300"
    assert answer.headers["vary"] == "Origin"


def test_allowed_origin_gets_cors_and_one_vary(broker: Any) -> None:
    """A storefront origin gets Access-Control-Allow-Origin, and Vary names Origin once."""
    answer = broker.client.get(f"/static/{VERSION}/referrals.js", headers={"Origin": ORIGIN})
    assert answer.headers["access-control-allow-origin"] == ORIGIN
    assert answer.headers["vary"] == "Origin"
    other = broker.client.get("/static/referrals.js", headers={"Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in other.headers
    assert other.headers["vary"] == "Origin"


def test_script_points_at_its_types(broker: Any) -> None:
    """A module answers X-TypeScript-Types with the versioned path of its declarations."""
    answer = broker.client.get("/static/referral-widget.js")
    assert answer.headers["x-typescript-types"] == f"/static/{VERSION}/referral-widget.d.ts"


@pytest.mark.parametrize(
    "path",
    [
        "/static/package.json",
        "/static/README.md",
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
    assert again.headers["vary"] == "Origin"


def test_a_build_without_the_client_files_fails_loudly(tmp_path: Path) -> None:
    """Loading from a directory without the four files names what is missing."""
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
