"""Wire format of daily statements (``GET /v1/accounts/{id}/statements``, ADR 0033)."""

from __future__ import annotations

import datetime as dt

from pydantic import BaseModel, Field


class StatementOut(BaseModel):
    account_id: str
    currency: str
    date: dt.date = Field(description="The UTC day, YYYY-MM-DD.")
    opening_balance: int = Field(description="`posted` at the day's start (00:00 UTC).")
    closing_balance: int = Field(description="`posted` at the day's end.")
    debits: int = Field(description="The sum of the day's debit postings.")
    credits: int = Field(description="The sum of the day's credit postings.")
    postings: int = Field(description="How many postings the account had that day (0: a quiet day).")


class StatementPage(BaseModel):
    data: list[StatementOut]
    next_cursor: str | None
