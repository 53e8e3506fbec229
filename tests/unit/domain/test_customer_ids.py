"""Customer ids go into a URL path: nothing a URL, a proxy or a server would rewrite."""

from __future__ import annotations

from urllib.parse import quote

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.fixtures.celery import PublishRecorder
from tests.fixtures.grants import raw_grant
from tests.fixtures.refusals import refused_at_enqueue
from worker.domain.grant import CUSTOMER_ID_CHARACTERS, CreditGrant
from worker.errors import InvalidGrant
from worker.providers.inveterate import InveterateClient
from worker.store.jobs import JobStore

ONLY = (
    "customer_id: may hold only ASCII letters, digits and -._~!$&'()*+,=:@ "
    "(it goes into a URL path)"
)


@pytest.mark.parametrize("provider", ["inveterate", "chargebee"])
def test_a_lone_dot_is_refused_because_the_url_would_drop_it(
    store: JobStore, recorder: PublishRecorder, provider: str
) -> None:
    message = refused_at_enqueue(store, recorder, "customer_id", provider=provider, customer_id=".")
    assert message == "customer_id: must not be '.' (a URL would drop it)"


@pytest.mark.parametrize("customer_id", ["..", "...", "a..b", "a/b", "/"])
def test_dot_dot_and_slash_are_still_refused_as_before(
    store: JobStore, recorder: PublishRecorder, customer_id: str
) -> None:
    message = refused_at_enqueue(store, recorder, "customer_id", customer_id=customer_id)
    assert message == "customer_id: must not contain '/' or '..'"


@pytest.mark.parametrize("customer_id", ["a b", "a\tb", "a\nb", "a\x00b", "a\x7fb", "a\u2028b"])
def test_whitespace_and_control_characters_are_still_refused_as_before(
    store: JobStore, recorder: PublishRecorder, customer_id: str
) -> None:
    message = refused_at_enqueue(store, recorder, "customer_id", customer_id=customer_id)
    assert message == "customer_id: must not contain whitespace or control characters"


@pytest.mark.parametrize(
    "customer_id",
    [
        "a%2Fb",
        "%2e",
        "%",
        "a\\b",
        "a?b",
        "a#b",
        "a;jsessionid=1",
        "café",
        "ｃｕｓｔ",
        'a"b',
        "a<b>",
        "a[1]",
        "a{b}",
        "a|b",
        "a^b",
        "a`b",
    ],
)
def test_characters_a_url_would_encode_decode_or_cut_are_refused(
    store: JobStore, recorder: PublishRecorder, customer_id: str
) -> None:
    assert refused_at_enqueue(store, recorder, "customer_id", customer_id=customer_id) == ONLY


@pytest.mark.parametrize(
    "customer_id", ["cust_42", "m-1", "16466735382", "a.b", ".a", "a.", "a+b@shop.example", "~x"]
)
def test_ordinary_ids_are_accepted(customer_id: str) -> None:
    assert CreditGrant.parse(raw_grant(customer_id=customer_id)).customer_id == customer_id


@settings(max_examples=300, deadline=None)
@given(
    customer_id=st.one_of(
        st.text(min_size=1, max_size=50),
        st.text(alphabet="aZ09" + CUSTOMER_ID_CHARACTERS + "%/\\?#; é", min_size=1, max_size=12),
    )
)
def test_an_accepted_id_is_one_path_segment_that_httpx_sends_unchanged(customer_id: str) -> None:
    try:
        grant = CreditGrant.parse(raw_grant(provider="inveterate", customer_id=customer_id))
    except InvalidGrant as exc:
        assert exc.field == "customer_id" and "\n" not in str(exc)
        return
    assert set(grant.customer_id) <= set(
        "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789" + CUSTOMER_ID_CHARACTERS
    )
    path = InveterateClient.credits_path(grant.customer_id)
    sent = httpx.URL("https://inveterate.test" + path).raw_path.decode()
    assert sent == path == f"/v2.0/admin/members/{quote(grant.customer_id, safe='')}/credits"
