"""docker-compose.yml, checked without Docker: pinned images, healthchecks, real settings, order."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from app.config import Settings
from tests.helpers.waiting import repo_root
from tests.unit.test_env_example import _leaves

BROKERS = ("kafka-1", "kafka-2", "kafka-3")
ONE_SHOT = "kafka-init"
APP_SERVICES = ("api", "worker")


def _services() -> dict[str, dict[str, Any]]:
    compose = yaml.safe_load((repo_root() / "docker-compose.yml").read_text())
    services: dict[str, dict[str, Any]] = compose["services"]
    return services


def _environment(service: dict[str, Any]) -> dict[str, str]:
    environment = service.get("environment", {})
    if isinstance(environment, list):  # the `- NAME=value` spelling
        return dict(item.partition("=")[::2] for item in environment)
    return {name: str(value) for name, value in environment.items()}


def test_the_stack_has_three_brokers_the_topics_the_app_and_an_smtp_catcher() -> None:
    services = _services()

    assert set(services) == {*BROKERS, ONE_SHOT, *APP_SERVICES, "mailpit"}
    voters = {_environment(services[b])["KAFKA_CONTROLLER_QUORUM_VOTERS"] for b in BROKERS}
    assert voters == {"1@kafka-1:9093,2@kafka-2:9093,3@kafka-3:9093"}
    assert {_environment(services[b])["KAFKA_NODE_ID"] for b in BROKERS} == {"1", "2", "3"}
    script = services[ONE_SHOT]["command"][0]
    for topic in ("send.verification.email ", "send.verification.email.dlq ", ".reply "):
        assert topic in script
    assert "--replication-factor 3" in script
    assert "min.insync.replicas=2" in script


def test_every_image_is_pinned() -> None:
    for name, service in _services().items():
        image = service.get("image")
        assert image, f"{name}: no image"
        repository, _, tag = image.partition("@")[0].rpartition(":")
        pinned = "@sha256:" in image or (repository and tag and tag != "latest")
        assert pinned, f"{name}: {image} is not pinned to a tag or digest"


def test_every_long_running_service_has_a_healthcheck() -> None:
    for name, service in _services().items():
        if name != ONE_SHOT:
            assert service.get("healthcheck", {}).get("test"), f"{name}: no healthcheck"


@pytest.mark.parametrize("name", APP_SERVICES)
def test_app_environment_holds_only_real_settings(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    known = set(_leaves(Settings(_env_file=None).model_dump(mode="json")))
    environment = _environment(_services()[name])

    assert set(environment) <= known, f"{name}: not settings: {set(environment) - known}"
    for variable, value in environment.items():  # and their values are valid
        monkeypatch.setenv(variable, value)
    Settings(_env_file=None)


@pytest.mark.parametrize("name", APP_SERVICES)
def test_app_starts_after_healthy_brokers_and_created_topics(name: str) -> None:
    depends_on = _services()[name]["depends_on"]

    for broker in BROKERS:
        assert depends_on[broker]["condition"] == "service_healthy"
    assert depends_on[ONE_SHOT]["condition"] == "service_completed_successfully"


def test_topics_are_created_once_every_broker_is_healthy_and_mail_is_caught() -> None:
    services = _services()

    assert services[ONE_SHOT]["depends_on"] == {
        broker: {"condition": "service_healthy"} for broker in BROKERS
    }
    assert services["worker"]["depends_on"]["mailpit"]["condition"] == "service_healthy"
    assert _environment(services["worker"])["SMTP__HOST"] == "mailpit"
