"""Webhook receivers, one per source that announces completions by webhook, and the request body
handling they share.

A receiver verifies the request's signature over the exact bytes received, and maps a completion
event to (upstream id, result URLs). The webhook function looks the job up by upstream id (one index
query) and moves it to READY. No source has a receiver yet: Advocate's ``export.completed`` receiver
lands with the Advocate source; until then the route answers 404 naming the source, after the front
door and resolver have run.

A source declares its receiver as a factory on its spec (``SourceSpec.webhook``, a
:data:`ReceiverFactory`), found through the registry (``exportpipe.sources.registry.webhook_for``)
and called per request with the invocation's dependencies: ``deps.settings`` and ``deps.read_secret``
reach its connection's secret. What it keeps across invocations (a JWKS) is the factory's own
per-process cache, e.g. a module-level dict keyed by secret id. A test registers a stand-in source
the same way.

The body is read once, by the route (:func:`request_body`): the bytes API Gateway received, the
base64 it may carry checked strictly, at most :data:`MAX_BODY_BYTES`. A receiver that parses JSON
does it with :func:`parse_json_body` (strict UTF-8, bounded nesting). What cannot be read raises
:class:`MalformedWebhookError`, which the route answers with 400 (413 for a body over the limit).
"""

from __future__ import annotations

import binascii
import json
import re
from base64 import b64decode
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NoReturn, Protocol

from exportpipe.errors import InvalidEventError

if TYPE_CHECKING:
    from exportpipe.runtime import Deps

MAX_BODY_BYTES = 256 * 1024
"""The largest webhook body accepted (completion events are a few hundred bytes)."""

MAX_JSON_DEPTH = 32
"""The deepest nesting of arrays and objects :func:`parse_json_body` accepts."""


class MalformedWebhookError(InvalidEventError):
    """A webhook request that cannot be read (bad base64, not UTF-8, not JSON, too deep): answer 400."""


class WebhookTooLargeError(MalformedWebhookError):
    """A webhook body over :data:`MAX_BODY_BYTES`: answer 413."""


@dataclass(frozen=True)
class Completion:
    event_id: str
    upstream_id: str
    result_urls: list[str]


class WebhookReceiver(Protocol):
    source: str

    def verify(self, headers: Mapping[str, str], body: bytes) -> Completion | None:
        """The completion the request announces; None when the signature is missing or invalid.

        ``body`` is exactly what the sender signed. Raises :class:`MalformedWebhookError` for a
        correctly signed body that cannot be read.
        """


ReceiverFactory = Callable[["Deps"], WebhookReceiver]
"""A source's receiver, built from the invocation's dependencies (``SourceSpec.webhook``). The route
calls it only for a source that declares one; any other source answers 404."""


# Base64 of MAX_BODY_BYTES bytes, padded: a longer flagged body is refused before it is decoded.
_MAX_BASE64_CHARS = 4 * -(-MAX_BODY_BYTES // 3)


def _too_large() -> NoReturn:
    raise WebhookTooLargeError(f"body over the limit of {MAX_BODY_BYTES} bytes")


def request_body(body: str | None, *, base64_encoded: bool) -> bytes:
    """The bytes of an API Gateway proxy event's body (``body``, ``isBase64Encoded``).

    A body flagged base64 must be strict base64 (the RFC 4648 alphabet with its padding, nothing else);
    a text body is encoded back to the UTF-8 API Gateway received.
    """
    if not body:
        return b""
    if base64_encoded:
        if len(body) > _MAX_BASE64_CHARS:
            _too_large()
        try:
            raw = b64decode(body, validate=True)
        except (binascii.Error, ValueError) as exc:  # ValueError: a non-ASCII character
            raise MalformedWebhookError(f"body flagged base64 is not valid base64: {exc}") from exc
    else:
        if len(body) > MAX_BODY_BYTES:  # every character is at least one byte
            _too_large()
        try:
            raw = body.encode("utf-8")
        except UnicodeEncodeError as exc:  # a lone surrogate, from a \\udcxx escape in the event
            raise MalformedWebhookError(f"body is not UTF-8 text: {exc.reason} at {exc.start}") from exc
    if len(raw) > MAX_BODY_BYTES:
        _too_large()
    return raw


# Strings (skipped whole, escapes included) or one bracket; anything else is not matched.
_JSON_STRUCTURE = re.compile(r'"(?:[^"\\]++|\\.)*+"|[\[\]{}]')


def _check_depth(text: str, max_depth: int) -> None:
    depth = 0
    for match in _JSON_STRUCTURE.finditer(text):
        piece = match.group()
        if piece in "[{":
            depth += 1
            if depth > max_depth:
                raise MalformedWebhookError(f"JSON nested deeper than {max_depth} levels")
        elif piece in "]}":
            depth -= 1


def _refuse_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not JSON")


def parse_json_body(body: bytes, *, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """A webhook body parsed as JSON (RFC 8259): strict UTF-8, at most :data:`MAX_BODY_BYTES`, at
    most ``max_depth`` levels of nesting, no ``NaN``/``Infinity``.

    Raises :class:`MalformedWebhookError` (:class:`WebhookTooLargeError` for the size) instead of
    ``UnicodeDecodeError``, ``ValueError`` or ``RecursionError``.
    """
    if len(body) > MAX_BODY_BYTES:
        _too_large()
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MalformedWebhookError(f"body is not UTF-8: {exc.reason} at byte {exc.start}") from exc
    # Measured before parsing: the parser's own limit is the interpreter's recursion limit.
    _check_depth(text, max_depth)
    try:
        return json.loads(text, parse_constant=_refuse_constant)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError is a ValueError
        raise MalformedWebhookError(f"body is not JSON: {exc}") from exc
