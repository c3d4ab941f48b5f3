from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from exportpipe.models.definition import Window
from exportpipe.models.job import TERMINAL, TRANSITIONS, JobStatus, job_id_for

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


# The only moves back: a new upstream export for the same window (upstream Failed, or its files
# expired before the copy). Everything else moves forward or ends the job.
RESTARTS = {
    (JobStatus.EXPORTING, JobStatus.EXPORTING),
    (JobStatus.READY, JobStatus.EXPORTING),
    (JobStatus.COPYING, JobStatus.EXPORTING),
}


def test_status_only_moves_forward_except_to_restart_the_upstream_export() -> None:
    backwards = set()
    for status, nexts in TRANSITIONS.items():
        for nxt in nexts:
            if status in ORDER and nxt in ORDER and ORDER.index(nxt) < ORDER.index(status):
                backwards.add((status, nxt))
            assert nxt is not JobStatus.REQUESTED
    assert backwards == RESTARTS - {(JobStatus.EXPORTING, JobStatus.EXPORTING)}
    for terminal in TERMINAL:
        assert TRANSITIONS[terminal] == frozenset()
    # a retried copy and a re-created export re-enter their own status; nothing else does
    assert {s for s, n in TRANSITIONS.items() if s in n} == {JobStatus.COPYING, JobStatus.EXPORTING}
    assert JobStatus.DELIVERED not in {
        n for s, ns in TRANSITIONS.items() for n in ns if s != JobStatus.COPYING
    }


def test_every_status_can_reach_a_terminal_state() -> None:
    for status in JobStatus:
        seen, todo = set(), [status]
        while todo:
            s = todo.pop()
            seen.add(s)
            todo += [n for n in TRANSITIONS[s] if n not in seen]
        assert seen & TERMINAL, status
