"""The reference service for tests: its settings, and the app with its real lifespan."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
from asgi_lifespan import LifespanManager
from fastapi import FastAPI

from app.config import (
    AdminSettings,
    KafkaSettings,
    PoliciesSettings,
    PolicyName,
    RateLimitSettings,
    ReplaySettings,
    Settings,
    StoreSettings,
    VerificationSettings,
)
from app.main import create_app
from app.state import AppState
from kafka_events import Policy, ProducerConfig, SecurityConfig

# Broker start-up, topic creation and consumer-group joins are real and take seconds.
STARTUP_TIMEOUT_S = 60

# The folder each call of make_settings() puts its own store in (set by the session fixture).
STORE_DIR: list[Path] = []

_TRANSPORT = set(ProducerConfig.model_fields)


def make_settings(
    bootstrap_servers: str,
    topic: str,
    *,
    policy: PolicyName = PolicyName.REPLICATED,
    store_url: str | None = None,
    replay: Mapping[str, object] | None = None,
    admin_token: str | None = None,
    security: SecurityConfig | None = None,
    **overrides: object,
) -> Settings:
    """Settings for a test app, ignoring any `.env` file.

    `overrides` go to the producer's transport options when they are one of those
    (linger_ms, connect_timeout_ms...), else to the feature's delivery `policy`.
    Each call gets a store of its own unless `store_url` is given.
    """
    transport = {k: v for k, v in overrides.items() if k in _TRANSPORT}
    policy_overrides = {k: v for k, v in overrides.items() if k not in _TRANSPORT}
    base = PoliciesSettings()
    policies = base.model_copy(
        update={
            policy.value: Policy.model_validate(
                {**base.get(policy).model_dump(), **policy_overrides}
            )
        }
    )
    if store_url is None:
        store_url = f"sqlite+aiosqlite:///{STORE_DIR[0] / uuid.uuid4().hex}.db"
    return Settings(
        _env_file=None,
        kafka=KafkaSettings(
            bootstrap_servers=bootstrap_servers,
            security=security or SecurityConfig(),
            producer=ProducerConfig.model_validate(transport),
            policies=PoliciesSettings.model_validate(policies.model_dump()),
        ),
        store=StoreSettings(url=store_url),
        replay=ReplaySettings.model_validate(replay or {}),
        admin=AdminSettings.model_validate({"token": admin_token}),
        verification=VerificationSettings(topic=topic, policy=policy),
        # Tests send many requests for one address; tests/unit/test_rate_limit.py turns it on.
        rate_limit=RateLimitSettings(enabled=False),
    )


@dataclass(frozen=True)
class RunningApp:
    app: FastAPI
    client: httpx.AsyncClient
    state: AppState


@asynccontextmanager
async def running_app(settings: Settings) -> AsyncIterator[RunningApp]:
    """The app with its real lifespan, and an HTTP client talking to it in-process."""
    app = create_app(settings)
    async with (
        LifespanManager(app, startup_timeout=STARTUP_TIMEOUT_S, shutdown_timeout=30) as manager,
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=manager.app), base_url="http://test"
        ) as client,
    ):
        # The lifespan's state, as the server hands it to requests (read for observation only).
        yield RunningApp(app=app, client=client, state=manager._state["app"])
