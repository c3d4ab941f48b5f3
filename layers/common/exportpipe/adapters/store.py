"""DynamoDB job store: conditional writes only, so that duplicates and out-of-order events are refused.

One table, two kinds of item:

- ``JOB#<job id>``: the job record with its transition history. ``upstream_ref`` (``<source>#<id>``)
  feeds the sparse ``ByUpstreamId`` index, so a webhook finds its job in one query, without scans.
- ``DEF#<definition name>``: the definition's ``watermark`` (end of the last delivered window) and its
  ``active_job`` lease: one export in flight per definition, so windows never overlap.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
from botocore.exceptions import ClientError

from exportpipe.errors import JobNotFoundError, TransitionError, scrub
from exportpipe.models.job import (
    STALE_CLAIM,
    TRANSITIONS,
    CreateOutcome,
    Job,
    JobStatus,
    Transition,
    sources_of,
    upstream_ref,
)

UPSTREAM_INDEX = "ByUpstreamId"

_ser = TypeSerializer()
_de = TypeDeserializer()


def utcnow() -> datetime:
    return datetime.now(UTC)


def _to_item(values: Mapping[str, Any]) -> dict[str, Any]:
    return {k: _ser.serialize(v) for k, v in values.items() if v is not None}


def _from_item(item: Mapping[str, Any]) -> dict[str, Any]:
    return {k: _de.deserialize(v) for k, v in item.items()}


# Free text that may quote an upstream URL (an error message): scrubbed of query strings and
# userinfo on every write, so a signed URL never lands in the table.
_TEXT_FIELDS = ("reason", "upstream_state")


def _scrubbed(values: Mapping[str, Any]) -> dict[str, Any]:
    return {k: scrub(v) if k in _TEXT_FIELDS and isinstance(v, str) else v for k, v in values.items()}


def _conditional_failed(exc: ClientError) -> bool:
    return bool(exc.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException")


class DynamoJobStore:
    def __init__(
        self,
        client: Any,
        table: str,
        *,
        ttl_days: int = 400,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._db = client
        self._table = table
        self._ttl = timedelta(days=ttl_days)
        self._now = clock

    # ---- reads -------------------------------------------------------------------------------

    def find(self, job_id: str) -> Job | None:
        resp = self._db.get_item(
            TableName=self._table, Key=_to_item({"pk": f"JOB#{job_id}"}), ConsistentRead=True
        )
        item = resp.get("Item")
        return Job.model_validate(_from_item(item)) if item else None

    def get(self, job_id: str) -> Job:
        job = self.find(job_id)
        if job is None:
            raise JobNotFoundError(f"no job {job_id!r}")
        return job

    def find_by_upstream(self, source: str, upstream_id: str) -> Job | None:
        resp = self._db.query(
            TableName=self._table,
            IndexName=UPSTREAM_INDEX,
            KeyConditionExpression="upstream_ref = :r",
            ExpressionAttributeValues=_to_item({":r": upstream_ref(source, upstream_id)}),
            Limit=2,
        )
        items = resp.get("Items", [])
        if not items:
            return None
        # The index holds keys only as projected; read the authoritative record.
        return self.get(str(_from_item(items[0])["job_id"]))

    def definition_state(self, name: str) -> dict[str, Any]:
        resp = self._db.get_item(
            TableName=self._table, Key=_to_item({"pk": f"DEF#{name}"}), ConsistentRead=True
        )
        return _from_item(resp.get("Item", {}))

    def watermark(self, name: str) -> datetime | None:
        value = self.definition_state(name).get("watermark")
        return datetime.fromisoformat(str(value)) if value else None

    # ---- writes ------------------------------------------------------------------------------

    def create(self, job: Job, *, planned_from: datetime | None = None) -> CreateOutcome:
        """Record a new REQUESTED job and take its definition's lease, both or neither.

        For a job that moves the watermark, the definition's watermark must still be
        ``planned_from`` (absent when None): a window planned from a watermark that has moved since
        would overlap a delivered one.
        """
        now = self._now()
        values = self._job_values(job)
        values["claimed_at"] = now.isoformat()
        lease = "(attribute_not_exists(active_job) OR active_job = :j)"
        names: dict[str, Any] = {":j": job.job_id, ":now": now.isoformat()}
        if not job.moves_watermark:
            condition = lease
        elif planned_from is None:
            condition = f"{lease} AND attribute_not_exists(watermark)"
        else:
            condition = f"{lease} AND watermark = :w"
            names[":w"] = planned_from.isoformat()
        try:
            self._db.transact_write_items(
                TransactItems=[
                    {
                        "Put": {
                            "TableName": self._table,
                            "Item": _to_item(values),
                            "ConditionExpression": "attribute_not_exists(pk)",
                        }
                    },
                    {
                        "Update": {
                            "TableName": self._table,
                            "Key": _to_item({"pk": f"DEF#{job.definition_name}"}),
                            "UpdateExpression": "SET active_job = :j, active_since = :now",
                            "ConditionExpression": condition,
                            "ExpressionAttributeValues": _to_item(names),
                        }
                    },
                ]
            )
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "TransactionCanceledException":
                raise
            existing = self.find(job.job_id)
            if existing is not None:
                return CreateOutcome("exists", existing)
            active = self.definition_state(job.definition_name).get("active_job")
            if active and active != job.job_id:
                return CreateOutcome("busy", None, str(active))
            return CreateOutcome("stale")
        return CreateOutcome("created", job)

    def claim_stale(self, job_id: str) -> Job | None:
        """Take over a REQUESTED job whose starter died before creating the upstream export."""
        now = self._now()
        try:
            resp = self._db.update_item(
                TableName=self._table,
                Key=_to_item({"pk": f"JOB#{job_id}"}),
                UpdateExpression="SET claimed_at = :now",
                ConditionExpression="#s = :requested AND claimed_at < :stale",
                ExpressionAttributeNames={"#s": "status"},
                ExpressionAttributeValues=_to_item(
                    {
                        ":now": now.isoformat(),
                        ":requested": JobStatus.REQUESTED.value,
                        ":stale": (now - STALE_CLAIM).isoformat(),
                    }
                ),
                ReturnValues="ALL_NEW",
            )
        except ClientError as exc:
            if _conditional_failed(exc):
                return None
            raise
        return Job.model_validate(_from_item(resp["Attributes"]))

    def defer(self, job_id: str, not_before: datetime, updates: Mapping[str, Any]) -> Job:
        """Leave a REQUESTED job for :meth:`claim_stale` to take over, but not before ``not_before``.

        Its starter was refused for now (a rate limit, an outage): resuming earlier would only be
        refused again and spend the upstream's allowance.
        """
        claimed_at = not_before - STALE_CLAIM
        return self.update(job_id, JobStatus.REQUESTED, {**updates, "claimed_at": claimed_at.isoformat()})

    def claimable_at(self, job: Job) -> datetime:
        """When :meth:`claim_stale` may take the REQUESTED ``job`` over."""
        item = self._db.get_item(
            TableName=self._table, Key=_to_item({"pk": f"JOB#{job.job_id}"}), ConsistentRead=True
        ).get("Item", {})
        claimed = _from_item(item).get("claimed_at")
        return (datetime.fromisoformat(str(claimed)) if claimed else self._now() - STALE_CLAIM) + STALE_CLAIM

    def transition(
        self,
        job_id: str,
        target: JobStatus,
        *,
        reason: str | None = None,
        updates: Mapping[str, Any] | None = None,
    ) -> Job:
        """Move the job to ``target`` if its current status allows it; record the transition."""
        allowed = sources_of(target)
        if not allowed:
            raise TransitionError(job_id, None, target)
        now = self._now()
        reason = scrub(reason) if reason is not None else None
        entry = Transition(status=target, at=now, reason=reason).model_dump(mode="json", exclude_none=True)
        sets = {"status": target.value, "updated_at": now.isoformat(), **(updates or {})}
        if reason is not None:
            sets["reason"] = reason
        return self._update(
            job_id,
            sets,
            condition_statuses=allowed,
            append_history=entry,
            target=target,
            # once a delivery is committed (claim_commit), the only way on is DELIVERED
            uncommitted=target is not JobStatus.DELIVERED,
        )

    def take_copy(self, job_id: str, owner: str, until: datetime) -> Job:
        """Make ``owner`` the job's copy attempt (READY or COPYING → COPYING), recorded in the history.

        Refused (TransitionError) while another copy's invocation may still run (``copy_owner_until``
        not passed) or once the delivery is committed: two copies never write the same folder at once.
        """
        now = self._now()
        entry = Transition(status=JobStatus.COPYING, at=now).model_dump(mode="json", exclude_none=True)
        return self._update(
            job_id,
            {
                "status": JobStatus.COPYING.value,
                "updated_at": now.isoformat(),
                "copy_owner": owner,
                "copy_owner_until": until.isoformat(),
            },
            condition_statuses=[JobStatus.READY, JobStatus.COPYING],
            append_history=entry,
            target=JobStatus.COPYING,
            uncommitted=True,
            extra=(
                "(#s = :ready OR attribute_not_exists(copy_owner_until) OR copy_owner_until < :now"
                " OR copy_owner = :owner)",
                {":ready": JobStatus.READY.value, ":now": now.isoformat(), ":owner": owner},
            ),
        )

    def claim_commit(self, job_id: str, owner: str, intent: Mapping[str, Any], files: list[Any]) -> Job:
        """Decide the delivery: record the manifest's content on the job, if ``owner`` still holds the
        copy and nothing has ended the job. From here on no failure can end it (see :meth:`transition`)."""
        return self._update(
            job_id,
            {"updated_at": self._now().isoformat(), "commit": dict(intent), "files": files},
            condition_statuses=[JobStatus.COPYING],
            append_history=None,
            target=JobStatus.DELIVERED,
            where={"copy_owner": owner},
            uncommitted=True,
        )

    def update(
        self,
        job_id: str,
        expected: JobStatus | Collection[JobStatus],
        updates: Mapping[str, Any],
        *,
        where: Mapping[str, Any] | None = None,
    ) -> Job:
        """Change attributes (not the status) of a job that is still in ``expected`` and, if given,
        whose attributes still equal ``where`` (e.g. the same upstream export)."""
        statuses = [expected] if isinstance(expected, JobStatus) else list(expected)
        sets = {"updated_at": self._now().isoformat(), **updates}
        return self._update(
            job_id, sets, condition_statuses=statuses, append_history=None, target=statuses[0], where=where
        )

    def forget_failed_attempts(self, name: str) -> None:
        """An operator's retry: the definition's current window may be tried again from attempt 1, in
        a new retry generation (:meth:`retry_generation`), so its new attempts get new job ids."""
        self._db.update_item(
            TableName=self._table,
            Key=_to_item({"pk": f"DEF#{name}"}),
            UpdateExpression="REMOVE failed_start, failed_attempts ADD retry_generation :one",
            ExpressionAttributeValues=_to_item({":one": 1}),
        )

    def retry_generation(self, name: str) -> int:
        """How many operator retries the definition had (0: none)."""
        return int(self.definition_state(name).get("retry_generation", 0))

    def failed_attempts(self, name: str, start: datetime) -> int:
        """How many exports of the definition's window starting at ``start`` ended undelivered."""
        state = self.definition_state(name)
        return int(state.get("failed_attempts", 0)) if state.get("failed_start") == start.isoformat() else 0

    def settle(self, job: Job) -> None:
        """After a terminal status: advance the watermark (if delivered) or count the window's failed
        attempt (if not), and release the lease.

        Failed attempts are counted per window *start*: a scheduled definition's next tick plans the
        same start with a later end, and must still know how often that window has failed.
        """
        if job.status is not JobStatus.DELIVERED and job.moves_watermark:
            try:
                self._db.update_item(
                    TableName=self._table,
                    Key=_to_item({"pk": f"DEF#{job.definition_name}"}),
                    UpdateExpression="SET failed_start = :s, failed_attempts = :n",
                    # only forward: a late settle of an older window's job must not reset the count
                    ConditionExpression=(
                        "attribute_not_exists(failed_start) OR failed_start < :s"
                        " OR (failed_start = :s AND failed_attempts < :n)"
                    ),
                    ExpressionAttributeValues=_to_item(
                        {":s": job.window.start.isoformat(), ":n": job.attempt}
                    ),
                )
            except ClientError as exc:
                if not _conditional_failed(exc):
                    raise
        if job.status is JobStatus.DELIVERED and job.moves_watermark:
            end = job.window.end.isoformat()
            try:
                self._db.update_item(
                    TableName=self._table,
                    Key=_to_item({"pk": f"DEF#{job.definition_name}"}),
                    UpdateExpression="SET watermark = :end, watermark_job = :j",
                    ConditionExpression="attribute_not_exists(watermark) OR watermark < :end",
                    ExpressionAttributeValues=_to_item({":end": end, ":j": job.job_id}),
                )
            except ClientError as exc:
                if not _conditional_failed(exc):
                    raise
        self.release_lease(job.definition_name, job.job_id)

    def release_lease(self, definition_name: str, job_id: str) -> None:
        """Free the definition for its next export, if ``job_id`` still holds it."""
        try:
            self._db.update_item(
                TableName=self._table,
                Key=_to_item({"pk": f"DEF#{definition_name}"}),
                UpdateExpression="REMOVE active_job, active_since",
                ConditionExpression="active_job = :j",
                ExpressionAttributeValues=_to_item({":j": job_id}),
            )
        except ClientError as exc:
            if not _conditional_failed(exc):
                raise

    # ---- internals ---------------------------------------------------------------------------

    def _job_values(self, job: Job) -> dict[str, Any]:
        values = _scrubbed(job.model_dump(mode="json"))
        values["pk"] = f"JOB#{job.job_id}"
        values["expires_at"] = int((job.created_at + self._ttl).timestamp())
        if job.upstream_id:
            values["upstream_ref"] = upstream_ref(job.source, job.upstream_id)
        return values

    def _update(
        self,
        job_id: str,
        sets: dict[str, Any],
        *,
        condition_statuses: list[JobStatus],
        append_history: dict[str, Any] | None,
        target: JobStatus,
        where: Mapping[str, Any] | None = None,
        uncommitted: bool = False,
        extra: tuple[str, Mapping[str, Any]] | None = None,
    ) -> Job:
        names: dict[str, str] = {"#s": "status"}
        values: dict[str, Any] = dict(extra[1]) if extra else {}
        update = _set_clauses(_scrubbed(sets), append_history, names, values)
        condition = _condition(condition_statuses, where, uncommitted, extra, names, values)
        try:
            resp = self._db.update_item(
                TableName=self._table,
                Key=_to_item({"pk": f"JOB#{job_id}"}),
                UpdateExpression=update,
                ConditionExpression=condition,
                ExpressionAttributeNames=names,
                ExpressionAttributeValues={k: _ser.serialize(v) for k, v in values.items()},
                ReturnValues="ALL_NEW",
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except ClientError as exc:
            if not _conditional_failed(exc):
                raise
            old = exc.response.get("Item")
            if not old:
                raise JobNotFoundError(f"no job {job_id!r}") from exc
            previous = _from_item(old)
            current = previous.get("status")
            if uncommitted and previous.get("commit"):
                raise TransitionError(job_id, f"{current} (its delivery is committed)", target) from exc
            if where and current in {c.value for c in condition_statuses}:
                raise TransitionError(job_id, f"{current} (no longer {dict(where)})", target) from exc
            raise TransitionError(job_id, str(current), target) from exc
        return Job.model_validate(_from_item(resp["Attributes"]))


def _set_clauses(
    sets: Mapping[str, Any], history: dict[str, Any] | None, names: dict[str, str], values: dict[str, Any]
) -> str:
    """The update's ``SET`` expression: each attribute, and the history entry appended."""
    clauses: list[str] = []
    for i, (key, value) in enumerate(sets.items()):
        names[f"#a{i}"] = key
        values[f":a{i}"] = value
        clauses.append(f"#a{i} = :a{i}")
    if history is not None:
        names["#h"] = "history"
        values[":h"] = [history]
        values[":empty"] = []
        clauses.append("#h = list_append(if_not_exists(#h, :empty), :h)")
    return "SET " + ", ".join(clauses)


def _condition(
    statuses: list[JobStatus],
    where: Mapping[str, Any] | None,
    uncommitted: bool,
    extra: tuple[str, Mapping[str, Any]] | None,
    names: dict[str, str],
    values: dict[str, Any],
) -> str:
    """The update's condition: the job exists, is in one of ``statuses``, still has ``where``'s
    values, has no committed delivery (``uncommitted``), and meets ``extra``'s clause."""
    placeholders = []
    for i, status in enumerate(statuses):
        values[f":c{i}"] = status.value
        placeholders.append(f":c{i}")
    condition = f"attribute_exists(pk) AND #s IN ({', '.join(placeholders)})"
    for i, (key, value) in enumerate((where or {}).items()):
        names[f"#w{i}"] = key
        values[f":w{i}"] = value
        condition += f" AND #w{i} = :w{i}"
    if uncommitted:
        names["#commit"] = "commit"
        condition += " AND attribute_not_exists(#commit)"
    if extra:
        condition += f" AND {extra[0]}"
    return condition


__all__ = ["STALE_CLAIM", "TRANSITIONS", "CreateOutcome", "DynamoJobStore", "upstream_ref"]
