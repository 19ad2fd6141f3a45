"""When a job fires: 5-field cron expressions (cronsim) or fixed intervals, read in an IANA time
zone (zoneinfo), limited to active hours that may wrap past midnight.

Everything here is pure: times are epoch seconds passed in by the caller (the scheduler's clock),
so tests drive it across daylight-saving changes without waiting for them. Across a change, cron
expressions behave as cron does: a time skipped by a spring-forward runs at the first minute after
the gap, and a time repeated by a fall-back runs once (its first occurrence); hourly and
minute-level expressions keep running through both. Intervals are exact elapsed seconds.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from datetime import time as dtime
from pathlib import Path
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

from spacebot.errors import SpacebotError
from spacebot.ipc import ids
from spacebot.ipc.messages import CronJob, CronJobSpec

if TYPE_CHECKING:
    from spacebot.config import CronJobConfig

JOB_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
"""The job id rule (it becomes part of ``cron:<job>.<run>`` conversation ids)."""
MIN_EVERY = 60.0
"""Shortest interval: a job is a model call; more often than once a minute is a mistake."""
MAX_PROMPT = 8000
"""Longest prompt, in characters."""
SEARCH_LIMIT = 50_000
"""Cron times examined for one that falls within active hours before the job is called never-firing
(a minutely job needs 1,440 per day; this covers a month)."""
_HOURS = re.compile(r"\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*")


class CronSpecError(SpacebotError, ValueError):
    """A job definition that cannot be scheduled; the message names the field and the problem."""


@dataclass(frozen=True, slots=True)
class ActiveHours:
    """A daily window of wall-clock time; ``end`` before ``start`` wraps past midnight."""

    start: dtime
    end: dtime

    @property
    def wraps(self) -> bool:
        return self.end < self.start

    def contains(self, local: datetime) -> bool:
        """Whether the wall-clock time of ``local`` is inside the window (start inclusive)."""
        t = local.time().replace(tzinfo=None)
        if self.wraps:
            return t >= self.start or t < self.end
        return self.start <= t < self.end

    def next_start(self, local: datetime, zone: tzinfo) -> datetime:
        """The first moment at or after ``local`` that is inside the window."""
        if self.contains(local):
            return local
        day = local.date()
        candidate = datetime.combine(day, self.start, tzinfo=zone)
        if candidate < local:
            candidate = datetime.combine(day + timedelta(days=1), self.start, tzinfo=zone)
        return candidate


def parse_active_hours(text: str) -> ActiveHours | None:
    """``"09:00-17:30"`` → :class:`ActiveHours`; empty → ``None`` (always active)."""
    if not text.strip():
        return None
    match = _HOURS.fullmatch(text)
    if match is None:
        raise CronSpecError(f"active_hours {text!r}: expected HH:MM-HH:MM, e.g. 09:00-17:00 or 22:00-06:00")
    h1, m1, h2, m2 = (int(g) for g in match.groups())
    if h1 > 23 or h2 > 24 or m1 > 59 or m2 > 59 or (h2 == 24 and m2):
        raise CronSpecError(f"active_hours {text!r}: hours are 00-23 and minutes 00-59")
    start = dtime(h1, m1)
    end = dtime(0, 0) if h2 == 24 else dtime(h2, m2)
    if start == end:
        raise CronSpecError(f"active_hours {text!r}: the window is empty (leave it out for always)")
    return ActiveHours(start, end)


def host_zone() -> tzinfo:
    """The host's time zone: ``$TZ``, else what ``/etc/localtime`` names, else UTC."""
    name = os.environ.get("TZ", "").lstrip(":")
    if name:
        try:
            return ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            pass
    local = Path("/etc/localtime")
    try:
        target = str(local.resolve())
        if "zoneinfo/" in target:
            return ZoneInfo(target.split("zoneinfo/", 1)[1])
        with local.open("rb") as f:
            return ZoneInfo.from_file(f, key="localtime")
    except (OSError, ZoneInfoNotFoundError, ValueError):
        return UTC


def zone(name: str, default: str = "") -> tzinfo:
    """The job's zone: ``name``, else ``default`` (``[defaults] timezone``), else the host's."""
    for key in (name, default):
        if key:
            try:
                return ZoneInfo(key)
            except (ZoneInfoNotFoundError, ValueError):
                raise CronSpecError(
                    f"timezone {key!r} is not an IANA zone name (e.g. Europe/Berlin)"
                ) from None
    return host_zone()


@dataclass(frozen=True, slots=True)
class Schedule:
    """A parsed job schedule: one of ``cron`` and ``every``, a zone, optional active hours."""

    cron: str
    every: float
    zone: tzinfo
    active: ActiveHours | None

    def next_after(self, after: float, last: float | None = None) -> float | None:
        """The first fire time strictly after ``after`` (epoch seconds), or ``None`` if it never fires.

        An interval counts from ``last`` (the previous fire) when given, and from ``after``
        otherwise; a time outside the active hours moves to the start of the next window.
        """
        if self.cron:
            return self._next_cron(after)
        base = after if last is None else last
        nxt = base + self.every
        if nxt <= after:
            nxt = after + self.every  # missed fires are not made up one by one
        if self.active is None:
            return nxt
        local = datetime.fromtimestamp(nxt, self.zone)
        return self.active.next_start(local, self.zone).timestamp()

    def _next_cron(self, after: float) -> float | None:
        start = datetime.fromtimestamp(after, self.zone)
        it = CronSim(self.cron, start)
        for _ in range(SEARCH_LIMIT):
            try:
                fire = next(it)
            except StopIteration:
                return None
            if self.active is None or self.active.contains(fire):
                return fire.timestamp()
        return None


def parse(cron: str, every: float, timezone: str, active_hours: str, default_tz: str = "") -> Schedule:
    """Check and parse a schedule; raise :class:`CronSpecError` naming the field."""
    cron = cron.strip()
    if bool(cron) == bool(every):
        raise CronSpecError("give exactly one of cron (a 5-field expression) and every (seconds)")
    if cron:
        if len(cron.split()) != 5:
            raise CronSpecError(
                f"cron {cron!r}: expected 5 fields (minute hour day-of-month month day-of-week), "
                f"got {len(cron.split())}"
            )
        try:
            CronSim(cron, datetime(2000, 1, 1, tzinfo=UTC))
        except CronSimError as exc:
            raise CronSpecError(f"cron {cron!r}: {exc}") from None
    elif not MIN_EVERY <= every <= 366 * 86400:
        raise CronSpecError(f"every {every:g}: must be between {MIN_EVERY:g} seconds and a year")
    return Schedule(cron, float(every), zone(timezone, default_tz), parse_active_hours(active_hours))


def of(job: CronJob | CronJobSpec, default_tz: str = "") -> Schedule:
    """The schedule of a job."""
    return parse(job.cron, job.every, job.timezone, job.active_hours, default_tz)


def check_spec(spec: CronJobSpec, default_tz: str, now: float) -> Schedule:
    """Check a whole definition (id, prompt, schedule, target, timeout) and that it ever fires."""
    if not JOB_ID.fullmatch(spec.id):
        raise CronSpecError(f"job id {spec.id[:80]!r}: 1-64 of A-Z a-z 0-9 _ -")
    if not spec.prompt.strip():
        raise CronSpecError(f"job {spec.id!r}: the prompt is empty")
    if len(spec.prompt) > MAX_PROMPT:
        raise CronSpecError(
            f"job {spec.id!r}: the prompt has {len(spec.prompt)} characters (at most {MAX_PROMPT})"
        )
    if spec.deliver_to:
        try:
            target = ids.parse_conversation(spec.deliver_to)
        except ids.IdError as exc:
            raise CronSpecError(f"job {spec.id!r}: deliver_to: {exc}") from None
        if target.platform == "cron":
            raise CronSpecError(
                f"job {spec.id!r}: deliver_to {spec.deliver_to!r}: a cron conversation is not a target"
            )
    if spec.timeout < 0:
        raise CronSpecError(f"job {spec.id!r}: timeout must be >= 0 seconds")
    try:
        sched = of(spec, default_tz)
    except CronSpecError as exc:
        raise CronSpecError(f"job {spec.id!r}: {exc}") from None
    if sched.next_after(now) is None:
        raise CronSpecError(
            f"job {spec.id!r}: {spec.cron!r} never falls within active_hours {spec.active_hours!r}"
        )
    return sched


def spec_of(job: CronJob) -> CronJobSpec:
    """The definition part of a job."""
    return CronJobSpec(
        id=job.id,
        prompt=job.prompt,
        cron=job.cron,
        every=job.every,
        timezone=job.timezone,
        active_hours=job.active_hours,
        run_once=job.run_once,
        deliver_to=job.deliver_to,
        timeout=job.timeout,
    )


def same_timing(a: CronJob | CronJobSpec, b: CronJob | CronJobSpec) -> bool:
    """Whether two definitions fire at the same times (then a redefinition keeps the cursor)."""
    keys = ("cron", "every", "timezone", "active_hours", "run_once")
    return all(getattr(a, k) == getattr(b, k) for k in keys)


def spec_of_config(job: CronJobConfig) -> CronJobSpec:
    """The definition of a ``[[cron]]`` entry."""
    return CronJobSpec(
        id=job.id,
        prompt=job.prompt,
        cron=job.cron,
        every=job.every,
        timezone=job.timezone,
        active_hours=job.active_hours,
        run_once=job.run_once,
        deliver_to=job.deliver_to,
        timeout=job.timeout,
    )
