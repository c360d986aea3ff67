"""The wire format: request bodies (validated strictly) and response shapes (for the OpenAPI document).

Strictness is the contract (API.md): unknown fields are refused, amounts are JSON integers only
(no floats, strings, booleans, NaN or Infinity), ids and currency codes match their patterns.
Limits on sizes are part of the contract too and are listed in ``docs/limits.md``.
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

import orjson
from fastapi import Query
from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StringConstraints,
    field_validator,
    model_validator,
)

from tally.domain.accounts import AccountStatus, Direction, NormalBalance
from tally.domain.ids import CLIENT_ID_PATTERN
from tally.domain.keys import Scope
from tally.domain.money import CURRENCY_PATTERN, INT64_MAX, INT64_MIN, MAX_AMOUNT

MAX_METADATA_BYTES = 8 * 1024
MAX_METADATA_DEPTH = 5
MAX_LEGS = 64
MAX_BATCH = 1000

Amount = Annotated[int, Field(strict=True, ge=1, le=MAX_AMOUNT, examples=[1500])]
Int64 = Annotated[int, Field(strict=True, ge=INT64_MIN, le=INT64_MAX)]
ClientId = Annotated[str, StringConstraints(strict=True, pattern=CLIENT_ID_PATTERN)]
Limit = Annotated[int, Query(ge=1, le=1000)]  # the page size of every list
# A `next_cursor` of a list (27 characters at most today); anything else is 422 `Unknown cursor.`
Cursor = Annotated[str | None, Query(max_length=64)]
Currency = Annotated[str, StringConstraints(strict=True, pattern=CURRENCY_PATTERN)]
Name = Annotated[str, StringConstraints(strict=True, min_length=1, max_length=255)]
Description = Annotated[str, StringConstraints(strict=True, max_length=1000)]


def utc_instant(value: datetime) -> datetime:
    """``value`` (with a time zone) in UTC; ``ValueError`` if it leaves the years 1-9999 there."""
    try:
        return value.astimezone(UTC)
    except OverflowError:  # 9999-12-31T23:00:00-05:00 is in the year 10000 in UTC
        raise ValueError("the time is out of range (years 1-9999 in UTC)") from None


# RFC 3339 §5.6 (a space for the T, as §5.6's note allows): pydantic alone also takes a number of
# seconds since 1970, in JSON or as text, which API.md's timestamps are not.
_RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:[Zz]|[+-]\d{2}:\d{2})")


def rfc3339_text(value: Any) -> Any:
    """``value`` if it is RFC 3339 date-time text with a time zone; ``ValueError`` otherwise."""
    if not (isinstance(value, str) and _RFC3339.fullmatch(value)):
        raise ValueError("must be an RFC 3339 date-time with a time zone")
    return value


# An RFC 3339 date-time with a time zone that Tally can store and compare (as UTC).
UtcDatetime = Annotated[AwareDatetime, BeforeValidator(rfc3339_text), AfterValidator(utc_instant)]


def _depth(value: Any, level: int = 1) -> int:
    if isinstance(value, dict):
        return max((_depth(v, level + 1) for v in value.values()), default=level)
    if isinstance(value, list):
        return max((_depth(v, level + 1) for v in value), default=level)
    return level - 1


def _check_metadata(value: dict[str, Any]) -> dict[str, Any]:
    if _depth(value) > MAX_METADATA_DEPTH:
        raise ValueError(f"metadata may nest at most {MAX_METADATA_DEPTH} levels deep")
    stack: list[Any] = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, float) and not math.isfinite(item):
            raise ValueError("metadata may not hold NaN or Infinity")
        if isinstance(item, int) and not isinstance(item, bool) and not INT64_MIN <= item <= INT64_MAX:
            raise ValueError("metadata integers must fit in 64 bits")
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    if len(orjson.dumps(value)) > MAX_METADATA_BYTES:
        raise ValueError(f"metadata may take at most {MAX_METADATA_BYTES} bytes as JSON")
    return value


class Strict(BaseModel):
    """A request body: unknown fields refused, and no string (key or value, at any depth) holding
    U+0000, which PostgreSQL's text and jsonb cannot store: refused on every backend alike."""

    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _no_nul(cls, data: Any) -> Any:
        if _holds_nul(data):
            raise ValueError("strings may not contain U+0000 (NUL)")
        return data


def _holds_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_holds_nul(key) or _holds_nul(item) for key, item in value.items())
    if isinstance(value, list):
        return any(_holds_nul(item) for item in value)
    return False


class Metadata(Strict):
    metadata: dict[str, Any] | None = Field(
        default=None, description="Free-form JSON object, at most 8 KiB and 5 levels deep."
    )

    @field_validator("metadata")
    @classmethod
    def _metadata(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        return None if value is None else _check_metadata(value)


# ---- requests ----------------------------------------------------------------------------------


class LedgerCreate(Strict):
    name: Name


class KeyCreate(Strict):
    name: Name
    scopes: list[Scope] = Field(min_length=1, max_length=3)
    expires_at: UtcDatetime | None = Field(
        default=None,
        description="When the key stops working by itself (RFC 3339 with a time zone); must be in "
        "the future (database clock). Omit for a key that works until revoked.",
    )

    @field_validator("expires_at", mode="before")
    @classmethod
    def _rfc3339_text(cls, value: Any) -> Any:
        if value is not None and not isinstance(value, str):  # not a number of seconds
            raise ValueError("expires_at must be an RFC 3339 date-time with a time zone")
        return value


MAX_ROTATION_OVERLAP = 2_592_000  # 30 days, in seconds


class KeyRotate(Strict):
    overlap_seconds: int = Field(
        default=86_400,
        strict=True,
        ge=0,
        le=MAX_ROTATION_OVERLAP,
        description="How long the old key keeps working beside the new one (0: it stops now).",
    )


class AccountCreate(Metadata):
    id: ClientId | None = None
    name: Name | None = None
    currency: Currency
    normal_balance: NormalBalance = NormalBalance.CREDIT
    min_balance: Int64 | None = Field(default=0, description="null: unbounded; negative: overdraft")
    max_balance: Int64 | None = None

    @model_validator(mode="after")
    def _bounds_admit_zero(self) -> AccountCreate:
        # A new account's balance is zero: bounds that exclude zero could never be met.
        if self.min_balance is not None and self.min_balance > 0:
            raise ValueError("min_balance of a new account must be 0 or below (or null)")
        if self.max_balance is not None and self.max_balance < 0:
            raise ValueError("max_balance of a new account must be 0 or above (or null)")
        return self


class AccountPatch(Metadata):
    name: Name | None = None
    status: AccountStatus | None = None
    min_balance: Int64 | None = None
    max_balance: Int64 | None = None

    @model_validator(mode="after")
    def _ordered_bounds(self) -> AccountPatch:
        # Decided by the body alone, so before the account is looked up (API.md precedence).
        if (
            self.min_balance is not None
            and self.max_balance is not None
            and self.min_balance > self.max_balance
        ):
            raise ValueError("max_balance must not be below min_balance")
        return self


class LegIn(Strict):
    account_id: ClientId
    direction: Direction
    amount: Amount


class TransferCreate(Metadata):
    """Either the simple form (``debit_account_id``, ``credit_account_id``, ``amount``) or ``legs``."""

    id: ClientId | None = None
    debit_account_id: ClientId | None = None
    credit_account_id: ClientId | None = None
    amount: Amount | None = None
    currency: Currency | None = None
    legs: list[LegIn] | None = Field(default=None, min_length=2, max_length=MAX_LEGS)
    description: Description | None = None
    pending: StrictBool = Field(default=False, description="Place a hold instead of posting.")
    expires_at: UtcDatetime | None = Field(
        default=None, description="When a hold ends by itself; must be in the future (database clock)."
    )

    @model_validator(mode="after")
    def _one_form(self) -> TransferCreate:
        simple = (self.debit_account_id, self.credit_account_id, self.amount)
        if self.legs is not None:
            if any(v is not None for v in (*simple, self.currency)):
                raise ValueError("use either legs or debit_account_id/credit_account_id/amount/currency")
        elif any(v is None for v in simple):
            raise ValueError("debit_account_id, credit_account_id and amount are required without legs")
        return self


class HoldPost(Strict):
    amount: Amount | None = Field(
        default=None, description="Post part of a two-leg hold (the rest is released); omit to post it all."
    )


class HoldVoid(Strict):
    """No fields: the body may be omitted or ``{}``."""


class TransferReverse(Strict):
    amount: Amount | None = Field(default=None, description="Omit to reverse all that is left.")
    description: Description | None = None


class TransferBatch(Strict):
    transfers: list[TransferCreate] = Field(min_length=1, max_length=MAX_BATCH)
    atomic: StrictBool = Field(description="true: all or nothing; false: each transfer on its own.")


# ---- responses (documentation of the shapes in services.views) ----------------------------------


class LedgerOut(BaseModel):
    id: str
    name: str
    created_at: datetime


class KeyOut(BaseModel):
    id: str
    name: str
    scopes: list[Scope]
    created_at: datetime
    revoked_at: datetime | None
    last_used_at: datetime | None
    expires_at: datetime | None = Field(description="From this moment the key is refused; null: never.")


class KeyCreated(BaseModel):
    id: str
    name: str
    key: str | None = Field(description="The secret, shown this once; null in an idempotent replay.")
    scopes: list[Scope]
    created_at: datetime
    expires_at: datetime | None


class BalanceParts(BaseModel):
    posted: int
    pending_debits: int
    pending_credits: int
    available: int


class AccountOut(BaseModel):
    id: str
    name: str | None
    currency: str
    normal_balance: NormalBalance
    min_balance: int | None
    max_balance: int | None
    status: AccountStatus
    metadata: dict[str, Any]
    version: int
    balance: BalanceParts
    created_at: datetime
    updated_at: datetime


class BalanceOut(BaseModel):
    account_id: str
    currency: str
    posted: int
    pending_debits: int
    pending_credits: int
    available: int
    version: int
    as_of: datetime


class EntryOut(BaseModel):
    transfer_id: str
    direction: Direction
    amount: int
    posted_balance_after: int
    account_version: int
    created_at: datetime


class LegOut(BaseModel):
    account_id: str
    direction: Direction
    amount: int
    currency: str


class TransferOut(BaseModel):
    id: str
    status: Literal["posted", "pending", "voided", "expired"]
    legs: list[LegOut]
    debit_account_id: str | None = None
    credit_account_id: str | None = None
    amount: int | None = None
    currency: str | None = None
    description: str | None
    metadata: dict[str, Any]
    reverses: str | None
    reversed_amount: int
    held_amount: int | None = Field(
        description="What a two-leg hold held (after a partial post, more than amount)."
    )
    expires_at: datetime | None
    created_at: datetime
    posted_at: datetime | None


class AccountPage(BaseModel):
    data: list[AccountOut]
    next_cursor: str | None


class EventType(StrEnum):
    ACCOUNT_CREATED = "account.created"
    ACCOUNT_UPDATED = "account.updated"
    TRANSFER_CREATED = "transfer.created"
    TRANSFER_POSTED = "transfer.posted"
    TRANSFER_VOIDED = "transfer.voided"
    TRANSFER_EXPIRED = "transfer.expired"
    TRANSFER_BATCH_COMPLETED = "transfer_batch.completed"


class EventOut(BaseModel):
    id: str
    type: EventType
    created_at: str
    data: dict[str, Any]
    request_id: str | None


class EventPage(BaseModel):
    data: list[EventOut]
    next_cursor: str | None


class TransferPage(BaseModel):
    data: list[TransferOut]
    next_cursor: str | None


class EntryPage(BaseModel):
    data: list[EntryOut]
    next_cursor: str | None


class KeyPage(BaseModel):
    data: list[KeyOut]
    next_cursor: str | None


class KeyUsageDay(BaseModel):
    day: str = Field(description="A UTC day, YYYY-MM-DD.")
    requests: int = Field(description="Requests the key authenticated that day (written behind, ADR 0028).")


class KeyUsageOut(BaseModel):
    data: list[KeyUsageDay]


class ItemErrorOut(BaseModel):
    code: str
    detail: str


class BatchResultOut(BaseModel):
    index: int
    status: Literal["created", "exists", "error"]
    transfer: TransferOut | None = None
    error: ItemErrorOut | None = None


class BatchOut(BaseModel):
    results: list[BatchResultOut]


class FieldErrorOut(BaseModel):
    loc: list[str | int]
    msg: str


class BatchFailureOut(BaseModel):
    index: int
    code: str
    detail: str


class ProblemOut(BaseModel):
    type: str
    title: str
    status: int
    detail: str
    code: str
    request_id: str | None
    errors: list[FieldErrorOut] | list[BatchFailureOut] | None = Field(
        default=None, description="validation_error: fields; batch_failed: the failed transfers."
    )
