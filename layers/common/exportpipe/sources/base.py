"""The small interface every upstream client implements, the normalised upstream state, and
:class:`SourceSpec`, what a source declares of itself as a plug-in."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, ClassVar, Protocol, Self, TypeVar, runtime_checkable

from pydantic import BaseModel, ConfigDict, ValidationError

from exportpipe.config import Settings
from exportpipe.errors import ConfigurationError
from exportpipe.models.definition import DefinitionBase, Window
from exportpipe.webhooks import ReceiverFactory


class UpstreamState(StrEnum):
    PENDING = "PENDING"  # queued or running upstream
    READY = "READY"  # files can be downloaded
    FAILED = "FAILED"
    CANCELED = "CANCELED"
    EXPIRED = "EXPIRED"  # the export's files are gone


@dataclass(frozen=True)
class UpstreamExport:
    upstream_id: str
    state: UpstreamState
    raw_state: str
    result_urls: list[str] = field(default_factory=list)
    detail: str | None = None
    created_at: str | None = None  # as the upstream wrote it (its own timezone and offset, if any)


@dataclass(frozen=True)
class ResultStream:
    """An open result download: its byte chunks and what the server announced about them."""

    chunks: Iterator[bytes]
    content_length: int | None
    content_type: str


D = TypeVar("D", bound=DefinitionBase, contravariant=True)


class SourceClient(Protocol[D]):
    """The small interface every upstream client implements, for its source's definition ``D``."""

    source: str

    def create_export(self, definition: D, window: Window) -> UpstreamExport: ...

    def get_export(self, upstream_id: str) -> UpstreamExport: ...

    # Ask the upstream to stop an export nothing waits for any more; False when it had already ended.
    def cancel_export(self, upstream_id: str) -> bool: ...

    def open_result(self, url: str) -> AbstractContextManager[ResultStream]: ...

    def files_timezone(self, definition: D) -> str | None: ...

    def close(self) -> None: ...


@runtime_checkable
class Replayable(Protocol):
    """A client that can ask its upstream to run an export again under the same identity (a
    source whose spec declares :attr:`Recovery.REPLAY` must have one)."""

    def replay_export(self, upstream_id: str) -> UpstreamExport:
        """Run the upstream export ``upstream_id`` again (same parameters, no new create call) and
        return its state; its ``upstream_id`` is the one the job follows from then on (normally the
        same)."""


class Recovery(StrEnum):
    """What the services do when a job's upstream export Failed, or its files expired uncopied
    (each at most ``UPSTREAM_RECREATE_ATTEMPTS`` times per job, counted apart)."""

    RECREATE = "recreate"  # create a new upstream export for the same window
    REPLAY = "replay"  # ask the upstream to run the same export again (Replayable.replay_export)
    NONE = "none"  # the source cannot recover one: the job ends FAILED / EXPIRED with the reason


@dataclass(frozen=True)
class PollPolicy:
    """How often a source's exports are checked while they run (seconds).

    - ``first_wait``: before the first check of an export the workflow itself created or recovered
      (re-created, replayed); None: ``base``. (The workflow checks a job start_export created at once.)
    - ``base``: the wait after the first check; None: the deployment's ``POLL_BASE_SECONDS``;
    - ``factor``: each further check waits this many times longer (2: doubling);
    - ``max``: the longest wait; None: the deployment's ``POLL_MAX_SECONDS``.

    Precedence: what the source declares is its own, what it leaves None is the deployment's setting,
    and ``POLL_MAX_SECONDS`` bounds every source's waits (``first_wait`` and ``base`` included): the
    deployment's ceiling, so that an operator (or the local stack, at 2 s) can make every source
    check at least that often. The default policy is the settings' doubling backoff. The same waits
    pace refusals in a row (rate limits, outages on create) and copy interruptions.
    """

    first_wait: int | None = None
    base: int | None = None
    max: int | None = None
    factor: float = 2.0

    def __post_init__(self) -> None:
        waits = {"first_wait": self.first_wait, "base": self.base, "max": self.max}
        bad = [f"{name}={value}" for name, value in waits.items() if value is not None and value < 1]
        if self.factor < 1:
            bad.append(f"factor={self.factor}")
        if bad:
            raise ConfigurationError(f"poll policy: {', '.join(bad)} (waits are >= 1 s, factor >= 1)")

    def longest(self, settings: Settings) -> int:
        """The longest wait between two checks: the policy's, within the deployment's ceiling."""
        return min(self.max or settings.poll_max_seconds, settings.poll_max_seconds)

    def first(self, settings: Settings) -> int:
        """The wait before the first check of an export the workflow (re)created."""
        return min(self.first_wait or self.base or settings.poll_base_seconds, self.longest(settings))

    def backoff(self, attempt: int, settings: Settings) -> int:
        """The wait after ``attempt`` checks (or refusals in a row): growing from the base, capped."""
        longest = self.longest(settings)
        base = self.base or settings.poll_base_seconds
        try:
            wait = base * self.factor ** max(attempt - 1, 0)
        except OverflowError:  # a float power past 1e308: far beyond any cap
            return longest
        return int(min(wait, longest))


JsonDict = dict[str, Any]


class ConnectionCredentials(BaseModel):
    """A connection's secret (JSON), as a source's client reads it: unknown keys ignored, and
    :meth:`parse` turns a bad secret into a ConfigurationError naming each field (no value)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    # How the error names the secret: "Pardot", "Advocate"...
    label: ClassVar[str]

    @classmethod
    def parse(cls, value: dict[str, Any]) -> Self:
        try:
            return cls.model_validate(value)
        except ValidationError as exc:
            fields = ", ".join(".".join(str(p) for p in e["loc"]) + f" ({e['msg']})" for e in exc.errors())
            raise ConfigurationError(f"{cls.label} secret is invalid: {fields}") from exc


@dataclass(frozen=True)
class ClientContext:
    """What a source's client is built from, per invocation."""

    settings: Settings
    credentials: dict[str, Any]  # the connection's secret (JSON)
    allowed_hosts: tuple[str, ...]  # the source's own download hosts, then the deployment's extra ones
    remaining_seconds: Callable[[], float] | None = None


@dataclass(frozen=True)
class SourceSpec:
    """A source as a plug-in: what the services need to know of it, declared in its own folder.

    - ``definition``: its definition model (a member of the union :func:`parse_definition` builds),
      which also says the format of its result files (``DefinitionBase.result_format``);
    - ``make_client``: its client, from the connection's credentials and the settings;
    - ``connection_setting``: the setting (environment variable) naming its connection (a secret);
    - ``allowed_hosts``: hosts its result downloads may come from or redirect to;
    - ``poll``: how often its exports are checked (:class:`PollPolicy`; default: the settings');
    - ``recovery``: what is done about a failed or expired upstream export (:class:`Recovery`);
      ``REPLAY`` needs a :class:`Replayable` client, checked when the client is built;
    - ``webhook``: the factory of its completion webhook receiver, or None (``POST
      /webhooks/<source>`` answers 404). The route calls it per request with the invocation's
      ``Deps`` (settings, ``read_secret`` for its connection's secret); anything the receiver keeps
      across invocations (a JWKS, say) is the factory's own per-process cache, e.g. a module-level
      dict keyed by secret id.
    """

    source: str
    definition: type[DefinitionBase]
    make_client: Callable[[ClientContext], SourceClient[Any]]
    connection_setting: str
    allowed_hosts: tuple[str, ...] = ()
    poll: PollPolicy = PollPolicy()
    recovery: Recovery = Recovery.RECREATE
    webhook: ReceiverFactory | None = None
