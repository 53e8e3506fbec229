"""``creditq check``: does each configured key work? One cheap read per provider.

Inveterate documents ``GET /v2.0/merchant`` as the key's health check; Chargebee has none, so
a one-entry listing stands in (it spends one call of the site's rate budget).
"""

from __future__ import annotations

from typing import NamedTuple

from worker.errors import MissingCredentials
from worker.models import Provider
from worker.providers import client_for
from worker.providers.base import ProviderError
from worker.settings import Settings


class CredentialCheck(NamedTuple):
    provider: Provider
    ok: bool
    verdict: str


def check_credentials(
    settings: Settings, providers: tuple[Provider, ...] = tuple(Provider)
) -> list[CredentialCheck]:
    """One verdict per provider. The key is never part of a verdict: a missing one is named
    by its variable, a refused one by the provider's message (scrubbed by the client)."""
    results: list[CredentialCheck] = []
    for provider in providers:
        try:
            with client_for(provider, settings) as client:
                verdict = client.check()
        except MissingCredentials as exc:
            results.append(CredentialCheck(provider, False, f"{exc.variable} is not set"))
        except ProviderError as exc:
            results.append(CredentialCheck(provider, False, str(exc)))
        else:
            results.append(CredentialCheck(provider, True, verdict))
    return results
