"""Every batch job Tally knows, by name: ``tally jobs``, the scheduler and the tests look them up here.

A job is registered with one line: its name and a factory that builds it from the settings (batch
sizes come from ``TALLY_JOB_BATCH_SIZE``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from tally.jobs.balances_backfill import BackfillAccountBalances
from tally.jobs.holds import ExpireHolds
from tally.jobs.idempotency import PurgeIdempotencyKeys
from tally.jobs.reconcile import ReconcileJob
from tally.jobs.runs import BatchJob
from tally.jobs.statements import StatementsJob

if TYPE_CHECKING:
    from tally.config import Settings

JobFactory = Callable[["Settings"], BatchJob]

JOBS: dict[str, JobFactory] = {
    "expire-holds": lambda settings: ExpireHolds(min(settings.job_batch_size, 100)),
    "purge-idempotency-keys": lambda settings: PurgeIdempotencyKeys(settings.job_batch_size),
    "statements": lambda settings: StatementsJob(settings.job_batch_size),
    "reconcile": lambda settings: ReconcileJob(settings.job_batch_size),
    "backfill-account-balances": lambda settings: BackfillAccountBalances(settings.job_batch_size),
}


def build_job(name: str, settings: Settings) -> BatchJob:
    """The job registered as ``name``; ``KeyError`` naming the known jobs when there is none."""
    try:
        factory = JOBS[name]
    except KeyError:
        raise KeyError(f"No batch job {name!r}; the jobs are: {', '.join(sorted(JOBS))}.") from None
    return factory(settings)
