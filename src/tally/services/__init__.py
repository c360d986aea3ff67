"""Use cases of the ledger and the ports (Protocols) they need from adapters."""
