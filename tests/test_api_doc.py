"""docs/api.md and docs/openapi.yaml describe the same endpoints, and the
OpenAPI document is well formed where clients and tools rely on it."""

import os
import re

import pytest

yaml = pytest.importorskip("yaml", reason="python3-yaml is needed to read the OpenAPI document")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = os.path.join(REPO, "docs")


def prose_operations():
    text = open(os.path.join(DOCS, "api.md"), encoding="utf-8").read()
    ops = set()
    for method, path in re.findall(r"^### `(GET|POST|PUT|DELETE) ([^`?]+)(?:\?[^`]*)?`", text, re.M):
        ops.add((method.lower(), path))
    return ops


def openapi():
    with open(os.path.join(DOCS, "openapi.yaml"), encoding="utf-8") as f:
        return yaml.safe_load(f)


def test_every_documented_endpoint_is_in_the_openapi_file_and_back():
    doc = openapi()
    spec_ops = {(m, p) for p, item in doc["paths"].items() for m in item if m in ("get", "post", "put", "delete")}
    prose = prose_operations()
    assert prose, "no endpoints found in docs/api.md"
    assert prose == spec_ops


def test_references_resolve_and_errors_are_described():
    doc = openapi()
    assert doc["openapi"].startswith("3.")

    def refs(node):
        if isinstance(node, dict):
            for k, v in node.items():
                if k == "$ref":
                    yield v
                else:
                    yield from refs(v)
        elif isinstance(node, list):
            for v in node:
                yield from refs(v)

    for ref in refs(doc):
        assert ref.startswith("#/")
        node = doc
        for part in ref[2:].split("/"):
            assert part in node, f"dangling reference {ref}"
            node = node[part]
    kinds = doc["components"]["schemas"]["Error"]["properties"]["error"]["properties"]["kind"]["enum"]
    prose = open(os.path.join(DOCS, "api.md"), encoding="utf-8").read()
    for kind in kinds:
        assert f"`{kind}`" in prose, f"error kind {kind} is not described in docs/api.md"
    # Every /v1 operation answers 401 without a valid token.
    for path, item in doc["paths"].items():
        if path.startswith("/v1/"):
            for method, op in item.items():
                if method in ("get", "post"):
                    assert "401" in op["responses"], f"{method.upper()} {path} lacks its 401"
