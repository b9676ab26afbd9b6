"""Every canned payload in tests/payloads is a valid instance of its OpenAPI schema."""

import json
from pathlib import Path

import pytest

from tests.openapi import validate_payload

PAYLOADS = sorted((Path(__file__).parent / "payloads").glob("*.json"))


@pytest.mark.parametrize("path", PAYLOADS, ids=lambda p: p.name)
def test_canned_payload_fits_the_openapi_schema(path: Path) -> None:
    payload = json.loads(path.read_text())
    schema = {"list": "ListBatchesResponse", "file": "OpenAIFile"}.get(payload["object"], "Batch")
    validate_payload(payload, schema)
