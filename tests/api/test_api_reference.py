"""docs/api.md is generated from the served OpenAPI document (scripts/api_reference.py).

Regenerated in memory here and compared with the committed file, so the reference cannot
drift from the API: an operation added, removed or changed without running
``make api-docs`` fails this test.
"""

from __future__ import annotations

import copy
import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "api_reference.py"
REFERENCE = ROOT / "docs" / "api.md"


@pytest.fixture(scope="module")
def generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("api_reference", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def document() -> dict:
    from learncredits.api.app import api

    return api.get_openapi_schema(path_prefix="/api/v1")


def test_the_committed_reference_is_up_to_date(generator):
    committed = REFERENCE.read_text(encoding="utf-8")
    assert generator.render() == committed, "docs/api.md is stale: run `make api-docs`"


def test_every_operation_of_the_openapi_document_is_in_the_reference(generator, document):
    text = generator.render(document)
    for path, operations in document["paths"].items():
        for method in operations:
            if method in generator.METHODS:
                assert f"### {method.upper()} {path}\n" in text


def test_an_operation_added_to_the_api_changes_the_reference(generator, document):
    """The comparison above would catch a new endpoint: its section is generated."""
    grown = copy.deepcopy(document)
    grown["paths"]["/api/v1/orgs/{org_id}/example"] = {
        "get": {
            "operationId": "example",
            "summary": "Get Example",
            "tags": ["orgs"],
            "parameters": [],
            "responses": {"200": {"description": "OK"}},
        }
    }
    before, after = generator.render(document), generator.render(grown)
    assert before != after
    assert "### GET /api/v1/orgs/{org_id}/example\n" in after


def test_every_error_code_the_domain_can_raise_is_documented(generator):
    from learncredits.api.problems import STATUS_BY_ERROR

    text = generator.render()
    for cls, status in STATUS_BY_ERROR.items():
        assert f"| `{cls.code}` | {status} |" in text


def test_the_interactive_docs_load_everything_from_the_service_itself(client) -> None:
    """The docs page works with no network: every script, style and icon it names is served
    by this service (ninja's bundled Swagger UI), none comes from a CDN."""
    import re

    page = client.get("/api/v1/docs")
    assert page.status_code == 200
    html = page.content.decode()
    assert "swagger-ui" in html
    assert "//" not in re.sub(r"<!--.*?-->", "", html).replace("http://testserver", ""), html
    assets = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert any(a.endswith("swagger-ui-bundle.js") for a in assets), assets
    for asset in assets:
        answer = client.get(asset)
        assert answer.status_code == 200, asset
        body = b"".join(answer.streaming_content) if answer.streaming else answer.content
        assert body, asset
