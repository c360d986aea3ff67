"""Pure rules of the ledger: money, accounts, transfers, keys and the errors. Standard library only."""
