"""The fields of a job's Redis hash, named once.

The hash is written by the store's Lua scripts (``worker/store/lua``) and by the pipeline's
moves (``fields={...}``), and read back into ``Job``; a field spelled differently in two of
those places would be a value written and never read. Every name the hash holds is listed
here, and a unit test (``tests/unit/store/test_lua.py``) checks that each field name the scripts
spell is one of them.
"""

from __future__ import annotations

from enum import StrEnum


class JobField(StrEnum):
    # Set when the job is created.
    GRANT = "grant"  # the grant as accepted, canonical JSON
    FINGERPRINT = "fingerprint"  # the grant's hash: the same key with another is a conflict
    STATE = "state"
    ATTEMPTS = "attempts"  # POSTs made (or started) and not known to have failed harmlessly
    VERSION = "version"  # +1 per move: a move can require the version its caller read
    CREATED_AT = "created_at"
    UPDATED_AT = "updated_at"
    STATE_AT = "state_at"  # when it entered its state
    PROVIDER = "provider"
    CUSTOMER_ID = "customer_id"
    INCARNATION = "incarnation"  # the salt of the job's marker (grant.marker_for)
    PRIORITY = "priority"  # the grant's lane, for the scripts (the grant says it too)
    BATCH = "batch"  # the batch it was first handed over in
    # The store's era (store/lua/era.lua) since which every POST of the job is on record:
    # set at its creation and when a promotion of the store's master sends it to the listing.
    ERA = "era"

    # Set by moves.
    LAST_ERROR = "last_error"  # JSON: the last provider error, or why the job is invalid
    DLQ_REASON = "dlq_reason"  # the reason class while the job is in the DLQ
    FIRST_POST_AT = "first_post_at"  # when its first POST left
    LAST_POST_AT = "last_post_at"
    IN_FLIGHT_UNTIL = "in_flight_until"  # the lease of the POST in flight
    # The start's own token (JobStore.begin_post): a start sent again after its reply was
    # lost knows the move as its own, and its POST goes ahead instead of waiting the lease.
    POST_TOKEN = "post_token"
    SUBMITTED_AT = "submitted_at"  # when the provider answered 2xx
    PROVIDER_REF = "provider_ref"  # the provider's reference for the credit
    OUTCOME_UNKNOWN = "outcome_unknown"  # "1": a POST may have applied, nobody knows
    UNKNOWN_AT = "unknown_at"  # when the last outcome became unknown
    UNKNOWN_SINCE = "unknown_since"  # when the first of a run of unknown outcomes did
    RECONCILE_FIRST = "reconcile_first"  # replayed: read the listing before any POST
    LISTING_FIRST = "listing_first"  # read the listing before the next POST
    LISTING_CHECKED_AT = "listing_checked_at"  # when the listing was last read for it

    # Set by the confirmation.
    CONFIRMED_AT = "confirmed_at"
    PROVIDER_ENTRY = "provider_entry"  # JSON: the ledger entry that confirmed it
    VISIBLE_AFTER_SECONDS = "visible_after_seconds"  # how long the credit took to show

    # Set by an alarm (a duplicate credit, a copied marker).
    ALARM = "alarm"
