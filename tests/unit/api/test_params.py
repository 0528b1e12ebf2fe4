"""The HTTP query parameter parsers: strict on digits, units and ranges, and never raising anything but BadRequest."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from multidict import MultiDict

from drop_explainer.api import params
from drop_explainer.api.params import BadRequest

NOW = 1_764_800_000.0
"""2025-12-03T22:13:20Z, a fixed clock for the relative forms."""


@pytest.mark.parametrize(("value", "expected_ns"), [
    pytest.param("2026-11-26T02:00:00Z", int(datetime(2026, 11, 26, 2, tzinfo=UTC).timestamp()) * 10**9, id="rfc3339"),
    pytest.param("2026-11-26t03:00:00+01:00", int(datetime(2026, 11, 26, 2, tzinfo=UTC).timestamp()) * 10**9,
                 id="rfc3339-offset-lowercase-t"),
    pytest.param("2026-11-26T02:00:00.123456789Z",
                 int(datetime(2026, 11, 26, 2, tzinfo=UTC).timestamp()) * 10**9 + 123456789, id="rfc3339-nanoseconds"),
    pytest.param("1764800000", 1_764_800_000 * 10**9, id="epoch-seconds"),
    pytest.param("1764800000.5", 1_764_800_000_500_000_000, id="epoch-seconds-fraction"),
    pytest.param("15m", int(NOW * 10**9) - 15 * 60 * 10**9, id="minutes-ago"),
    pytest.param("1.5h", int(NOW * 10**9) - 5400 * 10**9, id="fractional-hours-ago"),
    pytest.param("7d", int(NOW * 10**9) - 7 * 86400 * 10**9, id="days-ago"),
    pytest.param("1900-01-01T00:00:00Z", -2208988800 * 10**9, id="before-the-epoch-but-inside-int64"),
])
def test_documented_time_forms_are_read_exactly(value: str, expected_ns: int) -> None:
    """RFC 3339, epoch seconds and durations ago keep working, to the nanosecond (integer arithmetic)."""
    assert params.time_ns(value, "since", NOW) == expected_ns


@pytest.mark.parametrize(("value", "fragment"), [
    pytest.param("1764800000000", "looks like epoch milliseconds (that would be epoch seconds 1764800000)",
                 id="milliseconds"),
    pytest.param("1764800000000000", "looks like epoch microseconds", id="microseconds"),
    pytest.param("1764800000000000000", "looks like epoch nanoseconds", id="nanoseconds"),
    pytest.param("inf", "expected RFC 3339", id="inf"),
    pytest.param("nan", "expected RFC 3339", id="nan"),
    pytest.param("-inf", "expected RFC 3339", id="minus-inf"),
    pytest.param("1e9", "expected RFC 3339", id="exponent"),
    pytest.param("1_764_800_000", "expected RFC 3339", id="underscores"),
    pytest.param(" 1764800000", "expected RFC 3339", id="leading-space"),
    pytest.param("\u0661\u0667\u0666\u0664\u0668\u0660\u0660\u0660\u0660\u0660", "expected RFC 3339",
                 id="arabic-indic-digits"),
    pytest.param("\u00b2m", "expected RFC 3339", id="superscript-duration"),
    pytest.param("99999999999999999999d", "int64 nanoseconds", id="duration-before-1677"),
    pytest.param("9999-12-31T23:59:59Z", "int64 nanoseconds", id="after-2262"),
    pytest.param("2026-02-30T00:00:00Z", "not a valid date and time", id="february-30"),
    pytest.param("2026-11-26T02:00:00", "give a time zone", id="no-zone"),
    pytest.param("2026-11-26", "expected RFC 3339", id="date-only"),
    pytest.param("x" * 10_000, "too long", id="huge"),
    pytest.param("", "expected RFC 3339", id="empty"),
])
def test_odd_times_are_a_bad_request_with_the_reason(value: str, fragment: str) -> None:
    """Each odd form is refused with a reason (issue 12: inf and epoch milliseconds were 500s)."""
    with pytest.raises(BadRequest, match=r"^since=") as caught:
        params.time_ns(value, "since", NOW)
    assert fragment in str(caught.value)
    assert len(str(caught.value)) < 400


@pytest.mark.parametrize("value", ["\u00b2", "\u0665", "0", "501", "-1", "+5", "5.0", " 5", "1" * 5000, ""])
def test_limit_takes_ascii_digits_from_1_to_the_maximum(value: str) -> None:
    with pytest.raises(BadRequest, match=f"expected a whole number from 1 to {params.MAX_LIMIT}"):
        params.limit(value)


def test_limit_bounds_and_default() -> None:
    assert params.limit("1") == 1
    assert params.limit(str(params.MAX_LIMIT)) == params.MAX_LIMIT
    assert params.limit("007") == 7
    assert params.limit(None) == params.DEFAULT_LIMIT


def test_names_are_matched_whole_not_up_to_a_trailing_newline() -> None:
    """`$` in a Python regex matches before a final newline; names are matched with fullmatch."""
    for bad in ("pod-b\n", "backend\n"):
        with pytest.raises(BadRequest):
            params.object_name(bad)
        with pytest.raises(BadRequest):
            params.namespace(bad)


def test_scope_is_checked_and_a_repeated_parameter_refused() -> None:
    with pytest.raises(BadRequest, match="scope='galaxy'"):
        params.drop_filter({"scope": "galaxy"})
    with pytest.raises(BadRequest, match="more than once: limit"):
        params.drop_filter(MultiDict([("limit", "5"), ("limit", "6")]))
    with pytest.raises(BadRequest, match="unknown parameter"):
        params.drop_filter({"sinse": "15m"})


QUERY_KEYS = st.sampled_from(sorted(params.FILTERS | params.COMMON | {"namespace", "bogus"}))
ANY_TEXT = st.text(max_size=80) | st.sampled_from(["inf", "nan", "1764800000000", "15m", "2026-11-26T02:00:00Z",
                                                    "\u00b2", "1e400", "9" * 30, "backend/default-deny"])


@settings(max_examples=400, deadline=None)
@given(st.lists(st.tuples(QUERY_KEYS, ANY_TEXT), max_size=6), st.text(max_size=40))
def test_any_query_gives_a_filter_or_a_bad_request(pairs: list[tuple[str, str]], accept: str) -> None:
    """Any query string at all: a DropFilter inside int64 nanoseconds, or BadRequest; never another exception."""
    query = MultiDict(pairs)
    reason = None
    try:
        f = params.drop_filter(query, extra=frozenset({"namespace"}), now=NOW)
        params.wants_json(query, accept)
    except BadRequest as exc:
        reason = str(exc)
    if reason is not None:
        assert reason  # a 400 always says why
    else:
        for ns in (f.since_ns, f.until_ns):
            assert ns is None or params.INT64_MIN <= ns <= params.INT64_MAX
        assert 1 <= f.limit <= params.MAX_LIMIT
    assert isinstance(params.answers_json(query, accept), bool)


@settings(max_examples=400, deadline=None)
@given(ANY_TEXT)
def test_any_value_of_each_parser_gives_a_value_or_a_bad_request(value: str) -> None:
    for parse in (lambda v: params.time_ns(v, "until", NOW), params.limit, params.namespace, params.object_name,
                  params.policy_ref, lambda v: params.whole_number(v, "port", 1, params.MAX_PORT)):
        try:
            got = parse(value)
        except BadRequest as exc:
            got = exc
        assert isinstance(got, int | str | BadRequest)
