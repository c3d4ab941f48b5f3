"""Connections: a definition names the account (secret) its exports run with; the job records it."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from typing import Any

import pytest

from exportpipe.config import load_settings
from exportpipe.errors import ConfigurationError, InvalidDefinitionError
from exportpipe.models.connection import Connection
from exportpipe.models.definition import Window
from exportpipe.models.job import Job, JobStatus
from exportpipe.sources import registry
from exportpipe.sources.registry import parse_definition

PARDOT = {
    "source": "pardot",
    "name": "prospects-emea",
    "object": "prospect",
    "procedure": "filter_by_updated_at",
    "start": "2026-11-01T00:00:00Z",
}
ENV = {
    "STATE_TABLE_NAME": "t",
    "RESULTS_BUCKET": "b",
    "EVENT_BUS_NAME": "e",
    "PARDOT_SECRET_ARN": "arn:aws:secretsmanager:us-east-1:123456789012:secret:pardot-AbCdEf",
}
NOW = datetime(2026, 11, 2, tzinfo=UTC)


def _job(definition: dict[str, Any]) -> Job:
    return Job(
        job_id="j",
        definition_name=definition["name"],
        source=definition["source"],
        dataset="prospect",
        definition=definition,
        window=Window.of(datetime(2026, 11, 1, tzinfo=UTC), NOW),
        status=JobStatus.REQUESTED,
        created_at=NOW,
        updated_at=NOW,
    )


def test_a_definition_without_a_connection_uses_its_sources_default_and_is_stored_as_before() -> None:
    definition = parse_definition(PARDOT)
    assert definition.connection is None
    assert definition.connection_ref == Connection("pardot") and definition.connection_ref.is_default
    assert definition.connection_ref.id == "pardot/default"
    # the definition a job records is the one today's code wrote: no new key
    assert "connection" not in definition.model_dump(mode="json")
    # naming the default explicitly is the same connection
    assert parse_definition({**PARDOT, "connection": "default"}).connection_ref.is_default


def test_a_named_connection_is_part_of_the_definition_and_its_id_is_stable() -> None:
    definition = parse_definition({**PARDOT, "connection": "emea.bu-2"})
    assert definition.connection == "emea.bu-2"
    assert definition.connection_ref == Connection("pardot", "emea.bu-2")
    assert definition.connection_ref.id == str(definition.connection_ref) == "pardot/emea.bu-2"
    assert definition.model_dump(mode="json")["connection"] == "emea.bu-2"
    assert parse_definition(definition.model_dump(mode="json")) == definition


@pytest.mark.parametrize(
    "name", ["", "emea/west", "-emea", ".hidden", "e" * 65, "émea", "emea west", "../x", "a*", 7]
)
def test_an_unsafe_connection_name_is_refused_naming_the_field(name: object) -> None:
    with pytest.raises(InvalidDefinitionError, match=r"connection: ") as caught:
        parse_definition({**PARDOT, "connection": name})
    assert caught.value.errors[0][0] == "connection"
    if isinstance(name, str):
        assert "letters, digits" in caught.value.errors[0][1]


def test_the_job_records_its_connection_and_old_records_read_as_the_default() -> None:
    # a record written before connections existed: no connection anywhere
    old = Job.model_validate(_job(PARDOT).model_dump(mode="json") | {"definition": PARDOT})
    assert old.connection == "pardot/default" and old.connection_ref == Connection("pardot")
    named = _job(parse_definition({**PARDOT, "connection": "emea"}).model_dump(mode="json"))
    assert named.connection == "pardot/emea" and named.connection_ref == Connection("pardot", "emea")
    record = named.model_dump(mode="json")
    assert record["connection"] == "pardot/emea"  # on the job record, for whoever reads the table
    assert Job.model_validate(record).connection_ref == named.connection_ref


def test_a_named_connection_reads_the_secret_under_the_prefix_the_default_the_sources_own() -> None:
    settings = load_settings(ENV)
    assert settings.connection_secret_prefix == "exportpipe/"
    assert registry.connection_secret(Connection("pardot"), settings) == ENV["PARDOT_SECRET_ARN"]
    assert registry.connection_secret(Connection("pardot", "emea"), settings) == "exportpipe/pardot/emea"
    custom = load_settings({**ENV, "CONNECTION_SECRET_PREFIX": "data/exports/"})
    assert registry.connection_secret(Connection("pardot", "emea"), custom) == "data/exports/pardot/emea"
    with pytest.raises(ConfigurationError, match="no client for source 'nope'"):
        registry.connection_secret(Connection("nope", "x"), settings)


@pytest.mark.parametrize("prefix", ["", "exportpipe", "*", "exportpipe/*/", "/x/", "a//b/", "x" * 256 + "/"])
def test_a_connection_prefix_that_would_widen_the_grant_is_refused(prefix: str) -> None:
    with pytest.raises(ConfigurationError, match="CONNECTION_SECRET_PREFIX"):
        load_settings({**ENV, "CONNECTION_SECRET_PREFIX": prefix})


def test_each_connection_gets_a_client_with_its_own_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = load_settings(ENV)
    read: list[str] = []
    built: list[dict[str, Any]] = []

    def fake_secret(client: Any, secret_id: str) -> dict[str, Any]:
        read.append(secret_id)
        return {"unit": secret_id}

    def fake_client(context: Any) -> Any:
        built.append(context.credentials)
        return object()

    spec = registry.SOURCES["pardot"]
    monkeypatch.setattr(registry, "read_secret_json", fake_secret)
    monkeypatch.setitem(registry.SOURCES, "pardot", dataclasses.replace(spec, make_client=fake_client))
    registry.build_client(Connection("pardot", "emea"), settings, secrets_client=None)
    registry.build_client(Connection("pardot"), settings, secrets_client=None)
    registry.build_client("pardot", settings, secrets_client=None)  # a source id: its default connection
    assert read == ["exportpipe/pardot/emea", ENV["PARDOT_SECRET_ARN"], ENV["PARDOT_SECRET_ARN"]]
    assert built == [{"unit": r} for r in read]


def test_a_connection_without_a_secret_fails_naming_the_connection() -> None:
    settings = load_settings({k: v for k, v in ENV.items() if k != "PARDOT_SECRET_ARN"})
    with pytest.raises(ConfigurationError, match=r"connection pardot/default: no secret configured"):
        registry.build_client(Connection("pardot"), settings, secrets_client=None)
