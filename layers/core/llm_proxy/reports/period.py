"""A report's period: whole UTC days (rollups are daily), from a request or an event."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from llm_proxy.accounting.rollups import days
from llm_proxy.errors import INVALID_PERIOD, DomainError

# A period longer than this is a mistake, and one Query a day would make it slow.
MAX_DAYS = 366


@dataclass(frozen=True)
class Period:
    """Whole UTC days, `start` to `end`, both included (rollups are daily)."""

    start: date
    end: date

    @property
    def label(self) -> str:
        if self.start == self.end:
            return self.start.isoformat()
        return f"{self.start.isoformat()}_{self.end.isoformat()}"

    def days(self) -> list[str]:
        return [day.isoformat() for day in days(self.start, self.end)]


def yesterday(now: datetime | None = None) -> Period:
    day = (now or datetime.now(UTC)).date() - timedelta(days=1)
    return Period(day, day)


def last_hours(hours: int = 24, now: datetime | None = None) -> Period:
    """The days the last `hours` touch: with daily rollups, the last 24 hours are yesterday and
    today."""
    now = now or datetime.now(UTC)
    return Period((now - timedelta(hours=hours)).date(), now.date())


def _day(value: str, param: str) -> date:
    try:
        # A date, or a timestamp whose UTC day is meant.
        if len(value) > 10:
            moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
            if moment.tzinfo is not None:
                moment = moment.astimezone(UTC)
            return moment.date()
        return date.fromisoformat(value)
    except ValueError:
        raise DomainError(
            INVALID_PERIOD,
            f"'{param}' must be a date (YYYY-MM-DD) or an ISO 8601 timestamp.",
            param=param,
        ) from None


def parse_period(start: str | None, end: str | None, default: Period) -> Period:
    """A period from `start`/`end` (either may be left out: one day), or the default; a
    DomainError (invalid_period) naming the parameter when they are not one."""
    if not start and not end:
        return default
    first = _day(start or str(end), "start")
    last = _day(end or str(start), "end")
    if last < first:
        raise DomainError(INVALID_PERIOD, "'end' is before 'start'.", param="end")
    if (last - first).days + 1 > MAX_DAYS:
        raise DomainError(
            INVALID_PERIOD, f"The period is longer than {MAX_DAYS} days.", param="end"
        )
    return Period(first, last)
