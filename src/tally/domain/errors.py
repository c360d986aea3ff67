"""The one error tree of Tally.

Every error the service can answer with is a class here; ``tally.api.problems`` maps each class to
exactly one problem ``code`` and HTTP status. Services and adapters raise these, never HTTP errors.

    TallyError
    ├── RequestError                 the request itself is wrong (decided before any lookup)
    │   ├── ValidationFailed         422 validation_error (with field errors)
    │   ├── PayloadTooLarge          413 payload_too_large
    │   ├── JsonTooDeep              400 json_too_deep
    │   ├── SameAccount              422 same_account
    │   ├── UnbalancedTransfer       422 unbalanced_transfer
    │   │   └── UnbalancedInCurrency     the same, found after the lookups (also a Rejection)
    │   ├── IdempotencyKeyRequired   400 idempotency_key_required
    │   ├── IdempotencyKeyInUse      409 idempotency_key_in_use
    │   └── IdempotencyKeyReused     422 idempotency_key_reused
    ├── AccessError
    │   ├── Unauthenticated          401 unauthenticated
    │   └── Forbidden                403 forbidden
    ├── RateLimited                  429 rate_limited (with the seconds to wait); nothing was applied
    ├── NotFound                     404 not_found
    ├── Rejection                    decided while processing, against stored state: these
    │   │                            outcomes are stored with an idempotency key and replayed
    │   ├── AccountNotFound          422 account_not_found
    │   ├── IdConflict               409 id_conflict
    │   ├── AccountNotEmpty          409 account_not_empty
    │   ├── AccountClosed            409 account_closed
    │   ├── AccountNotOpen           422 account_not_open
    │   ├── CurrencyMismatch         422 currency_mismatch
    │   ├── InsufficientFunds        422 insufficient_funds
    │   ├── AmountOverflow           422 amount_overflow
    │   ├── TransferNotPending       409 transfer_not_pending
    │   ├── TransferNotPosted        409 transfer_not_posted
    │   ├── AmountExceedsPending     422 amount_exceeds_pending
    │   ├── PartialPostNotSupported  422 partial_post_not_supported
    │   ├── ReversalExceedsOriginal  422 reversal_exceeds_original
    │   ├── PartialReversalNotSupported  422 partial_reversal_not_supported
    │   ├── KeyNotActive             409 key_not_active
    │   └── BatchFailed              422 batch_failed (with the failure of each item)
    └── ServiceError                 the service cannot answer now; nothing was applied
        ├── Unavailable              503 unavailable
        │   └── TransientConflict        lost a race (deadlock, duplicate insert); retried first
        └── DeadlineExceeded         504 deadline_exceeded
"""

from __future__ import annotations

from dataclasses import dataclass


class TallyError(Exception):
    """Base of every error Tally answers with. ``detail`` is safe to show to the client."""

    def __init__(self, detail: str = "") -> None:
        super().__init__(detail)
        self.detail = detail


class Rejection(TallyError):
    """A business outcome decided against the stored state; replayed for the same idempotency key."""


class RequestError(TallyError):
    """The request is wrong in itself, whatever the stored state."""


@dataclass(frozen=True, slots=True)
class FieldError:
    """One broken rule of a request body or query: ``loc`` is the path to the field."""

    loc: tuple[str | int, ...]
    msg: str


class ValidationFailed(RequestError):
    def __init__(self, errors: list[FieldError], detail: str = "The request is not valid.") -> None:
        super().__init__(detail)
        self.errors = errors

    @classmethod
    def at(cls, loc: tuple[str | int, ...], msg: str) -> ValidationFailed:
        return cls([FieldError(loc, msg)], detail=msg)


class PayloadTooLarge(RequestError):
    pass


class JsonTooDeep(RequestError):
    """The body nests objects and arrays deeper than Tally parses (decided before parsing)."""


class SameAccount(RequestError):
    pass


class UnbalancedTransfer(RequestError):
    pass


class UnbalancedInCurrency(UnbalancedTransfer, Rejection):
    """Debits equal credits overall, but not per currency: known only once the accounts are read,
    so it is decided while processing and stored under the idempotency key."""


class IdempotencyKeyRequired(RequestError):
    pass


class IdempotencyKeyInUse(RequestError):
    pass


class IdempotencyKeyReused(RequestError):
    pass


class AccessError(TallyError):
    pass


class Unauthenticated(AccessError):
    pass


class Forbidden(AccessError):
    pass


class RateLimited(TallyError):
    """The key sent more requests than its quota allows; decided before the request was read.

    ``retry_after`` is the whole number of seconds (at least 1) after which a request may pass.
    """

    def __init__(self, detail: str, retry_after: int) -> None:
        super().__init__(detail)
        self.retry_after = retry_after


class NotFound(TallyError):
    pass


class AccountNotFound(Rejection):
    pass


class IdConflict(Rejection):
    pass


class AccountNotEmpty(Rejection):
    pass


class AccountClosed(Rejection):
    pass


class KeyNotActive(Rejection):
    """The key is revoked or expired: it cannot be rotated."""


class AccountNotOpen(Rejection):
    pass


class CurrencyMismatch(Rejection):
    pass


class InsufficientFunds(Rejection):
    pass


class AmountOverflow(Rejection):
    pass


class TransferNotPending(Rejection):
    pass


class TransferNotPosted(Rejection):
    pass


class AmountExceedsPending(Rejection):
    pass


class PartialPostNotSupported(Rejection):
    pass


class ReversalExceedsOriginal(Rejection):
    pass


class PartialReversalNotSupported(Rejection):
    pass


class BatchFailed(Rejection):
    """An atomic batch in which some items failed; nothing of it was applied.

    ``failures`` holds each failed item's index and error, in item order.
    """

    def __init__(self, failures: list[tuple[int, TallyError]]) -> None:
        super().__init__(f"{len(failures)} of the batch's transfers failed; none was applied.")
        self.failures = failures


class ServiceError(TallyError):
    """Nothing was applied; the client may retry later with the same idempotency key."""


class Unavailable(ServiceError):
    pass


class TransientConflict(Unavailable):
    """The transaction lost a race with another and was rolled back; running it again is safe."""


class DeadlineExceeded(ServiceError):
    pass
