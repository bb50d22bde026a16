"""HTTP contract that needs no broker: validation, size limits, error shape, OpenAPI docs.

The app runs its real lifespan against a closed loopback port (no broker), so these also
show that the service starts and answers without Kafka.
"""

from __future__ import annotations

import gc
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from tests.helpers.service import make_settings, running_app
from tests.helpers.waiting import closed_port

VALID = {"email": "ada@example.com", "redirect_url": "https://app.example.com/verify"}


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    settings = make_settings(
        f"127.0.0.1:{closed_port()}", "t-http", delivery_timeout_ms=300, connect_timeout_ms=200
    )
    async with running_app(settings) as running:
        yield running.client


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"redirect_url": "https://x.example/"}, "email"),
        ({"email": "ada@example.com"}, "redirect_url"),
        ({**VALID, "email": "not-an-email"}, "email"),
        ({**VALID, "email": "a" * 250 + "@example.com"}, "email"),
        ({**VALID, "redirect_url": "ftp://x.example/"}, "redirect_url"),
        ({**VALID, "redirect_url": "javascript:alert(1)"}, "redirect_url"),
        ({**VALID, "redirect_url": "https://x.example/" + "a" * 2100}, "redirect_url"),
        ({**VALID, "admin": True}, "admin"),
        ({**VALID, "email": 42}, "email"),
        # lone surrogates: valid JSON escapes, but no UTF-8 encoding exists for them
        ({**VALID, "email": "ada\ud800@example.com"}, "email"),
        ({**VALID, "redirect_url": "https://x.example/\udfff"}, "redirect_url"),
    ],
)
async def test_invalid_bodies_get_422_naming_the_field(
    client: httpx.AsyncClient, body: dict[str, Any], field: str
) -> None:
    response = await client.post(
        "/verification-emails",
        content=json.dumps(body),  # ASCII with \u escapes, which can carry lone surrogates
        headers={"content-type": "application/json"},
    )

    assert response.status_code == 422
    payload = response.json()
    assert payload["error"] == "invalid_request"
    assert field in [problem["loc"][-1] for problem in payload["errors"]]
    assert "input" not in payload["errors"][0]  # the request is not echoed back


async def test_malformed_json_gets_422(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/verification-emails",
        content=b'{"email": ',
        headers={"content-type": "application/json"},
    )

    assert response.status_code == 422
    assert response.json()["error"] == "invalid_request"


@pytest.mark.parametrize("chunked", [False, True])
async def test_oversized_body_gets_413_before_it_is_read(
    client: httpx.AsyncClient, chunked: bool
) -> None:
    payload = b'{"email": "' + b"a" * 20000 + b'"}'

    async def stream() -> AsyncIterator[bytes]:
        for start in range(0, len(payload), 4096):
            yield payload[start : start + 4096]

    response = await client.post(
        "/verification-emails",
        content=stream() if chunked else payload,
        headers={"content-type": "application/json"},
    )

    assert response.status_code == 413
    assert response.json() == {
        "error": "body_too_large",
        "detail": "request body exceeds 16384 bytes",
    }


async def test_unknown_route_and_method_get_json_errors(client: httpx.AsyncClient) -> None:
    missing = await client.get("/nope")
    wrong_method = await client.get("/verification-emails")

    assert (missing.status_code, missing.json()["error"]) == (404, "not_found")
    assert (wrong_method.status_code, wrong_method.json()["error"]) == (405, "method_not_allowed")


async def test_liveness_does_not_depend_on_kafka(client: httpx.AsyncClient) -> None:
    assert (await client.get("/health/live")).json() == {"status": "alive"}
    assert (await client.get("/health/ready")).status_code == 503


async def test_openapi_documents_every_route_model_and_error(client: httpx.AsyncClient) -> None:
    spec = (await client.get("/openapi.json")).json()
    docs = await client.get("/docs")

    assert docs.status_code == 200
    assert set(spec["paths"]) == {
        "/verification-emails",
        "/events/{event_id}",
        "/health/live",
        "/health/ready",
        "/admin/messages",
        "/admin/messages/{record_id}",
        "/admin/messages/replay",
        "/metrics",
    }
    post = spec["paths"]["/verification-emails"]["post"]
    assert set(post["responses"]) == {"200", "202", "409", "413", "422", "429", "502", "503", "504"}
    assert set(spec["paths"]["/admin/messages"]["get"]["responses"]) >= {"200", "401", "403"}
    assert set(spec["paths"]["/events/{event_id}"]["get"]["responses"]) >= {"200", "404"}
    assert post["description"]
    examples_413 = post["responses"]["413"]["content"]["application/json"]["examples"]
    assert set(examples_413) == {"body_too_large", "record_too_large"}
    schemas = spec["components"]["schemas"]
    receipt_fields = set(schemas["VerificationEmailAccepted"]["properties"])
    assert {
        "event_id",
        "topic",
        "partition",
        "offset",
        "timestamp",
        "timestamp_type",
        "log_start_offset",
        "acks",
    } <= receipt_fields
    assert schemas["VerificationEmailAccepted"].get("examples")
    assert "503" in spec["paths"]["/health/ready"]["get"]["responses"]


async def test_no_operation_takes_a_topic_from_the_request(client: httpx.AsyncClient) -> None:
    # Topics come from the settings only: a caller must not choose where events go.
    spec = (await client.get("/openapi.json")).json()
    schemas = spec["components"]["schemas"]
    inputs: list[str] = []
    for operations in spec["paths"].values():
        for operation in operations.values():
            inputs += [parameter["name"] for parameter in operation.get("parameters", [])]
            for content in operation.get("requestBody", {}).get("content", {}).values():
                body = schemas[content["schema"]["$ref"].rsplit("/", 1)[-1]]
                inputs += list(body.get("properties", {}))

    assert "email" in inputs  # the walk found the request bodies
    assert [name for name in inputs if "topic" in name.lower()] == []


async def test_wait_for_delivery_without_kafka_is_refused_before_anything_is_sent(
    client: httpx.AsyncClient,
) -> None:
    response = await client.post(
        "/verification-emails", params={"wait_for": "delivery"}, json=VALID
    )

    assert response.status_code == 503
    assert response.json()["error"] == "replies_unavailable"
    assert response.headers["Retry-After"] == "5"


async def test_wait_for_accepts_only_delivery(client: httpx.AsyncClient) -> None:
    response = await client.post("/verification-emails", params={"wait_for": "email"}, json=VALID)

    assert response.status_code == 422
    assert "wait_for" in [problem["loc"][-1] for problem in response.json()["errors"]]


@pytest.mark.parametrize(
    "key", [b"", b"a" * 256, b'"unterminated', b"caf\xe9", b'"a"b"', b'"' + b"a" * 256 + b'"']
)
async def test_an_idempotency_key_out_of_its_pattern_gets_422(
    client: httpx.AsyncClient, key: bytes
) -> None:
    response = await client.post(
        "/verification-emails", json=VALID, headers={b"Idempotency-Key": key}
    )

    assert response.status_code == 422
    payload = response.json()
    assert payload["error"] == "invalid_request"
    assert [problem["loc"] for problem in payload["errors"]] == [["header", "Idempotency-Key"]]


async def test_a_body_that_is_not_utf8_gets_422(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/verification-emails",
        content=b"8\x1d\xff\xd6\xb8",
        headers={"content-type": "application/json"},
    )

    assert response.status_code == 422
    assert response.json()["error"] == "invalid_request"


@pytest.mark.parametrize(
    ("path", "allowed"),
    [("/admin/messages", "DELETE, GET"), ("/admin/messages/replay", "POST")],
)
async def test_405_lists_every_method_of_the_path(
    client: httpx.AsyncClient, path: str, allowed: str
) -> None:
    response = await client.request("PATCH", path)

    assert response.status_code == 405
    assert response.headers["Allow"] == allowed


async def test_start_up_objects_are_kept_out_of_the_collectors_walks() -> None:
    settings = make_settings(f"127.0.0.1:{closed_port()}", "t-http-gc", connect_timeout_ms=200)
    gc.unfreeze()
    async with running_app(settings) as running:
        assert gc.get_freeze_count() > 0  # what start-up made: frozen, not walked again
        response = await running.client.post("/verification-emails", json=VALID)
        assert response.status_code in (202, 503)
    assert gc.get_freeze_count() == 0  # a lifespan run again frees what it left
