from __future__ import annotations

import httpx

from tests.support import LedgerKeys, open_account, transfer


async def test_a_funded_account_can_pay_another(client: httpx.AsyncClient, ledger: LedgerKeys) -> None:
    world = await open_account(client, ledger.write, id="world", normal_balance="debit", min_balance=None)
    alice = await open_account(client, ledger.write, id="alice")
    assert (await transfer(client, ledger.write, world["id"], alice["id"], 500)).status_code == 201
    balance = (await client.get("/v1/accounts/alice/balance", headers=ledger.read)).json()
    assert balance["posted"] == 500
    assert balance["available"] == 500
