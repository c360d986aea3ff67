"""Queue metrics: depth by state, the oldest waiting job's age, outcomes, dead letters (ADR 0023).

Depths come from a sample of the jobs table every few seconds (``Tally._sample_queues``); outcomes
and run times from the workers as they settle each claim (``services.worker.JobObserver``).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from tally.observability.metrics import Metrics
from tally.services.job_run_ports import JobRun
from tally.services.queue_ports import Job, JobStatus, QueueDepth


class JobMetrics:
    """Implements ``services.worker.JobObserver``, and publishes sampled depths."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics
        self._known: set[tuple[str, str]] = set()

    def settled(self, job: Job, outcome: str, seconds: float) -> None:
        self._metrics.job_runs.labels(job.queue, outcome).inc()
        self._metrics.job_seconds.labels(job.queue).observe(seconds)
        if outcome == "dead":
            self._metrics.dead_lettered.labels(job.queue).inc()

    def depths(self, depths: Sequence[QueueDepth], now: datetime) -> None:
        seen: set[tuple[str, str]] = set()
        oldest: dict[str, float] = {}
        for depth in depths:
            seen.add((depth.queue, depth.status.value))
            self._metrics.queue_jobs.labels(depth.queue, depth.status.value).set(depth.count)
            if depth.status is JobStatus.READY and depth.oldest_run_at is not None:
                oldest[depth.queue] = max(0.0, (now - depth.oldest_run_at).total_seconds())
            if depth.status is JobStatus.READY:
                self._metrics.ready_jobs.labels(depth.queue).set(depth.count)
            if depth.status is JobStatus.DEAD:
                self._metrics.dead_jobs.labels(depth.queue).set(depth.count)
        for queue, status in self._known - seen:  # emptied since the last sample
            self._metrics.queue_jobs.labels(queue, status).set(0)
            if status == JobStatus.READY.value:
                self._metrics.ready_jobs.labels(queue).set(0)
            if status == JobStatus.DEAD.value:
                self._metrics.dead_jobs.labels(queue).set(0)
        for queue in {queue for queue, _ in self._known | seen}:
            self._metrics.oldest_ready_age.labels(queue).set(oldest.get(queue, 0.0))
        self._known = seen

    def reconciled(self, run: JobRun | None) -> None:
        """Publish the latest finished ``reconcile`` run (ADR 0033); nothing before the first one."""
        if run is None or run.result is None or run.finished_at is None:
            return
        unbalanced = run.result.get("unbalanced_currencies", [])
        self._metrics.reconcile_differences.labels("balance").set(run.result.get("difference_count", 0))
        self._metrics.reconcile_differences.labels("zero_sum").set(len(unbalanced))
        self._metrics.reconcile_last_run.set(run.finished_at.timestamp())
