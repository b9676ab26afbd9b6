"""Validation of requests and payloads against the project's copy of OpenAI's OpenAPI file.

`tests/openapi/openai-batches-files.yaml` is a copy of `shared/openapi/openai-batches-files.yaml`,
kept here so the project stands alone. The published schema does not mark optional fields as
nullable, yet the live API sends `null` for them (see docs: batch-api.md), so a `null` in an
optional property is treated as "absent" before validating. Everything else is strict.
"""

from __future__ import annotations

import json
import re
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import jsonschema
import yaml

SPEC_PATH = Path(__file__).parent / "openapi" / "openai-batches-files.yaml"


@cache
def spec() -> dict[str, Any]:
    return yaml.safe_load(SPEC_PATH.read_text())


def _resolve(node: Any) -> Any:
    """Inline every local $ref so jsonschema sees plain schemas."""
    if isinstance(node, dict):
        if "$ref" in node:
            name = node["$ref"].rsplit("/", 1)[-1]
            return _resolve(spec()["components"]["schemas"][name])
        return {k: _resolve(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_resolve(v) for v in node]
    return node


def schema(name: str) -> dict[str, Any]:
    return _resolve(spec()["components"]["schemas"][name])


def _drop_optional_nulls(value: Any, node: dict[str, Any]) -> Any:
    """Remove `null` values of properties the schema does not require (see module docstring)."""
    if isinstance(value, dict) and "properties" in node:
        required = set(node.get("required", []))
        out = {}
        for key, item in value.items():
            sub = node["properties"].get(key)
            if item is None and key not in required:
                continue
            out[key] = _drop_optional_nulls(item, sub) if isinstance(sub, dict) else item
        return out
    if isinstance(value, list) and isinstance(node.get("items"), dict):
        return [_drop_optional_nulls(v, node["items"]) for v in value]
    return value


_VALIDATORS: dict[str, Any] = {}


def _check(instance: Any, node: dict[str, Any]) -> None:
    """`jsonschema.validate`, with each schema checked and compiled once: re-checking the
    inlined Batch schema against the metaschema on every call costs ~50 ms."""
    key = json.dumps(node, sort_keys=True)
    validator = _VALIDATORS.get(key)
    if validator is None:
        cls = jsonschema.validators.validator_for(node)
        cls.check_schema(node)
        validator = _VALIDATORS[key] = cls(node)
    error = jsonschema.exceptions.best_match(validator.iter_errors(instance))
    if error is not None:
        raise error


def validate_payload(payload: Any, name: str) -> None:
    """Raise jsonschema.ValidationError unless `payload` fits components/schemas/`name`."""
    node = schema(name)
    _check(_drop_optional_nulls(payload, node), node)


def _operation(method: str, path: str) -> tuple[str, dict[str, Any], dict[str, str]]:
    """Find the operation for a request path like /v1/batches/batch_1/cancel."""
    server_path = urlsplit(spec()["servers"][0]["url"]).path  # "/v1"
    if path.startswith(server_path):
        path = path[len(server_path) :]
    for template, ops in spec()["paths"].items():
        pattern = "^" + re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", template) + "$"
        match = re.match(pattern, path)
        if match and method.lower() in ops:
            return template, ops[method.lower()], match.groupdict()
    raise AssertionError(f"{method} {path} is not an operation of the OpenAPI file")


def validate_request(method: str, url: str, body: bytes | str | None = None, headers=None) -> str:
    """Check a request the client sent: path, query parameters and JSON body.

    Returns the operationId. Multipart bodies are checked for their field names only.
    """
    parts = urlsplit(url)
    _template, op, path_params = _operation(method, parts.path)
    params = {p["name"]: p for p in op.get("parameters", [])}
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        assert name in params, f"unknown query parameter {name!r} for {op['operationId']}"
        param_schema = params[name]["schema"]
        typed: Any = int(value) if param_schema.get("type") == "integer" else value
        _check(typed, param_schema)
    for name, p in params.items():
        if p.get("required") and p["in"] == "query":
            assert name in dict(parse_qsl(parts.query)), f"missing query parameter {name}"
    assert all(path_params.values())
    request_body = op.get("requestBody")
    if request_body is None:
        assert not body, f"{op['operationId']} takes no body"
        return op["operationId"]
    content = request_body["content"]
    if "application/json" in content:
        assert body, f"{op['operationId']} needs a JSON body"
        data = json.loads(body)
        _check(data, _resolve(content["application/json"]["schema"]))
    elif "multipart/form-data" in content:
        ctype = (headers or {}).get("Content-Type", "")
        assert ctype.startswith("multipart/form-data"), f"expected multipart, got {ctype!r}"
    return op["operationId"]


def validate_response(method: str, path: str, payload: Any) -> None:
    """Check an answer payload against the operation's 200 response schema."""
    _template, op, _ = _operation(method, path)
    node = _resolve(op["responses"]["200"]["content"]["application/json"]["schema"])
    _check(_drop_optional_nulls(payload, node), node)
