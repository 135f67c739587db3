"""The usage dashboard in a real browser: charts drawn, Chart.js served by us, no CDN."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

import pytest
from django.contrib.auth import get_user_model

from apps.billing.services import rollup_update
from tests.billing.factories import record, records
from tests.keys.factories import make_key
from tests.tenants.factories import TenantFactory

pytestmark = [pytest.mark.browser, pytest.mark.live]

PASSWORD = "a-long-admin-password-for-tests"
DAY = datetime(2025, 5, 6, tzinfo=UTC)
LOCAL_HOSTS = {"127.0.0.1", "localhost", "[::1]", "::1"}

CANVASES = (
    "chart-spend-model",
    "chart-spend-provider",
    "chart-spend-tenant",
    "chart-traffic",
    "chart-latency",
    "chart-ttft",
)

# For each canvas: is a Chart attached, and did it paint any pixel?
DRAWN = """
(ids) => ids.map((id) => {
  const canvas = document.getElementById(id);
  const chart = window.Chart && window.Chart.getChart(canvas);
  const ctx = canvas.getContext("2d");
  const pixels = ctx.getImageData(0, 0, canvas.width, canvas.height).data;
  let painted = 0;
  for (let i = 3; i < pixels.length; i += 4) { if (pixels[i] !== 0) { painted++; } }
  return {
    id, attached: !!chart, datasets: chart ? chart.data.datasets.length : 0,
    width: canvas.width, height: canvas.height, painted,
  };
})
"""


def test_dashboard_draws_its_charts_from_local_assets(page, live_url, tmp_path):
    get_user_model().objects.create_superuser("root", "root@example.com", PASSWORD)
    acme, beta = TenantFactory(name="acme"), TenantFactory(name="beta")
    key = make_key(acme, name="acme-prod").key
    records(
        *[
            record(
                acme if i % 3 else beta,
                key=key if i % 3 else None,
                created_at=DAY + timedelta(minutes=20 * i),
                model=("gpt-4o-mini", "claude-haiku")[i % 2],
                provider=("fake-openai", "fake-anthropic")[i % 2],
                cost_usd="0.0123",
                status=502 if i % 7 == 0 else 200,
                latency_ms=150.0 + 40 * i,
                ttft_ms=60.0 + 5 * i,
            )
            for i in range(60)
        ]
    )
    rollup_update()

    external: list[str] = []
    requested: list[str] = []

    def guard(route) -> None:
        url = route.request.url
        requested.append(url)
        host = urlsplit(url).hostname or ""
        if url.startswith(("data:", "blob:")) or host in LOCAL_HOSTS:
            route.continue_()
        else:
            external.append(url)
            route.abort()

    page.route("**/*", guard)

    page.goto(f"{live_url}/admin/login/?next=/admin/billing/dashboard/")
    page.fill("#id_username", "root")
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")
    page.wait_for_load_state()
    assert page.url.endswith("/admin/billing/dashboard/")

    page.goto(f"{live_url}/admin/billing/dashboard/?date_from=2025-05-06&date_to=2025-05-06")
    page.wait_for_selector("#billing-dashboard[data-charts-ready=true]", timeout=15_000)

    assert page.evaluate("typeof window.Chart") == "function"
    charts = page.evaluate(DRAWN, list(CANVASES))
    for chart in charts:
        assert chart["attached"], chart
        assert chart["datasets"] >= 1, chart
        assert chart["width"] > 0 and chart["height"] > 0, chart
        assert chart["painted"] > 100, chart  # axes, bars and lines, not a blank canvas

    spend = page.evaluate(
        "Chart.getChart(document.getElementById('chart-spend-model'))"
        ".data.datasets.map((d) => d.label).sort()"
    )
    assert spend == ["claude-haiku", "gpt-4o-mini"]
    assert page.locator("#total-requests").inner_text() == "60"
    assert "acme-prod" in page.locator("#top-keys").inner_text()

    chart_js = [u for u in requested if "chart.umd" in u]
    assert chart_js and all(
        urlsplit(u).path == "/static/vendor/chart.js/chart.umd.min.js" for u in chart_js
    )
    assert external == []

    # The page as a person sees it (pytest keeps tmp_path for a look when this fails).
    page.screenshot(path=str(tmp_path / "dashboard.png"), full_page=True)
