"""Sources are plug-ins: a spec in the registry is all the core knows of one."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any, ClassVar, Literal

import pytest

from exportpipe.config import load_settings
from exportpipe.errors import InvalidDefinitionError
from exportpipe.models.definition import DefinitionBase, parse_definition
from exportpipe.sources import registry
from exportpipe.sources.base import ClientContext, SourceSpec


class StubDefinition(DefinitionBase):
    source: Literal["stub"]
    things: list[str]
    longest_window: ClassVar[timedelta] = timedelta(days=1)


class StubClient:
    def __init__(self, context: ClientContext) -> None:
        self.context = context


@pytest.fixture
def stub_source(monkeypatch: pytest.MonkeyPatch) -> Iterator[SourceSpec]:
    spec = SourceSpec(
        source="stub",
        definition=StubDefinition,
        make_client=lambda context: StubClient(context),  # type: ignore[arg-type,return-value]
        connection_setting="STUB_SECRET_ARN",
        allowed_hosts=("files.stub.example",),
    )
    monkeypatch.setitem(registry.SOURCES, "stub", spec)
    registry.definition_adapter.cache_clear()
    yield spec
    monkeypatch.delitem(registry.SOURCES, "stub")
    registry.definition_adapter.cache_clear()


def test_a_registered_source_is_a_member_of_the_definition_union(stub_source: SourceSpec) -> None:
    payload = {"source": "stub", "name": "stub-things", "things": ["a"], "start": "2026-11-01T00:00:00Z"}
    definition = parse_definition(payload)
    assert isinstance(definition, StubDefinition)
    # window planning and naming come from the definition base, refined by the source
    assert definition.max_window == timedelta(days=1) and definition.dataset_name == "stub"
    assert definition.lag == timedelta(minutes=5)
    with pytest.raises(InvalidDefinitionError, match="things"):
        parse_definition({**payload, "things": "not a list"})
    # and the Pardot definitions still parse beside it
    pardot = {
        "source": "pardot",
        "name": "p",
        "object": "prospect",
        "procedure": "filter_by_updated_at",
        "start": "2026-11-01T00:00:00Z",
    }
    assert parse_definition(pardot).source == "pardot"


def test_an_unregistered_source_is_refused_naming_the_known_ones() -> None:
    with pytest.raises(InvalidDefinitionError, match=r"source: must be one of \['pardot'\]"):
        parse_definition({"source": "stub", "name": "x", "start": "2026-11-01T00:00:00Z"})


def test_a_source_client_gets_its_connection_secret_and_hosts(
    stub_source: SourceSpec, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = {
        "STATE_TABLE_NAME": "t",
        "RESULTS_BUCKET": "b",
        "EVENT_BUS_NAME": "e",
        "STUB_SECRET_ARN": "arn:stub",
        "DOWNLOAD_HOST_ALLOWLIST": "extra.example",
    }
    settings = load_settings(env)
    assert settings.secret_arns == {"STUB_SECRET_ARN": "arn:stub"}
    read: list[str] = []

    def fake_secret(client: Any, secret_id: str) -> dict[str, Any]:
        read.append(secret_id)
        return {"token": "x"}

    monkeypatch.setattr(registry, "read_secret_json", fake_secret)
    client = registry.build_client("stub", settings, secrets_client=None)
    assert isinstance(client, StubClient) and read == ["arn:stub"]
    assert client.context.credentials == {"token": "x"}
    assert client.context.allowed_hosts == ("files.stub.example", "extra.example")
