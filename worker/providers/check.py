"""``creditq check``: does each configured key work? One cheap read per provider.

Inveterate documents ``GET /v2.0/merchant`` as the key's health check; Chargebee has none, so
a one-entry listing stands in (it spends one call of the site's rate budget).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

from worker.domain.grant import Provider
from worker.errors import MissingCredentials, ProviderError
from worker.providers import client_for
from worker.settings import Settings


class CredentialCheck(NamedTuple):
    provider: Provider
    ok: bool
    verdict: str
    configured: bool = True


def check_credentials(
    settings: Settings,
    providers: tuple[Provider, ...] = tuple(Provider),
    before_call: Callable[[Provider], None] | None = None,
) -> list[CredentialCheck]:
    """One verdict per provider. The key is never part of a verdict: a missing one is named
    by its variable, a refused one by the provider's message (scrubbed by the client).
    ``before_call`` runs just before each provider call: it takes a slot of the budget."""
    results: list[CredentialCheck] = []
    for provider in providers:
        try:
            with client_for(provider, settings) as client:
                if before_call is not None:
                    before_call(provider)
                verdict = client.check()
        except MissingCredentials as exc:
            results.append(
                CredentialCheck(provider, False, f"{exc.variable} is not set", configured=False)
            )
        except ProviderError as exc:
            results.append(CredentialCheck(provider, False, str(exc)))
        else:
            results.append(CredentialCheck(provider, True, verdict))
    return results
