"""Settings: the only module that reads the process environment, and only when asked (never at import).

Each value comes from an environment variable that ``template.yaml`` sets on the functions; the local
stack resolves the same template, so the names below and the template's ``Environment`` stay in step,
and each default and bound is the one of the template parameter that feeds it
(``tests/unit/test_template.py`` checks both).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from exportpipe.errors import ConfigurationError

NonEmpty = Annotated[str, Field(min_length=1)]
# Secrets Manager name characters, in "/"-separated segments, ending with "/" (never a bare "*" grant).
CONNECTION_PREFIX_PATTERN = r"^[A-Za-z0-9_+=.@-]+(/[A-Za-z0-9_+=.@-]+)*/$"


class Settings(BaseModel):
    """Runtime settings shared by the four functions."""

    model_config = ConfigDict(frozen=True, populate_by_name=True)

    state_table: NonEmpty = Field(alias="STATE_TABLE_NAME")
    results_bucket: NonEmpty = Field(alias="RESULTS_BUCKET")
    results_prefix: str = Field(default="exports", alias="RESULTS_PREFIX")
    event_bus: NonEmpty = Field(alias="EVENT_BUS_NAME")
    poll_state_machine_arn: str = Field(default="", alias="POLL_STATE_MACHINE_ARN")
    # start_export, for check_status / copy_result in executions of an earlier workflow definition
    # (services.delivery.hand_over_next_window)
    start_export_function: str = Field(default="", alias="START_EXPORT_FUNCTION")
    # Each source's connection secret, by the setting its spec names (every ``*_SECRET_ARN`` variable).
    secret_arns: dict[str, str] = Field(default_factory=dict)
    # Where the secrets of named connections are: ``<prefix><source>/<connection name>`` (the IAM grant
    # covers ``<prefix>*``, so the prefix ends with "/"); a definition that names no connection uses
    # its source's secret above.
    connection_secret_prefix: str = Field(
        default="exportpipe/",
        max_length=256,
        pattern=CONNECTION_PREFIX_PATTERN,
        alias="CONNECTION_SECRET_PREFIX",
    )
    # Hosts result downloads and their redirects may reach besides each source's own (comma-separated
    # host names; a leading "*." matches any subdomain). The upstream API host is always allowed.
    download_hosts: str = Field(default="", alias="DOWNLOAD_HOST_ALLOWLIST")
    poll_base_seconds: int = Field(default=30, ge=1, alias="POLL_BASE_SECONDS")
    poll_max_seconds: int = Field(default=900, ge=1, alias="POLL_MAX_SECONDS")
    # How long a job waits for its upstream export (created, polled, re-created) before it ends FAILED,
    # by elapsed time since the job was recorded (long enough for an upstream's own expiry: 7 days).
    poll_timeout_seconds: int = Field(default=604800, ge=60, le=604800, alias="POLL_TIMEOUT_SECONDS")
    # Refusals in a row (rate limits, outages on create) before the job ends FAILED.
    poll_max_attempts: int = Field(default=60, ge=1, alias="POLL_MAX_ATTEMPTS")
    job_ttl_days: int = Field(default=400, ge=1, alias="JOB_TTL_DAYS")
    # How often a failed upstream export is created again, and how often an export whose files
    # expired before the copy is re-exported, before the job ends FAILED / EXPIRED.
    max_recreates: int = Field(default=2, ge=0, alias="UPSTREAM_RECREATE_ATTEMPTS")
    # Wait after a refusal for a spent daily allowance before calling again.
    rate_limit_wait_seconds: int = Field(default=1800, ge=1, alias="RATE_LIMIT_WAIT_SECONDS")
    # First backoff of in-call retries of a concurrency refusal; doubles each time.
    upstream_backoff_seconds: float = Field(default=2.0, ge=0.01, alias="UPSTREAM_BACKOFF_SECONDS")
    http_timeout_seconds: float = Field(default=30.0, ge=1, alias="HTTP_TIMEOUT_SECONDS")
    # The copy holds up to 7 parts in memory: 64 MiB parts stay well inside copy_result's 1024 MB.
    part_size_mib: int = Field(default=16, ge=5, le=64, alias="COPY_PART_SIZE_MIB")

    @property
    def part_size(self) -> int:
        """The copy's multipart part size in bytes."""
        return self.part_size_mib * 1024 * 1024

    @property
    def allowed_download_hosts(self) -> tuple[str, ...]:
        return tuple(h.strip().lower() for h in self.download_hosts.split(",") if h.strip())


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Read and validate the settings; a missing or bad variable fails with its name and the reason."""
    env = os.environ if environ is None else environ
    secrets = {k: v for k, v in env.items() if k.endswith("_SECRET_ARN") and v}
    try:
        return Settings.model_validate({**env, "secret_arns": secrets})
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors(include_url=False)
        )
        raise ConfigurationError(f"bad configuration: {problems}") from exc
