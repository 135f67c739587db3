"""Crossing a budget's soft limit raises one alert per period: an admin notice and a signed
webhook."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, HTTPServer

import httpx
import pytest

from apps.billing.models import BudgetAlert
from apps.billing.services import budget_set
from apps.providers.services import deployment_create, model_create
from tests.conftest import settle

pytestmark = pytest.mark.live

WEBHOOK_SECRET = "whk-secret-0123456789"


@pytest.fixture
def receiver():
    received: list[tuple[dict, bytes]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append(({k.lower(): v for k, v in self.headers.items()}, body))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hook", received
    server.shutdown()


def test_soft_limit_alerts_once_with_a_signed_webhook(gw, receiver, celery_worker):
    # with a broker the alert is a Celery task on a real worker; without, it runs in process
    url, received = receiver
    model = model_create(name="metered", input_price_per_million="0", output_price_per_million="1")
    deployment_create(model=model, provider=gw.mock, upstream_model="metered")
    budget = budget_set(
        tenant=gw.tenant,
        period="monthly",
        limit_usd=Decimal("0.0001"),
        soft_limit_pct=50,
        webhook_url=url,
        webhook_secret=WEBHOOK_SECRET,
    )
    settle()
    body = {"model": "metered", "messages": [{"role": "user", "content": "go"}], "max_tokens": 20}
    statuses = [
        httpx.post(gw.base_url + "/chat/completions", headers=gw.headers, json=body).status_code
        for _ in range(4)
    ]
    assert statuses[:3] == [200, 200, 200]  # 3 x $0.00002 = 60% of the budget
    deadline = time.monotonic() + 10
    while not received and time.monotonic() < deadline:
        time.sleep(0.1)
    assert len(received) == 1
    headers, raw = received[0]
    payload = json.loads(raw)
    assert payload["type"] == "budget.soft_limit_reached" and payload["tenant"] == gw.tenant.name
    expected = hmac.new(
        WEBHOOK_SECRET.encode(),
        headers["x-gateway-timestamp"].encode() + b"." + raw,
        hashlib.sha256,
    ).hexdigest()
    assert headers["x-gateway-signature"] == f"v1={expected}"
    alert = BudgetAlert.objects.get(budget=budget)
    assert alert.level == "soft" and alert.webhook_status == "HTTP 204"
    assert Decimal(payload["spent_usd"]) >= Decimal("0.00005")
    # the admin notice is the alert row, shown in the admin
    from django.contrib.auth import get_user_model
    from django.test import Client

    admin = get_user_model().objects.create_superuser("boss", "b@example.com", "pw-0123456789")
    client = Client()
    client.force_login(admin)
    assert gw.tenant.name in client.get("/admin/billing/budgetalert/").content.decode()
