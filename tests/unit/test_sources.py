"""Sources are plug-ins: a spec in the registry is all the core knows of one."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from exportpipe.config import Settings, load_settings
from exportpipe.errors import ConfigurationError, InvalidDefinitionError
from exportpipe.models.definition import DefinitionBase, ResultFormat
from exportpipe.models.job import Job, JobStatus
from exportpipe.services.common import backoff_seconds, poll_policy, unrecoverable
from exportpipe.sources import registry
from exportpipe.sources.base import ClientContext, PollPolicy, Recovery, SourceSpec
from exportpipe.sources.pardot import SPEC as PARDOT
from exportpipe.sources.registry import parse_definition
from tests.conftest import load_event
from tests.stub_source import FAST, JSON, XLSX, StubClient, StubDefinition, registered, stub_spec

ENV = {"STATE_TABLE_NAME": "t", "RESULTS_BUCKET": "b", "EVENT_BUS_NAME": "e"}


@pytest.fixture
def stub_source() -> Iterator[SourceSpec]:
    with registered(stub_spec()) as spec:
        yield spec


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
    with pytest.raises(InvalidDefinitionError, match=r"source: must be one of \['pardot', 'advocate'\]"):
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


def test_each_definition_says_its_result_format(stub_source: SourceSpec) -> None:
    payload = {"source": "stub", "name": "stub-things", "things": ["a"], "start": "2026-11-01T00:00:00Z"}
    # the stub's definitions choose theirs: JSON by default, or zipped XLSX
    assert parse_definition(payload).result_format == JSON
    assert parse_definition({**payload, "format": "xlsx"}).result_format == XLSX
    assert XLSX.checker == "xlsx" and XLSX.content_type.endswith("spreadsheetml.sheet")
    # Pardot's are CSV whose every row ends with a line break; a job record's definition from today's
    # code (the schedule's payload, dumped) parses back to it, and its manifest format stays "csv"
    today = parse_definition(load_event("start_export_schedule")["definition"])
    again = parse_definition(today.model_dump(mode="json"))
    assert again.result_format == ResultFormat("csv", "text/csv", "csv-terminated") == today.result_format
    assert again.result_format.extension == "csv"


def test_a_result_format_names_a_known_checker_or_none() -> None:
    with pytest.raises(ConfigurationError, match=r"unknown checker 'parquet'.*'csv-terminated'"):
        ResultFormat("parquet", "application/octet-stream", "parquet")
    assert ResultFormat("bin", "application/octet-stream").checker is None  # not checked, not counted


def test_a_definition_of_a_source_that_declares_no_format_says_so() -> None:
    class Bare(DefinitionBase):
        source: str = "bare"
        longest_window = timedelta(days=1)

    bare = Bare(name="b", start=datetime(2026, 11, 1, tzinfo=UTC))
    with pytest.raises(ConfigurationError, match="source 'bare' declares no result format"):
        _ = bare.result_format


def _settings(**env: str) -> Settings:
    return load_settings({**ENV, **env})


def test_the_default_poll_policy_is_todays_backoff_from_the_settings() -> None:
    settings = _settings()
    assert (settings.poll_base_seconds, settings.poll_max_seconds) == (30, 900)
    today = [int(min(30 * 2 ** max(a - 1, 0), 900)) for a in range(0, 40)]
    assert [PollPolicy().backoff(a, settings) for a in range(0, 40)] == today
    assert [backoff_seconds(a, settings) for a in range(0, 40)] == today
    assert PARDOT.poll == PollPolicy() and PARDOT.recovery is Recovery.RECREATE
    assert PollPolicy().first(settings) == 30 and PollPolicy().longest(settings) == 900
    # and it follows the deployment's settings
    deployed = _settings(POLL_BASE_SECONDS="5", POLL_MAX_SECONDS="12")
    assert [PollPolicy().backoff(a, deployed) for a in (1, 2, 3)] == [5, 10, 12]
    # a count of checks far past any cap does not overflow
    assert PollPolicy(factor=1.5).backoff(10**6, settings) == 900


def test_a_sources_poll_policy_is_its_own_within_the_deployments_ceiling() -> None:
    settings = _settings()
    assert [FAST.backoff(a, settings) for a in (1, 2, 3, 4, 50)] == [3, 9, 20, 20, 20]
    assert (FAST.first(settings), FAST.longest(settings)) == (2, 20)
    # what the source leaves open is the deployment's: first_wait → base → POLL_BASE_SECONDS
    assert PollPolicy(base=7).first(settings) == 7 and PollPolicy(max=60).backoff(2, settings) == 60
    # POLL_MAX_SECONDS bounds every source (the local stack's 2 s makes every source fast)
    tight = _settings(POLL_MAX_SECONDS="2")
    assert [FAST.backoff(a, tight) for a in (1, 2)] == [2, 2] and FAST.first(tight) == 2
    assert PollPolicy(first_wait=600, base=300, max=3600).first(settings) == 600
    assert PollPolicy(base=300, max=3600).backoff(3, settings) == 900


@pytest.mark.parametrize(
    ("changes", "named"),
    [({"base": 0}, "base=0"), ({"first_wait": -1}, "first_wait=-1"), ({"factor": 0.5}, "factor=0.5")],
)
def test_a_poll_policy_refuses_waits_that_do_not_grow_or_are_not_positive(
    changes: dict[str, Any], named: str
) -> None:
    with pytest.raises(ConfigurationError, match=named):
        PollPolicy(**changes)


def _job(source: str) -> Job:
    now = datetime(2026, 11, 25, tzinfo=UTC)
    return Job(
        job_id="j",
        definition_name="d",
        source=source,
        dataset="x",
        definition={"source": source},
        window={"start": now - timedelta(days=1), "end": now},
        moves_watermark=True,
        status=JobStatus.EXPORTING,
        created_at=now,
        updated_at=now,
    )


def test_the_services_ask_the_jobs_source_for_its_policy_and_recovery(stub_source: SourceSpec) -> None:
    assert poll_policy(_job("stub")) is FAST and poll_policy(_job("pardot")) == PollPolicy()
    assert unrecoverable(_job("stub")) is None and unrecoverable(_job("pardot")) is None
    with registered(stub_spec(recovery=Recovery.NONE)):
        assert unrecoverable(_job("stub")) == (
            "source 'stub' cannot recover a failed or expired upstream export (recovery: none)"
        )
    with pytest.raises(ConfigurationError, match="no client for source 'gone'"):
        poll_policy(_job("gone"))


class CannotReplay:
    """A client without ``replay_export``."""

    source = "stub"

    def __init__(self, context: ClientContext) -> None:
        self.closed = False

    def close(self) -> None:
        self.closed = True


def test_a_replay_source_whose_client_cannot_replay_is_refused_when_it_is_built(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(registry, "read_secret_json", lambda client, secret_id: {})
    settings = _settings(STUB_SECRET_ARN="arn:stub")
    built: list[CannotReplay] = []

    def make(context: ClientContext) -> Any:
        built.append(CannotReplay(context))
        return built[-1]

    with registered(stub_spec(make_client=make)):
        with pytest.raises(ConfigurationError, match="recovery 'replay' but its client CannotReplay"):
            registry.build_client("stub", settings, secrets_client=None)
        assert [c.closed for c in built] == [True]
    # the same client is fine for a source that recovers by creating again, or not at all
    for recovery in (Recovery.RECREATE, Recovery.NONE):
        with registered(stub_spec(make_client=make, recovery=recovery)):
            assert isinstance(registry.build_client("stub", settings, secrets_client=None), CannotReplay)
    # and the stub's own client can replay
    with registered(stub_spec()):
        assert isinstance(registry.build_client("stub", settings, secrets_client=None), StubClient)


def test_the_webhook_receiver_is_found_on_the_sources_spec(stub_source: SourceSpec) -> None:
    def factory(deps: Any) -> Any:
        raise AssertionError("the registry only finds the factory; the route calls it")

    assert registry.webhook_for("stub") is None  # a source without one
    assert registry.webhook_for("nowhere") is None  # no such source
    assert registry.webhook_for("pardot") is None
    with registered(dataclasses.replace(stub_source, webhook=factory)):
        assert registry.webhook_for("stub") is factory
    assert registry.webhook_for("stub") is None  # taken out with the spec
