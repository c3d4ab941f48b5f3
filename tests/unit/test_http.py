from __future__ import annotations

import pytest

from exportpipe.errors import UnsafeDownloadError
from exportpipe.http import _check_url, host_allowed


def test_allow_list_matches_hosts_and_subdomains() -> None:
    allowed = ("*.pardot.com", "storage.googleapis.com")
    assert host_allowed("pi.pardot.com", allowed)
    assert host_allowed("pardot.com", allowed)
    assert host_allowed("storage.googleapis.com", allowed)
    assert not host_allowed("evilpardot.com", allowed)
    assert not host_allowed("storage.googleapis.com.evil.io", allowed)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://pi.pardot.com/x", "plain HTTP is only allowed on loopback"),
        ("https://attacker.example/x", "not the API host and not in the allow-list"),
        ("file:///etc/passwd", r"is not http\(s\)"),
    ],
)
def test_unsafe_result_urls_are_refused(url: str, message: str) -> None:
    with pytest.raises(UnsafeDownloadError, match=message):
        _check_url(url, frozenset({"pi.pardot.com"}), ("*.salesforce.com",))


def test_api_host_and_loopback_are_fine() -> None:
    _check_url("https://pi.pardot.com/api/v5/exports/1/results/2", frozenset({"pi.pardot.com"}), ())
    _check_url("http://127.0.0.1:8080/x", frozenset({"127.0.0.1"}), ())


def test_messages_never_carry_signed_query_strings() -> None:
    from exportpipe.http import redact

    signed = "https://storage.example/exports/1.csv?X-Amz-Signature=secret&X-Amz-Credential=key"
    assert redact(signed) == "https://storage.example/exports/1.csv?…"
    with pytest.raises(UnsafeDownloadError) as info:
        _check_url("ftp://storage.example/x.csv?sig=secret", frozenset({"pi.pardot.com"}), ())
    assert "secret" not in str(info.value)
