"""What `/metrics` reads of the job queue, in one aggregate query: jobs per kind and state, and the
run time of the jobs that ended (first start to end, retries included) as histogram buckets.

The database is the source of truth: jobs run in other processes and on other machines, so no
server's memory could count them. One GROUP BY over the jobs table per scrape, no rows fetched.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import case, extract, func, select
from sqlalchemy.orm import Session

from openmaas.jobs.tables import Job

DURATION_BOUNDS = (1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600, 86400)


@dataclass(frozen=True)
class JobStats:
    kind: str
    status: str
    jobs: int
    # Of those with a run time (started, then ended): how many, at or below each bound, and the sum.
    timed: int
    timed_at_or_below: tuple[int, ...]
    seconds: float


def job_stats(session: Session, bounds: tuple[float, ...] = DURATION_BOUNDS) -> list[JobStats]:
    seconds = _seconds(session)
    columns = [func.count(seconds), func.coalesce(func.sum(seconds), 0.0)]
    columns += [func.sum(case((seconds <= bound, 1), else_=0)) for bound in bounds]
    query = select(Job.kind, Job.status, func.count(), *columns).group_by(Job.kind, Job.status)
    out = []
    for kind, status, jobs, timed, total, *buckets in session.execute(query):
        at_or_below = tuple(int(b or 0) for b in buckets)
        out.append(JobStats(kind, status, int(jobs), int(timed), at_or_below, float(total)))
    return out


def _seconds(session: Session) -> Any:
    """A job's run time in seconds (NULL unless it started and ended), in the database's dialect."""
    if session.get_bind().dialect.name == "sqlite":  # timestamps are text; julianday reads them
        return (func.julianday(Job.finished_at) - func.julianday(Job.started_at)) * 86400.0
    return extract("epoch", Job.finished_at - Job.started_at)
