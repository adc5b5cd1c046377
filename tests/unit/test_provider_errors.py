from datetime import UTC, datetime
from email.utils import format_datetime

import pytest

from herald.sender.provider import PermanentError, TransientError, classify, retry_after_ms

CAP_MS = 60_000


def _response(code: int, retry_after: str | None = None) -> tuple[int, str, str | None]:
    return code, "why", retry_after


def _verdict(code: int) -> str:
    """What classify makes of an answer with this code: accepted, transient or permanent."""
    try:
        classify(*_response(code), CAP_MS)
    except TransientError:
        return "transient"
    except PermanentError:
        return "permanent"
    return "accepted"


@pytest.mark.parametrize("code", [200, 201, 202, 204, 299])
def test_2xx_is_accepted(code: int) -> None:
    assert _verdict(code) == "accepted"


def test_no_code_outside_2xx_is_accepted() -> None:
    accepted = [code for code in range(100, 600) if _verdict(code) == "accepted"]
    assert accepted == list(range(200, 300))


@pytest.mark.parametrize("code", [408, 429, 500, 502, 503, 504])
def test_timeouts_throttling_and_server_errors_are_transient(code: int) -> None:
    with pytest.raises(TransientError):
        classify(*_response(code), CAP_MS)


@pytest.mark.parametrize("code", [400, 401, 403, 404, 409, 410, 413, 422])
def test_other_4xx_are_permanent(code: int) -> None:
    with pytest.raises(PermanentError, match=f"HTTP {code}"):
        classify(*_response(code), CAP_MS)


def test_retry_after_seconds_is_honoured() -> None:
    with pytest.raises(TransientError) as caught:
        classify(*_response(429, "2"), CAP_MS)
    assert caught.value.retry_after_ms == 2000


def test_fractional_retry_after_is_honoured() -> None:
    assert retry_after_ms("0.25", CAP_MS) == 250


def test_retry_after_is_capped_by_max_backoff() -> None:
    assert retry_after_ms("3600", 5000) == 5000


def test_retry_after_http_date_is_relative_to_now() -> None:
    now = datetime(2030, 1, 1, 12, 0, 0, tzinfo=UTC)
    later = format_datetime(datetime(2030, 1, 1, 12, 0, 3, tzinfo=UTC), usegmt=True)
    assert retry_after_ms(later, CAP_MS, now=now.timestamp()) == 3000


def test_retry_after_in_the_past_means_now() -> None:
    assert retry_after_ms("Wed, 21 Oct 2015 07:28:00 GMT", CAP_MS) == 0


@pytest.mark.parametrize("value", [None, "", "soon", "-"])
def test_missing_or_garbled_retry_after_leaves_backoff_to_the_policy(value: str | None) -> None:
    assert retry_after_ms(value, CAP_MS) is None


@pytest.mark.parametrize("value", ["inf", "Infinity", "1e400", "nan", "NaN", "-inf", "-5", "-0.5"])
def test_a_retry_after_not_finite_and_non_negative_counts_as_absent(value: str) -> None:
    assert retry_after_ms(value, CAP_MS) is None


@pytest.mark.parametrize("value", ["inf", "nan"])
def test_a_non_finite_retry_after_is_still_a_transient_error(value: str) -> None:
    with pytest.raises(TransientError) as caught:
        classify(*_response(503, value), CAP_MS)
    assert caught.value.retry_after_ms is None


def test_an_absurd_but_finite_retry_after_is_capped() -> None:
    # 1e308 s is finite; in milliseconds it is not.
    assert retry_after_ms("1e308", CAP_MS) == CAP_MS


def test_zero_seconds_mean_now() -> None:
    assert retry_after_ms("0", CAP_MS) == 0


@pytest.mark.parametrize("code", [300, 301, 302, 303, 304, 307, 308])
def test_a_redirect_is_permanent(code: int) -> None:
    with pytest.raises(PermanentError, match=f"HTTP {code}"):
        classify(*_response(code), CAP_MS)
