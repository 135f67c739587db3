"""Property-based: malformed and oversized bodies, headers and paths thrown at `/v1/*` and
`/api/v1/*` never produce a 500 and always answer in the error shape."""

from __future__ import annotations

import json

import httpx
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tests.keys.factories import make_key

pytestmark = pytest.mark.live

FUZZ = settings(
    max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=50),
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=12), inner, max_size=5)
    ),
    max_leaves=30,
)
chat_like = st.fixed_dictionaries(
    {},
    optional={
        "model": json_values | st.just("gpt-4o-mini"),
        "messages": json_values
        | st.lists(
            st.fixed_dictionaries({}, optional={"role": json_values, "content": json_values})
        ),
        "stream": json_values,
        "max_tokens": json_values,
        "temperature": json_values,
        "tools": json_values,
        "input": json_values,
    },
)
# What an HTTP client can send at all: visible ASCII, no surrounding whitespace.
header_text = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=80).map(
    str.strip
)
bodies = st.one_of(
    st.binary(max_size=300),
    chat_like.map(lambda v: json.dumps(v).encode()),
    json_values.map(lambda v: json.dumps(v).encode()),
)
V1_PATHS = [
    "/v1/chat/completions",
    "/v1/embeddings",
    "/v1/completions",
    "/v1/messages",
    "/v1/models",
    "/v1/models/gpt-4o-mini",
    "/v1/nope",
]
API_PATHS = [
    "/api/v1/keys/",
    "/api/v1/providers/",
    "/api/v1/models/",
    "/api/v1/tenants/",
    "/api/v1/usage/",
    "/api/v1/budgets/",
    "/api/v1/policies/",
    "/api/v1/keys/1/rotate/",
    "/api/v1/nope/",
]


def check(response: httpx.Response) -> None:
    assert response.status_code < 500 or response.status_code in (502, 503, 504), response.text[
        :300
    ]
    if response.status_code >= 400:
        body = response.json()
        assert set(body) >= {"error"} or body.get("type") == "error", (
            body
        )  # OpenAI or Anthropic shape
        error = body["error"]
        assert isinstance(error["message"], str) and error["type"]


@FUZZ
@given(
    path=st.sampled_from(V1_PATHS),
    method=st.sampled_from(["POST", "GET", "PUT"]),
    body=bodies,
    content_type=header_text,
    request_id=header_text,
    auth=st.booleans(),
)
@example(
    path="/v1/chat/completions",
    method="POST",
    body=b"x" * (9 * 1024 * 1024),
    content_type="application/json",
    request_id="a\tb",
    auth=True,
)
def test_v1_never_fails_with_a_500(gw, path, method, body, content_type, request_id, auth):
    headers = {"content-type": content_type, "x-request-id": request_id}
    if auth:
        headers["authorization"] = f"Bearer {gw.key.secret}"
    check(httpx.request(method, gw.url + path, headers=headers, content=body, timeout=30))


@FUZZ
@given(
    path=st.sampled_from(API_PATHS),
    method=st.sampled_from(["POST", "PATCH", "PUT", "GET", "DELETE"]),
    body=bodies,
    query=st.dictionaries(
        st.sampled_from(
            ["limit", "offset", "tenant", "search", "from", "to", "group_by", "ordering", "enabled"]
        ),
        header_text,
        max_size=3,
    ),
)
def test_management_api_never_fails_with_a_500(gw, mgmt_key, path, method, body, query):
    headers = {"content-type": "application/json", "authorization": f"Bearer {mgmt_key}"}
    response = httpx.request(
        method, gw.url + path, headers=headers, content=body, params=query, timeout=30
    )
    if response.status_code in (301, 308, 204):
        return
    check(response)


@pytest.fixture
def mgmt_key(gw) -> str:
    return make_key(gw.tenant, scopes=["management:read", "management:write"]).secret
