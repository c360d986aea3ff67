"""What one run of ``tally bench`` is asked to do (the command line's options, checked)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

DATABASES = ("sqlite", "postgresql")
SCENARIOS = ("single", "hot", "batch", "reads", "mix")


@dataclass(frozen=True)
class BenchOptions:
    """Durations in seconds; ``clients`` is the closed loops' concurrency except ``hot`` and
    ``batch``, which have their own; ``rate`` is the open loop's requests per second."""

    out: Path
    databases: tuple[str, ...] = DATABASES
    scenarios: tuple[str, ...] = SCENARIOS
    seconds: float = 10.0
    warmup: float = 2.0
    accounts: int = 10_000
    hot_accounts: int = 10
    clients: int = 16
    hot_clients: int = 32
    batch_clients: int = 2
    batch_size: int = 1000
    rate: float = 1000.0
    workers: int = 1
    settings: tuple[tuple[str, str], ...] = ()  # TALLY_* settings given to the servers (--set)

    def __post_init__(self) -> None:
        unknown = [name for name in self.databases if name not in DATABASES]
        unknown += [name for name in self.scenarios if name not in SCENARIOS]
        if unknown:
            raise ValueError(f"unknown database or scenario: {', '.join(unknown)}")
        if self.seconds <= 0 or self.warmup < 0 or self.rate <= 0:
            raise ValueError("seconds and rate must be above 0, warmup at least 0")
        if min(self.clients, self.hot_clients, self.batch_clients, self.workers) < 1:
            raise ValueError("clients and workers must be at least 1")
        if not 2 <= self.hot_accounts <= self.accounts:
            raise ValueError("hot accounts must be at least 2 and at most the accounts")
        if not 1 <= self.batch_size <= 1000:
            raise ValueError("a batch holds 1 to 1000 transfers")
        if any(not name.startswith("TALLY_") for name, _ in self.settings):
            raise ValueError("--set takes TALLY_* settings: NAME=VALUE")

    def as_json(self) -> dict[str, Any]:
        return {**asdict(self), "out": str(self.out), "settings": dict(self.settings)}
