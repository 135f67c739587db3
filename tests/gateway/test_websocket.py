"""The chat WebSocket against a live server, with a real WebSocket client.

Protocol and close codes: docs/websocket.md.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from dataclasses import dataclass
from decimal import Decimal

import pytest
from aiohttp import web

from apps.billing.models import UsageRecord
from apps.providers.services import deployment_create, model_create, provider_create
from apps.providers.tokens import estimate_prompt_tokens
from tests.conftest import settle, start_server
from tests.fakes.base_server import FakeServer
from tests.gateway.wsclient import (
    LIVE_PATH,
    RawWebSocket,
    authenticate,
    close_code,
    recv,
    recv_until,
    rss_kib,
    send,
    session_cookie,
    ws_connect,
)
from tests.keys.factories import make_key
from tests.tenants.factories import MembershipFactory, TenantFactory, UserFactory

pytestmark = pytest.mark.live

USER = [{"role": "user", "content": "hello"}]


@pytest.fixture(scope="module")
def tuned(live_server_process, tmp_path_factory):
    """A second gateway process with short WebSocket limits, on the same database."""
    server = start_server(
        tmp_path_factory.mktemp("ws-tuned"),
        name="ws-tuned",
        GATEWAY_WS_AUTH_TIMEOUT="1",
        GATEWAY_WS_IDLE_TIMEOUT="2",
        GATEWAY_WS_SEND_TIMEOUT="5",
        GATEWAY_WS_MAX_FRAME_BYTES="65536",
        GATEWAY_WS_MAX_STREAMS="2",
    )
    yield server
    server.stop()


@pytest.fixture
def slow_upstream(fake_openai):
    fake_openai.stream_delay, fake_openai.stream_chunks = 0.05, 20
    yield fake_openai
    fake_openai.stream_delay, fake_openai.stream_chunks = 0.05, 20


def wait_for_record(request_id: str, timeout: float = 10.0) -> UsageRecord:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        record = UsageRecord.objects.filter(request_id=request_id).first()
        if record is not None:
            return record
        time.sleep(0.1)
    raise AssertionError(f"no usage record for {request_id}")


def done_or_error(rid):
    return lambda f: f.get("id") == rid and f["type"] in ("chat.done", "error")


# --- authentication ------------------------------------------------------------------


def test_key_auth_then_models_and_a_stream(gw):
    with ws_connect(gw.url) as ws:
        ok = authenticate(ws, gw.key.secret)
        assert ok["principal"] == "key"
        assert ok["tenant"] == "acme"
        send(ws, {"type": "models.list"})
        models = recv(ws)
        assert models["type"] == "models"
        assert "gpt-4o-mini" in {m["id"] for m in models["data"]}
        send(ws, {"type": "chat.request", "id": "c1", "model": "gpt-4o-mini", "messages": USER})
        frames = recv_until(ws, done_or_error("c1"))
    deltas = [f for f in frames if f["type"] == "chat.delta"]
    done = frames[-1]
    assert done["type"] == "chat.done", done
    assert "".join(d["delta"].get("content", "") for d in deltas) == "hello"
    assert done["finish_reason"] == "stop"
    prompt = estimate_prompt_tokens(USER)  # what the fake upstream reports
    assert done["usage"] == {
        "prompt_tokens": prompt,
        "completion_tokens": 1,
        "total_tokens": prompt + 1,
    }
    assert done["model"] == "gpt-4o-mini"
    assert done["request_id"].startswith("req_")
    # prices: $1/M in, $2/M out
    assert Decimal(done["cost_usd"]) == (Decimal(prompt) + 2) / 1_000_000


def test_bad_key_gets_an_error_frame_then_close_4401(gw):
    with ws_connect(gw.url) as ws:
        send(ws, {"type": "auth", "api_key": "gk-not-a-key"})
        frame = recv(ws)
        assert frame["type"] == "error"
        assert frame["error"]["type"] == "authentication_error"
        assert frame["error"]["code"] == "invalid_api_key"
        assert close_code(ws) == 4401


@pytest.mark.parametrize(
    ("fields", "code"),
    [
        ({"ip_allowlist": ["10.0.0.0/8"]}, "ip_not_allowed"),
        ({"scopes": ["management:read"]}, "insufficient_scope"),
        ({"require_signature": True, "signing_secret": "s" * 32}, "signature_required"),
    ],
)
def test_keys_the_http_path_would_refuse_close_4403(gw, fields, code):
    key = make_key(gw.tenant, **fields)
    with ws_connect(gw.url) as ws:
        send(ws, {"type": "auth", "api_key": key.secret})
        frame = recv(ws)
        assert frame["type"] == "error"
        assert frame["error"]["code"] == code
        assert close_code(ws) == 4403


def test_requests_before_auth_are_refused_without_closing(gw):
    with ws_connect(gw.url) as ws:
        send(ws, {"type": "chat.request", "id": "x", "model": "gpt-4o-mini", "messages": USER})
        frame = recv(ws)
        assert frame["type"] == "error"
        assert frame["id"] == "x"
        assert frame["error"]["code"] == "unauthenticated"
        authenticate(ws, gw.key.secret)


def test_no_auth_within_the_timeout_closes_4408(gw, tuned):
    started = time.monotonic()
    with ws_connect(tuned.url) as ws:
        frame = recv(ws, timeout=5)
        assert frame["type"] == "error"
        assert frame["error"]["code"] == "auth_timeout"
        assert close_code(ws, timeout=5) == 4408
    assert 0.9 <= time.monotonic() - started < 4


def test_session_auth_picks_the_only_tenant(gw):
    user = MembershipFactory(tenant=gw.tenant, user=UserFactory(is_staff=False)).user
    with ws_connect(gw.url, cookie=session_cookie(user)) as ws:
        ok = recv(ws)
        assert ok == {
            "type": "auth.ok",
            "principal": "session",
            "user": user.username,
            "tenant": "acme",
            "tenants": ["acme"],
        }
        send(ws, {"type": "chat.request", "id": "s1", "model": "gpt-4o-mini", "messages": USER})
        frames = recv_until(ws, done_or_error("s1"))
    done = frames[-1]
    assert done["type"] == "chat.done", done
    assert done["usage"]["completion_tokens"] == 1
    # recorded for the tenant, without a key, naming the user
    record = wait_for_record(done["request_id"])
    assert record.tenant_id == gw.tenant.pk
    assert record.key_id is None
    assert record.key_prefix == f"user:{user.pk}"
    assert record.completion_tokens == 1


def test_session_with_several_tenants_chooses_one(gw):
    user = MembershipFactory(tenant=gw.tenant, user=UserFactory(is_staff=False)).user
    MembershipFactory(tenant=TenantFactory(name="beta"), user=user)
    with ws_connect(gw.url, cookie=session_cookie(user)) as ws:
        required = recv(ws)
        assert required["type"] == "auth.required"
        assert required["tenants"] == ["acme", "beta"]
        send(ws, {"type": "chat.request", "id": "early", "model": "gpt-4o-mini", "messages": USER})
        assert recv(ws)["error"]["code"] == "unauthenticated"
        send(ws, {"type": "auth", "tenant": "acme"})
        ok = recv(ws)
        assert ok["type"] == "auth.ok"
        assert ok["tenant"] == "acme"
        send(ws, {"type": "chat.request", "id": "s2", "model": "gpt-4o-mini", "messages": USER})
        assert recv_until(ws, done_or_error("s2"))[-1]["type"] == "chat.done"


def test_session_cannot_choose_a_tenant_it_does_not_belong_to(gw):
    user = MembershipFactory(tenant=gw.tenant, user=UserFactory(is_staff=False)).user
    TenantFactory(name="other")
    with ws_connect(gw.url, cookie=session_cookie(user)) as ws:
        assert recv(ws)["type"] == "auth.ok"
        send(ws, {"type": "auth", "tenant": "other"})
        frame = recv(ws)
        assert frame["error"]["code"] == "tenant_forbidden"
        assert close_code(ws) == 4403


# --- streams -------------------------------------------------------------------------


def test_two_streams_interleave_on_one_socket_and_both_complete(gw, slow_upstream):
    with ws_connect(gw.url) as ws:
        authenticate(ws, gw.key.secret)
        for rid in ("a", "b"):
            send(ws, {"type": "chat.request", "id": rid, "model": "slow-model", "messages": USER})
        frames = []
        done = {}
        deadline = time.monotonic() + 15
        while len(done) < 2 and time.monotonic() < deadline:
            frame = recv(ws)
            frames.append(frame)
            if frame["type"] in ("chat.done", "error"):
                done[frame["id"]] = frame
    assert {d["type"] for d in done.values()} == {"chat.done"}, done
    order = [f["id"] for f in frames if f["type"] == "chat.delta"]
    # 20 words each (plus the role delta); the ids alternate many times, not a then b.
    assert order.count("a") == order.count("b") == 21
    switches = sum(1 for x, y in itertools.pairwise(order) if x != y)
    assert switches >= 10, order
    for rid in ("a", "b"):
        text = "".join(
            f["delta"].get("content", "")
            for f in frames
            if f.get("id") == rid and f["type"] == "chat.delta"
        )
        assert text == "".join(f"w{i} " for i in range(20))
        assert done[rid]["usage"]["completion_tokens"] == 20
        assert done[rid]["cost_usd"] is not None


def test_cancel_stops_upstream_and_accounts_the_partial_answer(gw, slow_upstream):
    slow_upstream.stream_delay, slow_upstream.stream_chunks = 0.1, 100  # a 10 s answer
    admin = UserFactory(is_superuser=True)
    with (
        ws_connect(gw.url, LIVE_PATH, cookie=session_cookie(admin)) as feed,
        ws_connect(gw.url) as ws,
    ):
        assert recv(feed)["type"] == "live.hello"
        authenticate(ws, gw.key.secret)
        send(ws, {"type": "chat.request", "id": "long", "model": "slow-model", "messages": USER})
        received = recv_until(
            ws, lambda f: f["type"] == "chat.delta" and "w2" in f["delta"].get("content", "")
        )
        send(ws, {"type": "chat.cancel", "id": "long"})
        frames = recv_until(ws, done_or_error("long"), timeout=5)
        done = frames[-1]
        # cancelling again, or an unknown id, is harmless
        send(ws, {"type": "chat.cancel", "id": "long"})
        send(ws, {"type": "ping", "id": 1})
        assert recv(ws) == {"type": "pong", "id": 1}

        assert done["type"] == "chat.done", done
        assert done["finish_reason"] == "cancelled"
        streamed = len([f for f in received + frames if f["type"] == "chat.delta"]) - 1
        usage = done["usage"]
        assert usage["estimated"] is True
        assert 3 <= streamed <= usage["completion_tokens"] < 100
        assert usage["prompt_tokens"] > 0
        assert float(done["cost_usd"]) > 0
        assert slow_upstream.wait_for(lambda: slow_upstream.disconnects == 1, timeout=5)
        assert slow_upstream.completed_streams == 0

        # request_finished saw the same partial usage: the live feed publishes what it got.
        events = []
        recv_until(
            feed,
            lambda f: any(
                e["request_id"] == done["request_id"] and not events.append(e)
                for e in f.get("events", [])
            ),
            timeout=5,
        )
    event = events[0]
    assert event["status"] == 499
    assert event["error_code"] == "client_cancelled"
    assert event["completion_tokens"] == usage["completion_tokens"]
    assert event["prompt_tokens"] == usage["prompt_tokens"]
    assert event["usage_estimated"] is True
    assert event["cost_usd"] is not None
    assert event["tenant"] == "acme"
    assert event["stream"] is True


def test_a_cancel_right_behind_its_request_still_ends_it_once(gw, slow_upstream):
    with ws_connect(gw.url) as ws:
        authenticate(ws, gw.key.secret)
        for i in range(5):
            send(
                ws, {"type": "chat.request", "id": f"q{i}", "model": "slow-model", "messages": USER}
            )
            send(ws, {"type": "chat.cancel", "id": f"q{i}"})
        send(ws, {"type": "ping", "id": "end"})
        finals = {}
        deadline = time.monotonic() + 10
        while len(finals) < 5 and time.monotonic() < deadline:
            frame = recv(ws)
            if frame["type"] in ("chat.done", "error"):
                assert frame["id"] not in finals, frame
                finals[frame["id"]] = frame
    assert sorted(finals) == [f"q{i}" for i in range(5)]
    assert {f["finish_reason"] for f in finals.values()} == {"cancelled"}


def test_malformed_frames_get_errors_and_other_streams_continue(gw, slow_upstream):
    with ws_connect(gw.url) as ws:
        authenticate(ws, gw.key.secret)
        send(ws, {"type": "chat.request", "id": "ok", "model": "slow-model", "messages": USER})
        recv_until(ws, lambda f: f["type"] == "chat.delta")
        send(ws, "{not json")
        send(ws, "[1, 2]")
        send(ws, {"type": "chat.explode", "id": "x"})
        send(ws, {"type": "chat.request", "id": "bad", "model": "gpt-4o-mini"})
        send(ws, {"type": "chat.request", "id": "ok", "model": "gpt-4o-mini", "messages": USER})
        send(ws, {"type": "chat.request", "id": "nomodel", "model": "no-such", "messages": USER})
        send(ws, {"type": "chat.request", "id": "", "model": "gpt-4o-mini", "messages": USER})
        # the duplicate's error names "ok" too; the stream's own end is its chat.done
        frames = recv_until(ws, lambda f: f["type"] == "chat.done", timeout=10)
    errors = [f for f in frames if f["type"] == "error"]
    assert [(e["id"], e["error"]["code"]) for e in errors] == [
        (None, "invalid_json"),
        (None, "invalid_json"),
        ("x", "unknown_type"),
        ("bad", "missing_required_parameter"),
        ("ok", "duplicate_id"),
        ("nomodel", "model_not_found"),
        ("", "invalid_id"),
    ]
    assert errors[5]["status"] == 404
    done = frames[-1]
    assert done["type"] == "chat.done"
    text = "".join(f["delta"].get("content", "") for f in frames if f["type"] == "chat.delta")
    assert text.endswith("w19 ")
    assert done["usage"]["completion_tokens"] == 20


def test_upstream_failure_mid_stream_is_an_error_frame(gw):
    with ws_connect(gw.url) as ws:
        authenticate(ws, gw.key.secret)
        send(ws, {"type": "chat.request", "id": "d", "model": "drop-model", "messages": USER})
        frames = recv_until(ws, done_or_error("d"))
    assert frames[-1]["type"] == "error"
    assert frames[-1]["error"]["type"] == "api_error"


def test_oversized_frame_closes_1009(gw, tuned):
    with ws_connect(tuned.url) as ws:
        authenticate(ws, gw.key.secret)
        send(
            ws,
            {
                "type": "chat.request",
                "id": "big",
                "model": "gpt-4o-mini",
                "messages": [{"role": "user", "content": "x" * 70_000}],
            },
        )
        frame = recv(ws)
        assert frame["error"]["code"] == "frame_too_large"
        assert close_code(ws) == 1009


def test_streams_per_socket_are_capped(gw, tuned, slow_upstream):
    with ws_connect(tuned.url) as ws:
        authenticate(ws, gw.key.secret)
        for rid in ("s1", "s2", "s3"):
            send(ws, {"type": "chat.request", "id": rid, "model": "slow-model", "messages": USER})
        refused = recv_until(ws, lambda f: f["type"] == "error")[-1]
        assert refused["id"] == "s3"
        assert refused["status"] == 429
        assert refused["error"]["code"] == "too_many_streams"
        done: set[str] = set()
        recv_until(
            ws,
            lambda f: f["type"] == "chat.done" and not done.add(f["id"]) and len(done) == 2,
            timeout=15,
        )
    assert done == {"s1", "s2"}


def test_idle_socket_closes_4000(gw, tuned):
    with ws_connect(tuned.url) as ws:
        authenticate(ws, gw.key.secret)
        started = time.monotonic()
        frame = recv(ws, timeout=6)
        assert frame["error"]["code"] == "idle_timeout"
        assert close_code(ws) == 4000
    assert 1.5 < time.monotonic() - started < 5


# --- backpressure --------------------------------------------------------------------


@dataclass
class EndlessOpenAI(FakeServer):
    """An OpenAI-format upstream that streams 16 KiB chunks until the reader leaves."""

    bytes_sent: int = 0
    name = "endless"
    chunk_content = "x" * 16384

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/chat/completions", self.chat)

    async def chat(self, request: web.Request) -> web.StreamResponse:
        await request.read()
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        event = {
            "id": "chatcmpl-endless",
            "object": "chat.completion.chunk",
            "created": 0,
            "model": "endless",
            "choices": [
                {"index": 0, "delta": {"content": self.chunk_content}, "finish_reason": None}
            ],
        }
        data = b"data: " + json.dumps(event).encode() + b"\n\n"
        try:
            while True:
                await response.write(data)
                self.bytes_sent += len(data)
                await asyncio.sleep(0)
        except (ConnectionResetError, asyncio.CancelledError):
            self.disconnects += 1
            raise


@pytest.fixture(scope="module")
def endless():
    server = EndlessOpenAI(api_key="sk-endless").start()
    yield server
    server.stop()


def test_memory_stays_bounded_when_the_client_stops_reading(gw, tuned, endless, record_property):
    provider = provider_create(
        name="endless", kind="openai", base_url=endless.base_url + "/v1", credential="sk-endless"
    )
    model = model_create(name="endless", input_price_per_million="1", output_price_per_million="2")
    deployment_create(model=model, provider=provider, upstream_model="endless")
    settle()
    pid = tuned.proc.pid
    # Warm the process up (imports, pools) so the baseline is honest.
    with ws_connect(tuned.url) as ws:
        authenticate(ws, gw.key.secret)
        send(ws, {"type": "chat.request", "id": "warm", "model": "gpt-4o-mini", "messages": USER})
        recv_until(ws, done_or_error("warm"))
    time.sleep(0.5)
    baseline = rss_kib(pid)

    client = RawWebSocket(tuned.url)
    client.send_json({"type": "auth", "api_key": gw.key.secret})
    client.send_json({"type": "chat.request", "id": "flood", "model": "endless", "messages": USER})
    samples, upstream = [], []
    for _ in range(8):  # 4 s, inside GATEWAY_WS_SEND_TIMEOUT=5
        time.sleep(0.5)
        samples.append(rss_kib(pid))
        upstream.append(endless.bytes_sent)
    peak_growth_mib = (max(samples) - baseline) / 1024
    record_property("rss_baseline_mib", round(baseline / 1024, 1))
    record_property("rss_peak_growth_mib", round(peak_growth_mib, 1))
    record_property("upstream_bytes_during_stall", upstream[-1])
    print(
        f"RSS baseline {baseline / 1024:.1f} MiB, peak growth {peak_growth_mib:.1f} MiB; "
        f"upstream sent {upstream[-1] / 2**20:.1f} MiB, of which {(upstream[-1] - upstream[3]) / 2**20:.2f} MiB "
        "in the last 2 s of the stall"
    )
    # The gateway stopped pulling from upstream once its buffers were full...
    assert upstream[-1] - upstream[3] < 1 * 2**20, upstream
    assert upstream[-1] < 64 * 2**20, upstream
    # ...so the process holds a bounded amount, not the stream.
    assert peak_growth_mib < 40, samples
    # And after GATEWAY_WS_SEND_TIMEOUT the slow reader is dropped and upstream released.
    assert endless.wait_for(lambda: endless.disconnects == 1, timeout=10)
    client.close()
