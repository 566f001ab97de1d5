"""Due-time rules of schedules (``services/cron.py``) and relative windows (``services/schedules.py``)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from src.core.errors import ValidationFailedError
from src.core.pipeline.variables import Window
from src.core.services.cron import check_cron, check_timezone, first_due_at_or_after, latest_due, next_due
from src.core.services.scheduler import due_key
from src.core.services.schedules import relative_window, run_parameters

NEW_YORK = ZoneInfo("America/New_York")


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


def dues(expression: str, zone: ZoneInfo, after: datetime, count: int) -> list[datetime]:
    found = []
    for _ in range(count):
        after = next_due(expression, zone, after)
        found.append(after)
    return found


def test_a_time_in_the_spring_forward_gap_runs_once_that_day_and_is_never_skipped_for_good() -> None:
    # 2026-03-08: New York clocks jump from 02:00 EST to 03:00 EDT; 02:30 does not exist that day.
    times = dues("30 2 * * *", NEW_YORK, utc(2026, 3, 7, 12), 3)
    assert times == [utc(2026, 3, 8, 7, 30), utc(2026, 3, 9, 6, 30), utc(2026, 3, 10, 6, 30)]
    assert times[0].astimezone(NEW_YORK).strftime("%H:%M %Z") == "03:30 EDT"  # shifted by the gap, once
    assert [t.astimezone(NEW_YORK).strftime("%H:%M") for t in times[1:]] == ["02:30", "02:30"]
    # Asked from inside the gap day, after the shifted run: the next one is the next day, not again.
    assert next_due("30 2 * * *", NEW_YORK, utc(2026, 3, 8, 7, 30)) == utc(2026, 3, 9, 6, 30)


def test_a_time_in_the_repeated_fall_back_hour_runs_once() -> None:
    # 2026-11-01: 01:00-01:59 happens twice in New York (EDT, then EST).
    times = dues("30 1 * * *", NEW_YORK, utc(2026, 10, 31, 12), 3)
    assert times == [utc(2026, 11, 1, 5, 30), utc(2026, 11, 2, 6, 30), utc(2026, 11, 3, 6, 30)]
    # Asked during the second 01:30 (EST), the run of that day is already behind: tomorrow.
    assert next_due("30 1 * * *", NEW_YORK, utc(2026, 11, 1, 6, 0)) == utc(2026, 11, 2, 6, 30)


def test_due_times_always_move_forward_across_both_transitions() -> None:
    for start in (utc(2026, 3, 8, 5), utc(2026, 11, 1, 4)):
        times = dues("*/15 * * * *", NEW_YORK, start, 24)
        assert all(b > a for a, b in zip(times, times[1:], strict=False))
        assert len(set(times)) == len(times)


def test_every_day_of_a_year_has_exactly_one_run_in_new_york() -> None:
    times = dues("30 2 * * *", NEW_YORK, utc(2026, 1, 1, 12), 365)
    local_days = [t.astimezone(NEW_YORK).date() for t in times]
    assert local_days == [date(2026, 1, 2) + timedelta(days=i) for i in range(365)]


def test_catch_up_takes_the_latest_missed_due_time_once() -> None:
    utc_zone = check_timezone("UTC")
    seen = utc(2026, 11, 24, 6)  # missed 24th, 25th, 26th and 27th
    now = utc(2026, 11, 27, 9, 15)
    assert latest_due("0 6 * * *", utc_zone, seen=seen, now=now) == utc(2026, 11, 27, 6)
    assert next_due("0 6 * * *", utc_zone, now) == utc(2026, 11, 28, 6)
    assert latest_due("0 6 * * *", utc_zone, seen=utc(2026, 11, 27, 6), now=now) == utc(2026, 11, 27, 6)
    assert latest_due("* * * * *", utc_zone, seen=utc(2026, 11, 27, 9), now=utc(2026, 11, 27, 9, 15, 20)) == utc(
        2026, 11, 27, 9, 15
    )


def test_first_due_time_is_at_or_after_the_start() -> None:
    assert first_due_at_or_after("0 6 * * *", ZoneInfo("UTC"), utc(2026, 11, 27, 6)) == utc(2026, 11, 27, 6)
    assert first_due_at_or_after("0 6 * * *", ZoneInfo("UTC"), utc(2026, 11, 27, 6, 0, 1)) == utc(2026, 11, 28, 6)
    berlin = first_due_at_or_after("0 6 * * *", ZoneInfo("Europe/Berlin"), utc(2026, 11, 27))
    assert berlin == utc(2026, 11, 27, 5)


@pytest.mark.parametrize(
    "expression",
    ["", "* * * *", "* * * * * *", "61 * * * *", "* 24 * * *", "0 0 30 2 *", "@daily", "every day"],
)
def test_bad_cron_expressions_are_refused(expression: str) -> None:
    with pytest.raises(ValidationFailedError) as info:
        check_cron(expression)
    assert info.value.status_code == 422


def test_cron_spacing_is_normalized() -> None:
    assert check_cron(" 0   6 * *  1-5 ") == "0 6 * * 1-5"


@pytest.mark.parametrize("name", ["Mars/Olympus", "", " UTC", "../etc/passwd", "/etc/localtime", "Europe/"])
def test_bad_time_zones_are_refused(name: str) -> None:
    with pytest.raises(ValidationFailedError):
        check_timezone(name)


def test_relative_windows_end_the_day_before_the_due_date() -> None:
    assert relative_window("yesterday", date(2026, 3, 1)) == Window(date(2026, 2, 28), date(2026, 2, 28))
    assert relative_window("last_3_days", date(2026, 3, 1)) == Window(date(2026, 2, 26), date(2026, 2, 28))
    for bad in ("today", "last_0_days", "last_3_day", "last_-1_days", "LAST_3_DAYS"):
        with pytest.raises(ValidationFailedError):
            relative_window(bad, date(2026, 3, 1))


def test_the_window_is_resolved_from_the_due_time_in_utc() -> None:
    # 23:30 in New York on the 1st is 04:30 UTC on the 2nd: "yesterday" is the 1st (UTC).
    due = datetime(2026, 11, 1, 23, 30, tzinfo=NEW_YORK)
    params = run_parameters({"window": "yesterday", "label": "x"}, due)
    assert params == {"label": "x", "start_date": "2026-11-01", "end_date": "2026-11-01"}
    assert run_parameters({}, due) == {}


def test_due_keys_are_the_same_for_the_same_due_time_everywhere() -> None:
    a = due_key("sch_1", utc(2026, 11, 27, 6))
    assert a == due_key("sch_1", datetime(2026, 11, 27, 7, tzinfo=ZoneInfo("Europe/Berlin")))
    assert a != due_key("sch_1", utc(2026, 11, 28, 6)) and a != due_key("sch_2", utc(2026, 11, 27, 6))
