"""Provider clients behind one interface (``base.ProviderClient``); pick one with ``client_for``."""

from __future__ import annotations

from typing import Any

from worker.domain.grant import Provider
from worker.errors import Outcome, ProviderError
from worker.providers.base import LedgerEntry, ListingPage, ProviderClient, SubmitResult
from worker.providers.chargebee import ChargebeeClient
from worker.providers.errors import classify_exception, classify_response
from worker.providers.inveterate import InveterateClient
from worker.settings import Settings


def client_for(provider: Provider | str, settings: Settings, **kwargs: Any) -> ProviderClient:
    """A client for ``provider`` configured from ``settings``.

    Raises ``MissingCredentials`` when its key (or Chargebee's site) is not set, and
    ValueError for an unknown provider name.
    """
    match Provider(provider):
        case Provider.INVETERATE:
            return InveterateClient.from_settings(settings, **kwargs)
        case Provider.CHARGEBEE:
            return ChargebeeClient.from_settings(settings, **kwargs)


__all__ = [
    "ChargebeeClient",
    "InveterateClient",
    "LedgerEntry",
    "ListingPage",
    "Outcome",
    "ProviderClient",
    "ProviderError",
    "SubmitResult",
    "classify_exception",
    "classify_response",
    "client_for",
]
