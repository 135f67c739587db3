"""README command 1: `manage.py quickstart` brings up a working gateway on embedded defaults."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from openai import AsyncOpenAI, OpenAI

from tests.conftest import ROOT, free_port, wait_http

pytestmark = pytest.mark.live


def test_quickstart_serves_a_working_gateway(tmp_path: Path):
    port = free_port()
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("DATABASE_URL", "REDIS_URL", "CELERY_BROKER_URL")
    }
    env.update(GATEWAY_VAR_DIR=str(tmp_path / "var"), PYTHONUNBUFFERED="1")
    log = tmp_path / "quickstart.log"
    proc = subprocess.Popen(
        [sys.executable, "manage.py", "quickstart", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        wait_http(base + "/healthz", proc, timeout=60)
        output = log.read_text()
        password = re.search(r"Admin login:\s+admin / (\S+)", output).group(1)
        key = re.search(r"Demo key:\s+(gw-\S+)", output).group(1)
        assert (tmp_path / "var" / "gateway.sqlite3").exists()

        client = OpenAI(base_url=base + "/v1", api_key=key)
        assert {"mock-small", "mock-large"} <= {m.id for m in client.models.list()}
        answer = client.chat.completions.create(
            model="mock-small", messages=[{"role": "user", "content": "echo: hi"}]
        )
        assert answer.choices[0].message.content == "hi"
        streamed = "".join(
            c.choices[0].delta.content or ""
            for c in client.chat.completions.create(
                model="mock-large",
                messages=[{"role": "user", "content": "echo: streamed words"}],
                stream=True,
            )
            if c.choices
        )
        assert streamed == "streamed words"

        async def async_call() -> str:
            async with AsyncOpenAI(base_url=base + "/v1", api_key=key) as aclient:
                result = await aclient.chat.completions.create(
                    model="mock-small", messages=[{"role": "user", "content": "echo: async"}]
                )
                return result.choices[0].message.content

        assert asyncio.run(async_call()) == "async"

        # the printed admin login works, and the admin is served (DEBUG off, static via WhiteNoise)
        with httpx.Client(base_url=base, follow_redirects=True) as web:
            login = web.get("/admin/login/")
            token = web.cookies["csrftoken"]
            page = web.post(
                "/admin/login/?next=/admin/",
                data={
                    "username": "admin",
                    "password": password,
                    "csrfmiddlewaretoken": token,
                },
                headers={"Referer": base + "/admin/login/"},
            )
            assert page.status_code == 200 and page.url.path == "/admin/", page.url
            assert "log out" in page.text.lower()
            css = web.get("/static/admin/css/base.css")
            assert css.status_code == 200 and login.status_code == 200
    finally:
        proc.terminate()
        proc.wait(10)

    # a second run keeps the data and does not print the secrets again
    rerun = subprocess.run(
        [sys.executable, "manage.py", "quickstart", "--no-serve"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert rerun.returncode == 0, rerun.stderr
    assert key not in rerun.stdout and password not in rerun.stdout
