"""No URL credentials and no spelling of a key in any text creditq writes (issue 15)."""

from __future__ import annotations

import base64
import json
from urllib.parse import quote

import h11
import httpx
import pytest
import respx
from pydantic import SecretStr

from worker.domain.grant import Provider
from worker.errors import Outcome, ProviderError
from worker.providers.errors import CONFIGURATION_CODE, classify_exception, classify_response
from worker.providers.inveterate import InveterateClient
from worker.redaction import MASK, redact_url, scrub, secret_spellings

KEY = "sk_live_DO_NOT_SHOW_4242"
BASE = "https://inveterate.test"


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
        ("redis://:pw@host:6379/0", "redis://***@host:6379/0"),
        ("rediss://user:pw@host/0?ssl_cert_reqs=none", "rediss://***@host/0?ssl_cert_reqs=none"),
        ("redis://:Xy7/SECRETpart9@host:notaport/0", "redis://***@host:notaport/0"),
        ("redis://u:p@ss@host/0", "redis://***@host/0"),
        (
            "sentinel://:a@h1:26379/0;sentinel://:b@h2:26379/0",
            "sentinel://***@h1:26379/0;sentinel://***@h2:26379/0",
        ),
        ("amqp://guest:guest@rabbit:5672//", "amqp://***@rabbit:5672//"),
        ("unix:///tmp/redis.sock", "unix:///tmp/redis.sock"),
        ("user:password@host", "(not a URL)"),
    ],
)
def test_redact_url_removes_everything_before_the_last_at(url: str, shown: str) -> None:
    assert redact_url(url) == shown


SPELLINGS = {
    "raw": lambda k: k,
    "str repr": repr,
    "bytes repr (h11)": lambda k: repr(k.encode()),
    "ascii": ascii,
    "url-encoded": lambda k: quote(k, safe=""),
    "json": json.dumps,
    "basic": lambda k: base64.b64encode(f"{k}:".encode()).decode(),
}


@pytest.mark.parametrize("secret", [KEY, KEY + "\n", "it's\"a\\key\r\n", "clé-42 x", KEY + "\x01"])
@pytest.mark.parametrize("spelling", SPELLINGS)
def test_scrub_catches_every_spelling_of_a_key(secret: str, spelling: str) -> None:
    text = f"Illegal header value {SPELLINGS[spelling](secret)} (sent to inveterate)"
    scrubbed = scrub(text, [secret])
    assert MASK in scrubbed
    body = secret.strip()
    assert body not in scrubbed and repr(body)[1:-1] not in scrubbed


def test_scrub_leaves_text_without_a_secret_alone() -> None:
    assert scrub("HTTP 500: upstream down", [KEY]) == "HTTP 500: upstream down"
    assert scrub("anything", []) == "anything"
    assert secret_spellings("") == set()


def test_an_h11_refusal_is_a_configuration_fault_not_an_ambiguous_call() -> None:
    """h11 quotes the refused header value: the key, escaped, in the exception text."""
    exc = httpx.LocalProtocolError(f"Illegal header value {(KEY + chr(10)).encode()!r}")
    err = classify_exception(Provider.INVETERATE, exc, [KEY + "\n"])
    assert err.outcome is Outcome.PERMANENT and err.code == CONFIGURATION_CODE
    assert KEY not in str(err) and MASK in err.message


def test_h11_itself_quotes_a_key_with_a_newline_and_the_classifier_hides_it() -> None:
    with pytest.raises(h11.LocalProtocolError) as caught:
        h11.Request(method="GET", target="/", headers=[("Host", "x"), ("X-Key", KEY + "\n")])
    err = classify_exception(
        Provider.INVETERATE, httpx.LocalProtocolError(str(caught.value)), [KEY + "\n"]
    )
    assert KEY not in str(err) and err.outcome is Outcome.PERMANENT


def test_a_header_httpx_cannot_encode_is_a_configuration_fault() -> None:
    try:
        "clé".encode("ascii")
    except UnicodeEncodeError as exc:
        err = classify_exception(Provider.CHARGEBEE, exc, ["clé"])
    assert err.outcome is Outcome.PERMANENT and err.code == CONFIGURATION_CODE


def test_a_provider_echoing_the_key_json_escaped_is_scrubbed_before_the_cut() -> None:
    secret = 'key"with\\quote'
    body = json.dumps({"message": "x" * 290 + f" invalid key {secret}"}).encode()
    err = classify_response(Provider.INVETERATE, httpx.Response(401, content=body), [secret])
    assert err is not None and 'key"with' not in err.message and "with\\" not in err.message


@respx.mock
def test_the_client_scrubs_a_key_the_provider_echoes_url_encoded() -> None:
    secret = "abc/def+ghi=="
    respx.get(f"{BASE}/v2.0/merchant").mock(
        return_value=httpx.Response(401, json={"message": f"bad key {quote(secret, safe='')}"})
    )
    with InveterateClient(BASE, SecretStr(secret), 5) as client, pytest.raises(ProviderError) as e:
        client.check()
    assert quote(secret, safe="") not in str(e.value) and MASK in str(e.value)
