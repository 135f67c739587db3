"""Attribution holds on the real server: under ASGI, Django runs the middleware and the
view in worker threads, and the audit context must still reach the change."""

from __future__ import annotations

import httpx
import pytest

from apps.audit.models import AuditEvent
from tests.keys.factories import make_key
from tests.tenants.factories import TenantFactory

pytestmark = pytest.mark.live


def test_api_changes_on_the_live_server_name_the_key(live_url):
    tenant = TenantFactory(name="acme")
    manager = make_key(tenant, name="automation", scopes=["management:write"])
    headers = {"Authorization": f"Bearer {manager.secret}", "X-Request-ID": "live-audit-1"}
    with httpx.Client(base_url=live_url, headers=headers, timeout=10) as api:
        created = api.post("/api/v1/keys/", json={"name": "ci", "tenant": tenant.pk})
        assert created.status_code == 201, created.text
        pk = created.json()["id"]
        assert api.patch(f"/api/v1/keys/{pk}/", json={"rpm": 5}).status_code == 200
        # A second caller right after: nothing of the first request's context lingers.
        anonymous = httpx.get(f"{live_url}/api/v1/keys/", timeout=10)
        assert anonymous.status_code == 401

    trail = list(AuditEvent.objects.filter(object_id=str(pk)).order_by("id"))
    assert [(e.action, e.actor, e.source) for e in trail] == [
        ("create", f"key:{manager.key.prefix}", "api"),
        ("update", f"key:{manager.key.prefix}", "api"),
    ]
    assert all(e.tenant_id == tenant.pk and e.request_id == "live-audit-1" for e in trail)
    assert trail[0].ip == "127.0.0.1"
