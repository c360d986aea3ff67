"""The PostgreSQL ceiling: Tally's transfer transaction as one stored-procedure call, from ``pgbench``.

``postgres_single`` gives a database Tally's head schema (``ensure_schema``, as the adapter does) if
it has none, opens a ledger of ``accounts`` credit-normal, unbounded accounts, and installs
``bench_transfer(ledger, debit_pk, credit_pk, amount, key)``: in one call, so in one transaction,
the rows one ``POST /v1/transfers`` writes on PostgreSQL, in the adapter's order: the idempotency
lookup (a key already stored writes nothing); both accounts with their balances, locked
``FOR NO KEY UPDATE`` in pk order; the time, read after the locks; the two balance updates; the
transfer; its two legs; its two entries; its ``transfer.created`` event (with the writing
transaction's id); the idempotency record holding the 201 reply. No business rule is checked.

Then the real ``pgbench`` runs it from ``clients`` connections (``-M prepared``) between two random
distinct accounts, each call under a fresh idempotency key, and logs every transaction (``-l``).
The ``Measured`` is built from that log: one latency per transaction (pgbench's own µs), a committed
call counts as ``"201"``, a failed one as ``"error failed"``. ``warmup`` seconds of transactions at
the start are run and left out. pgbench is a client: it runs as the current user, over TCP.
"""

from __future__ import annotations

import asyncio
import math
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from tally.bench.ceiling import CREATED, CURRENCY
from tally.bench.results import Measured, record
from tally.domain.ids import new_id
from tally.harness.postgres import pg_bin_dir
from tally.store.migrations import SCHEMA_LOCK, ensure_schema

THREADS = 2  # pgbench -j: its client threads, at most one per core of the machine it measures

# Every writing statement in the order Tally's adapter runs them (services.transfers, the
# repositories, services.idempotency); a debit lowers a credit-normal account and raises a
# debit-normal one. No '%' and no ':name' below: the text goes to the driver as it is.
BENCH_TRANSFER = """
CREATE OR REPLACE FUNCTION bench_transfer(
    p_ledger text, p_debit bigint, p_credit bigint, p_amount bigint, p_key text
) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    account record;
    debit_id text;
    debit_posted bigint;
    debit_version bigint;
    credit_id text;
    credit_posted bigint;
    credit_version bigint;
    currency text;
    now_micros bigint;
    at text;
    transfer_id text := 'tr_' || replace(gen_random_uuid()::text, '-', '');
    new_pk bigint;
    reply text;
BEGIN
    PERFORM set_config('statement_timeout', '30000', true);
    PERFORM * FROM idempotency_keys WHERE ledger_id = p_ledger AND key = p_key;
    IF FOUND THEN
        RETURN 0;
    END IF;
    FOR account IN
        SELECT a.*, b.posted, b.pending_debits, b.pending_credits, b.version,
               b.updated_at AS balance_updated_at
        FROM accounts AS a JOIN account_balances AS b ON b.account_pk = a.pk
        WHERE a.ledger_id = p_ledger AND a.pk IN (p_debit, p_credit)
        ORDER BY a.pk
        FOR NO KEY UPDATE
    LOOP
        currency := account.currency;
        IF account.pk = p_debit THEN
            debit_id := account.id;
            debit_posted := account.posted
                + CASE account.normal_balance WHEN 'debit' THEN p_amount ELSE -p_amount END;
            debit_version := account.version + 1;
        ELSE
            credit_id := account.id;
            credit_posted := account.posted
                + CASE account.normal_balance WHEN 'credit' THEN p_amount ELSE -p_amount END;
            credit_version := account.version + 1;
        END IF;
    END LOOP;
    IF debit_id IS NULL OR credit_id IS NULL THEN
        RAISE EXCEPTION USING
            MESSAGE = 'account ' || p_debit || ' or ' || p_credit || ' is not in ' || p_ledger;
    END IF;
    now_micros := (extract(epoch FROM clock_timestamp()) * 1000000)::bigint;
    UPDATE account_balances
        SET posted = debit_posted, pending_debits = 0, pending_credits = 0,
            version = debit_version, updated_at = now_micros
        WHERE account_pk = p_debit;
    UPDATE account_balances
        SET posted = credit_posted, pending_debits = 0, pending_credits = 0,
            version = credit_version, updated_at = now_micros
        WHERE account_pk = p_credit;
    INSERT INTO transfers (ledger_id, id, status, description, metadata, reverses_pk, reversed_amount,
                           held_amount, expires_at, request_hash, created_at, posted_at)
        VALUES (p_ledger, transfer_id, 'posted', NULL, '{}', NULL, 0, NULL, NULL,
                sha256(convert_to(p_key, 'UTF8')), now_micros, now_micros)
        RETURNING pk INTO new_pk;
    INSERT INTO transfer_legs (transfer_pk, position, account_pk, direction, amount)
        VALUES (new_pk, 0, p_debit, 'debit', p_amount),
               (new_pk, 1, p_credit, 'credit', p_amount);
    INSERT INTO entries (account_pk, transfer_pk, kind, direction, amount, posted_after,
                         pending_debits_after, pending_credits_after, account_version, created_at)
        VALUES (p_debit, new_pk, 'posting', 'debit', p_amount, debit_posted, 0, 0,
                debit_version, now_micros),
               (p_credit, new_pk, 'posting', 'credit', p_amount, credit_posted, 0, 0,
                credit_version, now_micros);
    -- The transfer as services.views.transfer_view shows it: the event's data and the 201 reply.
    at := to_char(to_timestamp(now_micros / 1000000.0) AT TIME ZONE 'UTC',
                  'YYYY-MM-DD"T"HH24:MI:SS.US"Z"');
    reply := json_build_object(
        'id', transfer_id, 'status', 'posted',
        'legs', json_build_array(
            json_build_object('account_id', debit_id, 'direction', 'debit', 'amount', p_amount,
                              'currency', currency),
            json_build_object('account_id', credit_id, 'direction', 'credit', 'amount', p_amount,
                              'currency', currency)),
        'debit_account_id', debit_id, 'credit_account_id', credit_id, 'amount', p_amount,
        'currency', currency, 'description', NULL, 'metadata', '{}'::json, 'reverses', NULL,
        'reversed_amount', 0, 'held_amount', NULL, 'expires_at', NULL, 'created_at', at,
        'posted_at', at)::text;
    INSERT INTO events (id, ledger_id, type, data, request_id, created_at, xid)
        VALUES ('evt_' || replace(gen_random_uuid()::text, '-', ''), p_ledger, 'transfer.created',
                reply, 'req_' || replace(gen_random_uuid()::text, '-', ''), now_micros,
                pg_current_xact_id()::text::bigint);
    INSERT INTO idempotency_keys (ledger_id, key, fingerprint, status, body, created_at, keep_until)
        VALUES (p_ledger, p_key, sha256(convert_to(p_key || '!', 'UTF8')), 201,
                convert_to(reply, 'UTF8'), now_micros, now_micros + 86400000000);
    RETURN new_pk;
END
$$
"""

# pgbench's script: two distinct random accounts of the ledger's pk range, and a fresh key per call
# (one of 9e18: two calls of a run share one with a chance under 1e-6).
SCRIPT = """\\set debit random({first}, {last})
\\set credit random({first}, {last} - 1)
\\if :credit >= :debit
\\set credit :credit + 1
\\endif
\\set amount random(1, 1000)
\\set key random(1, 9000000000000000000)
SELECT bench_transfer('{ledger}', :debit, :credit, :amount, CAST(:key AS text));
"""


class PgbenchFailed(RuntimeError):
    """pgbench could not run, or exited with an error; the message holds its output."""


@dataclass(frozen=True)
class BenchLedger:
    """The ledger ``bench_transfer`` is run on, and its accounts' pks (one range, no gap)."""

    id: str
    first_pk: int
    last_pk: int


async def prepare(url: str, accounts: int) -> BenchLedger:
    """The head schema where missing, a new ledger with ``accounts`` accounts, ``bench_transfer``."""
    engine = create_async_engine(url, poolclass=NullPool)
    ledger = new_id("led")
    now = time.time_ns() // 1000
    try:
        async with engine.begin() as conn:
            await conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": SCHEMA_LOCK})
            await conn.run_sync(ensure_schema)
            await conn.exec_driver_sql(BENCH_TRANSFER)
            values = {"ledger": ledger, "now": now, "count": accounts, "currency": CURRENCY}
            await conn.execute(
                text("INSERT INTO ledgers (id, name, created_at) VALUES (:ledger, 'ceiling', :now)"), values
            )
            # One statement: its pks come from the sequence in one run, unless another session
            # draws from it meanwhile, which the check below refuses.
            await conn.execute(
                text(
                    "INSERT INTO accounts (ledger_id, id, name, currency, normal_balance, min_balance,"
                    " max_balance, status, metadata, request_hash, created_at, updated_at)"
                    " SELECT :ledger, 'a' || lpad(n::text, 5, '0'), NULL, :currency, 'credit', NULL, NULL,"
                    " 'open', '{}', sha256(convert_to('a' || n, 'UTF8')), :now, :now"
                    " FROM generate_series(0, :count - 1) AS n ORDER BY n"
                ),
                values,
            )
            await conn.execute(
                text(
                    "INSERT INTO account_balances (account_pk, posted, pending_debits, pending_credits,"
                    " version, updated_at)"
                    " SELECT pk, 0, 0, 0, 0, :now FROM accounts WHERE ledger_id = :ledger"
                ),
                values,
            )
            query = text("SELECT min(pk), max(pk), count(*) FROM accounts WHERE ledger_id = :ledger")
            first, last, count = (await conn.execute(query, values)).one()
    finally:
        await engine.dispose()
    if count != accounts or last - first + 1 != count:
        raise PgbenchFailed(f"the ledger's {count} accounts do not hold pks {first} to {last} alone")
    return BenchLedger(ledger, first, last)


async def postgres_single(
    url: str, accounts: int, clients: int = 8, seconds: float = 10.0, *, warmup: float = 0.0
) -> Measured:
    """The single-transfer ceiling of the PostgreSQL database at ``url`` (a SQLAlchemy URL)."""
    if accounts < 2:
        raise ValueError("a transfer needs two accounts")
    ledger = await prepare(url, accounts)
    with tempfile.TemporaryDirectory(prefix="tally-pgbench-") as directory:
        script = Path(directory) / "transfer.sql"
        source = SCRIPT.format(first=ledger.first_pk, last=ledger.last_pk, ledger=ledger.id)
        await asyncio.to_thread(script.write_text, source)
        prefix = Path(directory) / "transactions"
        await _run_pgbench(url, script, prefix, clients, math.ceil(warmup + seconds))
        lines = await asyncio.to_thread(_log_lines, prefix)
    measured = Measured("ceiling-single", "postgresql", "closed", clients, seconds)
    return measured_from_log(lines, measured, warmup)


def measured_from_log(lines: list[str], measured: Measured, warmup: float) -> Measured:
    """Fill ``measured`` from pgbench's per-transaction log lines, leaving out the first ``warmup`` s.

    A line reads ``client_id transaction_no time script_no time_epoch time_us [...]``: ``time`` is
    the transaction's latency in µs (or ``failed``, ``skipped``), and ``time_epoch``.``time_us`` the
    instant it ended. ``seconds`` becomes the span from the first kept start to the last end.
    """
    ended: list[tuple[float, str]] = []
    for line in lines:
        fields = line.split()
        ended.append((int(fields[4]) + int(fields[5]) / 1_000_000, fields[2]))
    if not ended:
        measured.seconds = 0.0
        return measured
    started = min(end - (int(latency) / 1_000_000 if latency.isdigit() else 0) for end, latency in ended)
    kept_from = started + warmup
    last_end = kept_from
    for end, latency in ended:
        begun = end - (int(latency) / 1_000_000 if latency.isdigit() else 0)
        if begun < kept_from:
            continue
        last_end = max(last_end, end)
        if latency.isdigit():
            record(measured.histogram, int(latency) / 1_000_000)
            measured.statuses[CREATED] += 1
        else:
            measured.statuses[f"error {latency}"] += 1
    measured.seconds = last_end - kept_from
    return measured


async def _run_pgbench(url: str, script: Path, prefix: Path, clients: int, seconds: int) -> None:
    target = make_url(url)
    command = [pgbench_binary(), "-n", "-M", "prepared", "-c", str(clients), "-j", str(min(THREADS, clients))]
    command += ["-T", str(max(seconds, 1)), "-f", str(script), "-l", f"--log-prefix={prefix}"]
    command += ["-h", target.host or "127.0.0.1", "-p", str(target.port or 5432)]
    command += ["-U", target.username or "postgres", target.database or "postgres"]
    # PG* variables would override the target given above; a password travels the libpq way.
    env = {name: value for name, value in os.environ.items() if not name.startswith("PG")}
    if target.password:
        env["PGPASSWORD"] = target.password
    process = await asyncio.create_subprocess_exec(
        *command,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
        cwd=prefix.parent,
    )
    out, err = await process.communicate()
    if process.returncode != 0:
        raise PgbenchFailed(
            f"{' '.join(command)} exited with {process.returncode}\n{out.decode()}{err.decode()}"
        )


def _log_lines(prefix: Path) -> list[str]:
    """Every thread's log: ``prefix.PID`` for the first, ``prefix.PID.N`` for the others."""
    logs = prefix.parent.glob(f"{prefix.name}.*")
    return [line for log in logs for line in log.read_text().splitlines()]


def pgbench_binary() -> str:
    """pgbench next to the server binaries the harness uses, else the one on PATH."""
    bin_dir = pg_bin_dir()
    if bin_dir is not None and (bin_dir / "pgbench").exists():
        return str(bin_dir / "pgbench")
    found = shutil.which("pgbench")
    if found is None:
        raise PgbenchFailed("pgbench not found (install postgresql-client-15)")
    return found
