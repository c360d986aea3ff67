"""Problem details (RFC 9457): the one table from error class to problem ``code`` and HTTP status.

Every error a client can see has a row here, with a title and the advice served at
``GET /problems/<code>``. The ``type`` member is the relative reference ``/problems/<code>``.
"""

from __future__ import annotations

from dataclasses import dataclass

import orjson

from tally.domain import errors as e
from tally.services.ports import StoredReply


@dataclass(frozen=True, slots=True)
class Problem:
    code: str
    status: int
    title: str
    advice: str


_ROWS: list[tuple[type[e.TallyError] | None, Problem]] = [
    (
        e.ValidationFailed,
        Problem(
            "validation_error",
            422,
            "The request is not valid",
            "Fix the fields listed in `errors` (each has a `loc` and a `msg`) and send it again. A "
            "field past its bound is reported here too, at its `loc`: a string too long, a batch of "
            "more than 1000 transfers (`body.transfers`), a `limit` outside 1-1000 (`query.limit`).",
        ),
    ),
    (
        None,
        Problem(
            "invalid_json",
            400,
            "The body is not valid JSON",
            "Send a UTF-8 JSON document with `Content-Type: application/json`.",
        ),
    ),
    (
        e.PayloadTooLarge,
        Problem(
            "payload_too_large",
            413,
            "The body is too large",
            "Bodies are limited to 1 MiB. Split a large batch into several requests.",
        ),
    ),
    (
        e.JsonTooDeep,
        Problem(
            "json_too_deep",
            400,
            "The body nests too deeply",
            "Objects and arrays may nest at most 64 levels deep in a body (a valid one needs fewer "
            "than 10); flatten the document.",
        ),
    ),
    (
        None,
        Problem(
            "malformed_request",
            400,
            "The request is not valid HTTP",
            "The request line or a header could not be parsed as HTTP/1.1 (a control character in a "
            "header value, say); nothing was applied. Fix the client, and send it on a new connection.",
        ),
    ),
    (
        None,
        Problem(
            "request_timeout",
            408,
            "The request was not received in time",
            "The connection sent its headers or its body too slowly, so Tally stopped waiting and closed "
            "it; nothing was applied. Send the whole request at once, on a new connection.",
        ),
    ),
    (
        None,
        Problem(
            "headers_too_large",
            431,
            "The request's headers are too large",
            "The request line and headers together are limited to 16 KiB by default "
            "(TALLY_MAX_HEADER_BYTES); send fewer or shorter headers, on a new connection.",
        ),
    ),
    (
        e.SameAccount,
        Problem(
            "same_account",
            422,
            "Debit and credit accounts are the same",
            "A transfer moves value between two different accounts.",
        ),
    ),
    (
        e.UnbalancedTransfer,
        Problem(
            "unbalanced_transfer",
            422,
            "The transfer does not balance",
            "In every currency, the debit legs must add up to the credit legs.",
        ),
    ),
    (
        e.IdempotencyKeyRequired,
        Problem(
            "idempotency_key_required",
            400,
            "An Idempotency-Key header is required",
            "Send a unique `Idempotency-Key` (1-255 printable ASCII characters) with every request "
            "that moves money, and reuse it when you retry that request.",
        ),
    ),
    (
        e.IdempotencyKeyInUse,
        Problem(
            "idempotency_key_in_use",
            409,
            "A request with this Idempotency-Key is in flight",
            "Wait for the first request to finish (see `Retry-After`), then retry with the same key.",
        ),
    ),
    (
        e.IdempotencyKeyReused,
        Problem(
            "idempotency_key_reused",
            422,
            "The Idempotency-Key was used for a different request",
            "Use a new key for a new request; a key replays only the request it was first used for.",
        ),
    ),
    (
        e.Unauthenticated,
        Problem(
            "unauthenticated",
            401,
            "Authentication is required",
            "Send `Authorization: Bearer <key>` with a valid, unrevoked key.",
        ),
    ),
    (
        e.Forbidden,
        Problem(
            "forbidden",
            403,
            "The key may not do this",
            "Use a key with the scope this route needs (read, write or admin), or the root key for "
            "ledgers and their keys.",
        ),
    ),
    (
        e.NotFound,
        Problem("not_found", 404, "Not found", "The resource does not exist in this key's ledger."),
    ),
    (
        None,
        Problem(
            "method_not_allowed",
            405,
            "Method not allowed",
            "This path does not accept this method; see the API reference.",
        ),
    ),
    (
        e.AccountNotFound,
        Problem(
            "account_not_found",
            422,
            "An account does not exist",
            "Every leg must name an account of this ledger.",
        ),
    ),
    (
        e.IdConflict,
        Problem(
            "id_conflict",
            409,
            "The id is taken by a different resource",
            "A create with an existing id must carry the same body; choose a new id otherwise.",
        ),
    ),
    (
        e.AccountNotEmpty,
        Problem(
            "account_not_empty",
            409,
            "The account is not empty",
            "Only an account with zero posted and pending balances can be closed.",
        ),
    ),
    (
        e.AccountClosed,
        Problem(
            "account_closed",
            409,
            "The account is closed",
            "A closed account cannot change; open a new one.",
        ),
    ),
    (
        e.AccountNotOpen,
        Problem(
            "account_not_open",
            422,
            "An account is not open",
            "Frozen and closed accounts take no new postings or holds.",
        ),
    ),
    (
        e.CurrencyMismatch,
        Problem(
            "currency_mismatch",
            422,
            "Currencies do not match",
            "Both accounts of a simple transfer must hold the transfer's currency.",
        ),
    ),
    (
        e.InsufficientFunds,
        Problem(
            "insufficient_funds",
            422,
            "A balance bound would be broken",
            "The change would take an account's available balance below its `min_balance`, or its "
            "balance above its `max_balance`.",
        ),
    ),
    (
        e.AmountOverflow,
        Problem(
            "amount_overflow",
            422,
            "A balance would overflow",
            "Balances are 64-bit signed integers of minor units; the result would leave that range.",
        ),
    ),
    (
        e.TransferNotPending,
        Problem(
            "transfer_not_pending",
            409,
            "The transfer is not pending",
            "Only a pending transfer (a hold) can be posted or voided, and only once; a hold whose "
            "`expires_at` has passed has expired. Read the transfer to see its status.",
        ),
    ),
    (
        e.TransferNotPosted,
        Problem(
            "transfer_not_posted",
            409,
            "The transfer is not posted",
            "Only a posted transfer can be reversed. Post a pending transfer first, or void it.",
        ),
    ),
    (
        e.KeyNotActive,
        Problem(
            "key_not_active",
            409,
            "The key is revoked or expired",
            "Only a key that still works can be rotated. Create a new key with the scopes you need "
            "instead (`POST /v1/ledgers/{ledger_id}/keys`).",
        ),
    ),
    (
        e.AmountExceedsPending,
        Problem(
            "amount_exceeds_pending",
            422,
            "The amount is more than the hold",
            "Post at most the held amount; omit `amount` to post all of it.",
        ),
    ),
    (
        e.PartialPostNotSupported,
        Problem(
            "partial_post_not_supported",
            422,
            "A multi-leg hold posts in full only",
            "Omit `amount` to post the whole hold, or void it and place the hold you want to post.",
        ),
    ),
    (
        e.ReversalExceedsOriginal,
        Problem(
            "reversal_exceeds_original",
            422,
            "The reversal is more than what is left",
            "All reversals of a transfer together may not exceed it; its `reversed_amount` shows what "
            "has been reversed so far.",
        ),
    ),
    (
        e.PartialReversalNotSupported,
        Problem(
            "partial_reversal_not_supported",
            422,
            "A multi-leg transfer reverses in full only",
            "Omit `amount` to reverse the whole transfer, then post the part that should stand.",
        ),
    ),
    (
        e.BatchFailed,
        Problem(
            "batch_failed",
            422,
            "Some transfers of the batch failed",
            "Nothing of the batch was applied. `errors` lists each failed transfer by `index` with its "
            "`code`; fix them and send the batch again (with a new Idempotency-Key).",
        ),
    ),
    (
        e.RateLimited,
        Problem(
            "rate_limited",
            429,
            "Too many requests",
            "This key sent more requests than its quota allows (see the `RateLimit-Policy` header); "
            "nothing was applied. Wait for the number of seconds in `Retry-After`, then retry with the "
            "same Idempotency-Key, and spread requests out or batch transfers.",
        ),
    ),
    (
        e.Unavailable,
        Problem(
            "unavailable",
            503,
            "The service is unavailable",
            "Retry later (see `Retry-After`) with the same Idempotency-Key; nothing was applied.",
        ),
    ),
    (
        e.DeadlineExceeded,
        Problem(
            "deadline_exceeded",
            504,
            "The time budget ran out",
            "Nothing was applied. Retry with the same Idempotency-Key, or a larger `Tally-Timeout-Ms`.",
        ),
    ),
    (
        None,
        Problem(
            "internal_error",
            500,
            "Internal error",
            "Something failed inside Tally; nothing was applied. Retry with the same Idempotency-Key.",
        ),
    ),
]

BY_CODE: dict[str, Problem] = {problem.code: problem for _, problem in _ROWS}
_BY_CLASS: dict[type[e.TallyError], Problem] = {cls: p for cls, p in _ROWS if cls is not None}


def problem_for(error: e.TallyError) -> Problem:
    for cls in type(error).__mro__:
        if cls in _BY_CLASS:
            return _BY_CLASS[cls]
    return BY_CODE["internal_error"]


def problem_body(
    problem: Problem,
    detail: str,
    request_id: str | None,
    errors: list[dict[str, object]] | None = None,
) -> bytes:
    body: dict[str, object] = {
        "type": f"/problems/{problem.code}",
        "title": problem.title,
        "status": problem.status,
        "detail": detail or problem.title,
        "code": problem.code,
        "request_id": request_id,
    }
    if errors is not None:
        body["errors"] = errors
    return orjson.dumps(body)


def render_error(error: e.TallyError, request_id: str | None) -> StoredReply:
    problem = problem_for(error)
    errors: list[dict[str, object]] | None = None
    if isinstance(error, e.ValidationFailed):
        errors = [{"loc": list(f.loc), "msg": f.msg} for f in error.errors]
    elif isinstance(error, e.BatchFailed):
        errors = [
            {
                "index": index,
                "code": problem_for(failure).code,
                "detail": failure.detail or problem_for(failure).title,
            }
            for index, failure in error.failures
        ]
    return StoredReply(problem.status, problem_body(problem, error.detail, request_id, errors))
