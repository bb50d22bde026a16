"""Hostile values for every query and path parameter of an OpenAPI schema, and what they get.

`parameters()` lists each parameter with its schema; `hostile_values()` the values a client
may send it whatever the schema says: integers past 32 and 64 bits, negative ones, strings over
the declared length, with a NUL or non-ASCII characters. `probe()` sends each to a running app
and returns every answer that is a 5xx, not JSON, or (for a value outside the declared bounds)
not a `422 invalid_request` naming the parameter.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx

INT64_MAX = 2**63 - 1
_INTEGERS = (-1, 2**31, 2**53 + 1, INT64_MAX, 2**63, 2**64, 10**20)


@dataclass(frozen=True)
class Parameter:
    method: str
    path: str
    name: str
    location: str  # "query" or "path"
    schema: dict[str, Any]

    @property
    def label(self) -> str:
        return f"{self.method.upper()} {self.path} {self.location}:{self.name}"


def _plain(schema: dict[str, Any], spec: dict[str, Any]) -> dict[str, Any]:
    """The non-null branch of an `anyOf: [X, null]` (an optional parameter), `$ref` resolved."""
    branches = [b for b in schema.get("anyOf", []) if b.get("type") != "null"]
    plain = branches[0] if len(branches) == 1 else schema
    if (reference := plain.get("$ref")) is not None:
        name = reference.removeprefix("#/components/schemas/")
        return {**spec["components"]["schemas"][name], **_without(plain, "$ref")}
    return plain


def _without(schema: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in schema.items() if k != key}


def parameters(spec: dict[str, Any]) -> Iterator[Parameter]:
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            for parameter in operation.get("parameters", []):
                if parameter["in"] in ("query", "path"):
                    yield Parameter(
                        method,
                        path,
                        parameter["name"],
                        parameter["in"],
                        _plain(parameter.get("schema", {}), spec),
                    )


def unbounded(parameter: Parameter) -> str | None:
    """Why `parameter` has no explicit bounds, or None when it has them."""
    schema = parameter.schema
    if "enum" in schema or "const" in schema:
        return None
    if schema.get("type") == "integer":
        low, high = schema.get("minimum"), schema.get("maximum")
        if low is None or high is None:
            return "an integer without minimum and maximum"
        if low < -(2**63) or high > INT64_MAX:
            return f"an integer bounded by {low}..{high}, wider than 64 bits"
        return None
    if schema.get("type") == "string":
        return None if "maxLength" in schema else "a string without maxLength"
    return f"a parameter of schema {schema}"


def _in_bounds(schema: dict[str, Any], value: object) -> bool:
    if "enum" in schema:
        return value in schema["enum"]
    if isinstance(value, int):
        low, high = schema.get("minimum"), schema.get("maximum")
        return (low is None or value >= low) and (high is None or value <= high)
    assert isinstance(value, str)
    return len(value) <= schema.get("maxLength", len(value)) and "pattern" not in schema


def hostile_values(parameter: Parameter) -> list[object]:
    schema = parameter.schema
    if schema.get("type") == "integer":
        edges = [schema.get("minimum", 0) - 1, schema.get("maximum", INT64_MAX) + 1]
        return sorted({*_INTEGERS, *edges})
    length = schema.get("maxLength", 64)
    return ["a" * (length + 1), "a" * 5000, "a\x00b", "\x00", "é" * 8, "a b", "%00"]


@dataclass(frozen=True)
class Answer:
    parameter: Parameter
    value: object
    status: int
    body: str


def _request(parameter: Parameter, value: object) -> tuple[str, dict[str, str]]:
    text = str(value)
    if parameter.location == "path":
        return parameter.path.replace(f"{{{parameter.name}}}", quote(text, safe="")), {}
    # every other path parameter gets a plain, valid-looking id
    path = parameter.path
    while "{" in path:
        start, end = path.index("{"), path.index("}")
        path = path[:start] + "missing-id" + path[end + 1 :]
    return path, {parameter.name: text}


async def probe(
    client: httpx.AsyncClient, spec: dict[str, Any], *, headers: dict[str, str]
) -> tuple[int, list[Answer]]:
    """Send every hostile value to every parameter: the number of requests, and the wrong
    answers (5xx, not a JSON error, or an out-of-bounds value not refused with 422)."""
    wrong: list[Answer] = []
    sent = 0
    for parameter in parameters(spec):
        for value in hostile_values(parameter):
            path, params = _request(parameter, value)
            response = await client.request(parameter.method, path, params=params, headers=headers)
            sent += 1
            answer = Answer(parameter, value, response.status_code, response.text[:300])
            as_it_should = _in_bounds(parameter.schema, value) or _names(response, parameter)
            if response.status_code >= 500 or not _json_error(response) or not as_it_should:
                wrong.append(answer)
    return sent, wrong


def _json_error(response: httpx.Response) -> bool:
    if response.status_code < 400:
        return True
    try:
        return "error" in response.json()
    except ValueError:
        return False


def _names(response: httpx.Response, parameter: Parameter) -> bool:
    """`response` is the 422 that names `parameter`."""
    if response.status_code != 422:
        return False
    body = response.json()
    return body.get("error") == "invalid_request" and any(
        problem["loc"] == [parameter.location, parameter.name] for problem in body["errors"]
    )
