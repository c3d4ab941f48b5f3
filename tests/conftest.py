from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from exportpipe_dev.local import LocalStack
    from exportpipe_dev.sandbox.pardot import PardotSandbox

    from exportpipe.models.job import Job

# The sandbox settings tests change; each test gets them back as they were.
PARDOT_KNOBS = (
    "redirect_downloads",
    "truncate_downloads",
    "download_framing",
    "file_count",
    "record_fill",
    "processing_seconds",
    "after_within_year_of_creation",
)

# The fault matrix (tests/e2e/test_fault_matrix.py) puts its one-line summary here; the terminal
# summary prints it, so it stays in `make test`'s output whatever pytest captured.
FAULT_MATRIX = pytest.StashKey[Callable[[], str]]()

ROOT = Path(__file__).resolve().parents[1]
EVENTS = ROOT / "events"


def load_event(name: str, **overrides: Any) -> dict[str, Any]:
    """A sample event from events/ (the same files `sam local invoke -e` uses), with top-level overrides."""
    event: dict[str, Any] = json.loads((EVENTS / f"{name}.json").read_text())
    event.update(overrides)
    return event


@pytest.fixture
def root() -> Path:
    return ROOT


@pytest.fixture(autouse=True)
def _functions_stay_within_their_policies(request: pytest.FixtureRequest) -> Iterator[None]:
    """Every AWS call a function's handler made during the test is one its template policies allow.

    The local stack answers any other AccessDenied, as AWS would (exportpipe_dev.local.iam); a
    handler that swallowed that answer must still fail the test that made it call. A test marked
    ``access_denied_expected`` makes such calls on purpose."""
    from exportpipe_dev.local.iam import installed

    if request.node.get_closest_marker("access_denied_expected") is not None:
        yield
        return
    before = installed()
    seen = len(before.calls) if before is not None else 0
    yield
    control = installed()
    if control is None:
        return
    denied = [c for c in control.calls[seen if control is before else 0 :] if not c.allowed]
    assert not denied, "calls the template's policies do not allow: " + "; ".join(
        f"{c.principal}: {c.operation}: {c.why}" for c in denied
    )


def pardot_of(stack: LocalStack) -> Iterator[PardotSandbox]:
    """The stack's Pardot sandbox; after the test its knobs and clock are as they were."""
    from exportpipe_dev.sandbox.pardot import PardotSandbox

    sandbox = stack.sandboxes["pardot"]
    assert isinstance(sandbox, PardotSandbox)
    saved = {name: getattr(sandbox, name) for name in PARDOT_KNOBS}
    yield sandbox
    for name, value in saved.items():
        setattr(sandbox, name, value)
    if sandbox.clock.frozen:
        sandbox.clock.unfreeze()


def ground_truth(sandbox: PardotSandbox, job: Job) -> list[dict[str, str]]:
    """What exporting the job's window [start, end) must land, from the sandbox's own records.

    Independent of the arguments the client sent: a client that shifts or widens the window fails
    this. Only records that existed when the upstream export was created count.
    """
    d = job.definition
    return sandbox.csv_records_in(
        d["object"],
        d["procedure"],
        job.window.start,
        job.window.end,
        filters=d.get("arguments"),
        fields=d.get("fields"),
        as_of=sandbox.export_created_at(int(job.upstream_id or 0)),
    )


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    summary = config.stash.get(FAULT_MATRIX, None)
    if summary is not None:
        terminalreporter.write_line(summary())
