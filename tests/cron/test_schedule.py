"""Next-fire times with an injected clock: cron expressions and intervals across daylight-saving
changes in two time zones, active hours (wrapping past midnight), and the checks on definitions."""

from __future__ import annotations

import itertools
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from spacebot.cron import schedule
from spacebot.cron.schedule import CronSpecError
from spacebot.ipc.messages import CronJobSpec

BERLIN = ZoneInfo("Europe/Berlin")  # 2025: spring forward Mar 30 02:00→03:00, back Oct 26 03:00→02:00
NEW_YORK = ZoneInfo("America/New_York")  # 2025: spring forward Mar 9 02:00→03:00, back Nov 2 02:00→01:00


def at(zone: ZoneInfo, *parts: int, fold: int = 0) -> float:
    return datetime(*parts, tzinfo=zone, fold=fold).timestamp()  # type: ignore[misc]


def fires(sched: schedule.Schedule, start: float, n: int) -> list[datetime]:
    out: list[datetime] = []
    t: float | None = start
    last: float | None = None
    for _ in range(n):
        assert t is not None
        t = sched.next_after(t, last)
        assert t is not None
        last = t
        out.append(datetime.fromtimestamp(t, sched.zone))
    return out


def local(dts: list[datetime]) -> list[str]:
    return [d.strftime("%m-%d %H:%M %Z") for d in dts]


@pytest.mark.parametrize(
    ("zone", "day_before", "gap_day"),
    [("Europe/Berlin", (2025, 3, 29), "03-30"), ("America/New_York", (2025, 3, 8), "03-09")],
)
def test_a_daily_job_in_the_spring_forward_gap_runs_right_after_the_gap(
    zone: str, day_before: tuple[int, int, int], gap_day: str
) -> None:
    sched = schedule.parse("30 2 * * *", 0, zone, "")
    got = local(fires(sched, at(ZoneInfo(zone), *day_before, 12), 3))
    # 02:30 does not exist that night: it runs at 03:00, once; the next night at 02:30 again.
    assert got[0].startswith(f"{gap_day} 03:00")
    assert got[1].endswith("02:30 " + got[1].split()[-1]) and got[1][:5] != gap_day
    assert len(set(got)) == 3


@pytest.mark.parametrize(
    ("zone", "start", "summer", "winter"),
    [
        (BERLIN, (2025, 10, 25, 12), "CEST", "CET"),
        (NEW_YORK, (2025, 11, 1, 12), "EDT", "EST"),
    ],
)
def test_a_daily_job_in_the_repeated_hour_of_fall_back_runs_once(
    zone: ZoneInfo, start: tuple[int, ...], summer: str, winter: str
) -> None:
    sched = schedule.parse("30 1 * * *", 0, str(zone), "")
    got = fires(sched, at(zone, *start), 3)
    # 01:30 happens twice that night (New York) or is before the change (Berlin): one run a night.
    assert [d.day for d in got] == [got[0].day, got[0].day + 1, got[0].day + 2]
    assert got[0].tzname() in (summer, winter)
    gaps = {round(b.timestamp() - a.timestamp()) for a, b in itertools.pairwise(got)}
    assert gaps <= {86400, 90000, 82800}


def test_a_half_hourly_job_runs_through_both_copies_of_the_repeated_hour() -> None:
    sched = schedule.parse("*/30 * * * *", 0, "Europe/Berlin", "")
    got = fires(sched, at(BERLIN, 2025, 10, 26, 1, 45), 5)
    stamps = [d.timestamp() for d in got]
    assert all(b - a == 1800 for a, b in itertools.pairwise(stamps))  # no gap, no repeat
    assert local(got) == [
        "10-26 02:00 CEST",
        "10-26 02:30 CEST",
        "10-26 02:00 CET",
        "10-26 02:30 CET",
        "10-26 03:00 CET",
    ]


@pytest.mark.parametrize("zone", [BERLIN, NEW_YORK])
def test_an_interval_is_exact_elapsed_time_across_a_change(zone: ZoneInfo) -> None:
    sched = schedule.parse("", 3600, str(zone), "")
    start = at(zone, 2025, 3, 30 if zone is BERLIN else 9, 0, 15)
    got = [d.timestamp() for d in fires(sched, start, 6)]
    assert [round(b - a) for a, b in zip([start, *got], got, strict=False)] == [3600] * 6
    wall = [d.hour for d in fires(sched, start, 6)]
    assert 2 not in wall  # the skipped wall hour is never shown


def test_an_interval_that_was_missed_continues_from_now_not_from_the_backlog() -> None:
    sched = schedule.parse("", 600, "UTC", "")
    last = 1_000_000.0
    now = last + 10 * 3600  # down for ten hours
    assert sched.next_after(now, last) == now + 600
    assert sched.next_after(last + 30, last) == last + 600  # on time: the grid is kept


def test_cron_after_downtime_gives_the_next_time_after_now() -> None:
    sched = schedule.parse("0 9 * * *", 0, "Europe/Berlin", "")
    now = at(BERLIN, 2025, 6, 10, 15)
    assert datetime.fromtimestamp(sched.next_after(now) or 0, BERLIN) == datetime(
        2025, 6, 11, 9, tzinfo=BERLIN
    )


@pytest.mark.parametrize(("zone", "tzname"), [(BERLIN, "CET"), (NEW_YORK, "EST")])
def test_active_hours_wrapping_past_midnight(zone: ZoneInfo, tzname: str) -> None:
    sched = schedule.parse("0 * * * *", 0, str(zone), "22:00-02:00")
    got = fires(sched, at(zone, 2025, 1, 10, 12), 6)
    assert [d.hour for d in got] == [22, 23, 0, 1, 22, 23]
    assert {d.tzname() for d in got} == {tzname}


def test_an_interval_outside_active_hours_waits_for_the_window() -> None:
    sched = schedule.parse("", 3600, "America/New_York", "09:00-17:00")
    got = fires(sched, at(NEW_YORK, 2025, 5, 5, 15, 30), 4)
    assert local(got) == ["05-05 16:30 EDT", "05-06 09:00 EDT", "05-06 10:00 EDT", "05-06 11:00 EDT"]


def test_active_hours_are_read_in_the_job_zone_across_a_change() -> None:
    sched = schedule.parse("0 * * * *", 0, "Europe/Berlin", "08:00-09:00")
    got = fires(sched, at(BERLIN, 2025, 3, 29, 12), 2)
    assert local(got) == ["03-30 08:00 CEST", "03-31 08:00 CEST"]
    assert got[1].timestamp() - got[0].timestamp() == 86400


@pytest.mark.parametrize(
    ("hours", "inside", "outside"),
    [("09:00-17:00", [9, 12, 16], [8, 17, 23]), ("22:00-06:00", [22, 23, 0, 5], [6, 12, 21])],
)
def test_active_hours_contains(hours: str, inside: list[int], outside: list[int]) -> None:
    window = schedule.parse_active_hours(hours)
    assert window is not None
    assert all(window.contains(datetime(2025, 1, 1, h)) for h in inside)
    assert not any(window.contains(datetime(2025, 1, 1, h)) for h in outside)


@pytest.mark.parametrize(
    ("spec", "needle"),
    [
        (CronJobSpec(id="a", prompt="x", cron="* * * *"), "expected 5 fields"),
        (CronJobSpec(id="a", prompt="x", cron="61 * * * *"), "cron '61 * * * *'"),
        (CronJobSpec(id="a", prompt="x", cron="* * * * *", every=60), "exactly one"),
        (CronJobSpec(id="a", prompt="x", every=5), "between 60 seconds"),
        (CronJobSpec(id="a", prompt="x", every=60, timezone="Mars/Olympus"), "not an IANA zone"),
        (CronJobSpec(id="a", prompt="x", every=60, active_hours="9-5"), "HH:MM-HH:MM"),
        (CronJobSpec(id="a", prompt="x", every=60, active_hours="10:00-10:00"), "empty"),
        (CronJobSpec(id="a b", prompt="x", every=60), "job id"),
        (CronJobSpec(id="a", prompt=" ", every=60), "prompt is empty"),
        (CronJobSpec(id="a", prompt="x", every=60, deliver_to="web:a/b"), "deliver_to"),
        (CronJobSpec(id="a", prompt="x", every=60, deliver_to="cron:x"), "not a target"),
        (CronJobSpec(id="a", prompt="x", cron="0 3 * * *", active_hours="09:00-17:00"), "never falls"),
    ],
)
def test_bad_definitions_are_refused_naming_the_field(spec: CronJobSpec, needle: str) -> None:
    with pytest.raises(CronSpecError, match=None) as info:
        schedule.check_spec(spec, "", 1_750_000_000.0)
    assert needle in str(info.value)


def test_the_zone_falls_back_to_the_default_then_the_host() -> None:
    assert str(schedule.zone("", "Asia/Tokyo")) == "Asia/Tokyo"
    assert str(schedule.zone("Europe/Berlin", "Asia/Tokyo")) == "Europe/Berlin"
    assert schedule.zone("", "") is not None
