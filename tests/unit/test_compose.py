"""docker-compose.yml and the Procfile describe one deployment: held against each other here."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from tests.fixtures.paths import ROOT
from worker.settings import Settings

CELERY_SERVICES = ("worker", "beat", "flower")


def procfile() -> dict[str, str]:
    entries = {}
    for line in (ROOT / "Procfile").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, command = line.split(":", 1)
            entries[name.strip()] = command.strip()
    return entries


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_the_procfile_runs_worker_beat_and_flower_the_standard_way() -> None:
    entries = procfile()
    assert set(entries) == {*CELERY_SERVICES, "web"}
    for name in CELERY_SERVICES:
        assert entries[name].startswith(f"celery -A worker.app {name}"), entries[name]
    assert "-P threads -c 16" in entries["worker"]
    assert "--port=${FLOWER_PORT:-5555}" in entries["flower"]
    assert "--conf=worker/app/flowerconfig.py" in entries["flower"]  # no login, no Flower
    assert (ROOT / "worker" / "app" / "flowerconfig.py").is_file()


@pytest.mark.parametrize("service", CELERY_SERVICES)
def test_compose_runs_the_procfile_command_word_for_word(
    compose: dict[str, Any], service: str
) -> None:
    assert compose["services"][service]["command"] == procfile()[service]


def test_redis_keeps_an_append_only_file_on_a_named_volume(compose: dict[str, Any]) -> None:
    redis = compose["services"]["redis"]
    assert "--appendonly yes" in redis["command"]
    volume, _, mount = redis["volumes"][0].partition(":")
    assert mount == "/data" and volume in compose["volumes"]


def test_flower_needs_basic_auth_from_the_environment_and_serves_5555(
    compose: dict[str, Any],
) -> None:
    flower = compose["services"]["flower"]
    assert flower["environment"]["FLOWER_BASIC_AUTH"].startswith("${FLOWER_BASIC_AUTH:?")
    assert flower["ports"] == ["${FLOWER_PORT:-5555}:${FLOWER_PORT:-5555}"]


def test_the_sandbox_runs_only_under_the_dev_profile(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert services["sandbox"]["profiles"] == ["dev"]
    assert services["sandbox"]["command"].startswith("creditq sandbox")
    optional = {"sandbox", "redis-replica", "sentinel-1", "sentinel-2", "sentinel-3"}
    assert all("profiles" not in s for name, s in services.items() if name not in optional)


def test_the_ha_profile_adds_a_replica_and_three_sentinels_watching_redis(
    compose: dict[str, Any],
) -> None:
    services = compose["services"]
    replica = services["redis-replica"]
    assert replica["profiles"] == ["ha"] and "--replicaof redis 6379" in replica["command"]
    assert "--appendonly yes" in replica["command"]
    sentinels = [services[f"sentinel-{i}"] for i in (1, 2, 3)]
    for sentinel in sentinels:
        assert sentinel["profiles"] == ["ha"]
        assert "sentinel monitor mymaster redis 6379 2" in sentinel["command"]
        assert "redis-sentinel" in sentinel["command"]
    assert "${REDIS_EXTRA_ARGS:-}" in services["redis"]["command"]


API_KEYS = {f"CREDITQ_{n.upper()}" for n in Settings.model_fields if n.endswith("_api_key")}
API_TOKENS = "CREDITQ_API_TOKENS"
SERVE_SECRETS = {API_TOKENS, "CREDITQ_CONSOLE_BASIC_AUTH"}


def test_serve_is_the_procfiles_web_on_the_network_with_tokens(compose: dict[str, Any]) -> None:
    serve = compose["services"]["serve"]
    assert procfile()["web"].startswith("creditq serve --host ${SERVE_HOST:-127.0.0.1} ")
    assert serve["command"] == "creditq serve --host 0.0.0.0 --port 8080"
    assert serve["environment"][API_TOKENS].startswith("${CREDITQ_API_TOKENS:?")
    assert "/readyz" in " ".join(serve["healthcheck"]["test"])


@pytest.mark.parametrize("service", [*CELERY_SERVICES, "serve", "sandbox"])
def test_every_creditq_setting_reaches_the_containers(
    compose: dict[str, Any], service: str
) -> None:
    environment = compose["services"][service]["environment"]
    settings = {f"CREDITQ_{name.upper()}" for name in Settings.model_fields}
    secret = {"worker": SERVE_SECRETS, "serve": API_KEYS}.get(service, API_KEYS | SERVE_SECRETS)
    expected = settings - secret
    assert expected <= set(environment), expected - set(environment)
    assert environment["CREDITQ_REDIS_URL"] == "redis://redis:6379/0"
    assert not [k for k in environment if not k.startswith(("CREDITQ_", "FLOWER_"))]


def test_the_image_is_built_from_the_dockerfile(compose: dict[str, Any]) -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert all(compose["services"][s]["build"] == "." for s in CELERY_SERVICES)
    assert "pip install ." in dockerfile and "USER creditq" in dockerfile


@pytest.mark.parametrize("service", ["beat", "flower", "serve", "sandbox"])
def test_provider_keys_reach_only_the_worker_that_calls_a_provider(
    compose: dict[str, Any], service: str
) -> None:
    assert {"CREDITQ_INVETERATE_API_KEY", "CREDITQ_CHARGEBEE_API_KEY"} == API_KEYS
    environment = compose["services"][service]["environment"]
    assert not [k for k in environment if k.endswith("_API_KEY")], environment
    if service != "serve":
        assert not SERVE_SECRETS & set(environment)
    assert set(compose["services"]["worker"]["environment"]) >= API_KEYS


def test_the_worker_is_healthy_only_while_it_answers_a_broker_ping(compose: dict[str, Any]) -> None:
    check = compose["services"]["worker"]["healthcheck"]["test"]
    assert check[0] == "CMD-SHELL"
    assert check[1].startswith("celery -A worker.app inspect ping -d celery@$$HOSTNAME")


def test_beat_is_healthy_only_while_its_reconcile_passes_arrive(compose: dict[str, Any]) -> None:
    check = compose["services"]["beat"]["healthcheck"]["test"]
    assert check == ["CMD", "python", "-m", "worker.app.health", "beat"]
