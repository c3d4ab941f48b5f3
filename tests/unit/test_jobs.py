from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from exportpipe.definitions import Window
from exportpipe.jobs import TERMINAL, TRANSITIONS, JobStatus, job_id_for

START = datetime(2026, 11, 24, tzinfo=UTC)


def test_job_id_is_deterministic_and_a_valid_execution_name() -> None:
    w = Window.of(START, START + timedelta(days=1))
    a = job_id_for("pardot-visitor-activity", w)
    assert a == job_id_for("pardot-visitor-activity", Window.of(START, START + timedelta(days=1)))
    assert len(a) <= 80 and re.fullmatch(r"[A-Za-z0-9_-]+", a)
    assert a != job_id_for("pardot-visitor-activity", Window.of(START, START + timedelta(days=2)))
    assert a != job_id_for("pardot-prospects", w)


def test_long_names_sharing_a_prefix_still_differ() -> None:
    w = Window.of(START, START + timedelta(days=1))
    one, two = "a" * 30 + "-one", "a" * 30 + "-two"
    assert job_id_for(one, w) != job_id_for(two, w)
    assert len(job_id_for("x" * 40, w)) <= 80


ORDER = [JobStatus.REQUESTED, JobStatus.EXPORTING, JobStatus.READY, JobStatus.COPYING, JobStatus.DELIVERED]


def test_status_only_moves_forward() -> None:
    for status, nexts in TRANSITIONS.items():
        for nxt in nexts:
            if status in ORDER and nxt in ORDER:
                assert ORDER.index(nxt) >= ORDER.index(status), (status, nxt)
            assert nxt is not JobStatus.REQUESTED
    for terminal in TERMINAL:
        assert TRANSITIONS[terminal] == frozenset()
    # only a retried copy may re-enter its own status
    assert [s for s, n in TRANSITIONS.items() if s in n] == [JobStatus.COPYING]


def test_every_status_can_reach_a_terminal_state() -> None:
    for status in JobStatus:
        seen, todo = set(), [status]
        while todo:
            s = todo.pop()
            seen.add(s)
            todo += [n for n in TRANSITIONS[s] if n not in seen]
        assert seen & TERMINAL, status
