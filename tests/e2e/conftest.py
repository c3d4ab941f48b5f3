"""End-to-end: schedules fired at the local stack; the real state machine (the template's ASL file,
executed by moto) drives the real handlers through the Lambda bridge against the Pardot sandbox."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from exportpipe.local import LocalStack
from exportpipe.sandbox.pardot import PardotSandbox


@pytest.fixture(scope="module")
def stack() -> Iterator[LocalStack]:
    sandbox = PardotSandbox(pickup_seconds=0.0, processing_seconds=0.5, seed=5)
    with LocalStack(sandboxes={"pardot": sandbox}) as running:
        yield running


@pytest.fixture
def pardot(stack: LocalStack) -> Iterator[PardotSandbox]:
    sandbox = stack.sandboxes["pardot"]
    assert isinstance(sandbox, PardotSandbox)
    yield sandbox
    sandbox.redirect_downloads = False
    sandbox.truncate_downloads = False
    sandbox.file_count = None
    sandbox.record_fill = 0.75
