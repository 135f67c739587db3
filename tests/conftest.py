"""Shared fixtures: a live gateway process, a fake OpenAI upstream, and the data they use."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from apps.keys.services import CreatedKey
from apps.providers.models import Model, Provider
from apps.providers.services import deployment_create, model_create, provider_create
from apps.tenants.models import Tenant
from tests.fakes.openai_server import FakeOpenAI
from tests.keys.factories import make_key
from tests.tenants.factories import TenantFactory

ROOT = Path(__file__).resolve().parent.parent
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def database_url_for(settings_dict: dict) -> str:
    engine = settings_dict["ENGINE"]
    if engine.endswith("sqlite3"):
        return f"sqlite:///{settings_dict['NAME']}"
    if "postgresql" in engine:
        user = settings_dict.get("USER") or "postgres"
        host = settings_dict.get("HOST") or "127.0.0.1"
        port = settings_dict.get("PORT") or 5432
        return f"postgres://{user}@{host}:{port}/{settings_dict['NAME']}"
    raise RuntimeError(f"no live-server support for {engine}")


def wait_http(url: str, proc: subprocess.Popen | None = None, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            if httpx.get(url, timeout=1).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not come up in {timeout}s")


def server_env(**extra: str) -> dict[str, str]:
    from django.db import connection

    env = dict(os.environ)
    env.update(
        DATABASE_URL=database_url_for(connection.settings_dict),
        GATEWAY_CONFIG_POLL_SECONDS="0.1",
        GATEWAY_LOG_LEVEL="WARNING",
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


@dataclass
class ServerProcess:
    url: str
    proc: subprocess.Popen
    log: Path

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()

    def output(self) -> str:
        return self.log.read_text() if self.log.exists() else ""


def start_server(
    tmp_dir: Path, *, server: str = "uvicorn", name: str = "gateway", **env: str
) -> ServerProcess:
    port = free_port()
    log = tmp_dir / f"{name}-{port}.log"
    if server == "uvicorn":
        cmd = [
            sys.executable,
            "-m",
            "uvicorn",
            "gateway_project.asgi:application",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--log-level",
            "warning",
            "--no-access-log",
            "--no-proxy-headers",
        ]
    else:
        cmd = [
            sys.executable,
            "-m",
            "daphne",
            "-b",
            "127.0.0.1",
            "-p",
            str(port),
            "gateway_project.asgi:application",
        ]
    handle = log.open("w")
    proc = subprocess.Popen(
        cmd, cwd=ROOT, env=server_env(**env), stdout=handle, stderr=subprocess.STDOUT
    )
    server = ServerProcess(url=f"http://127.0.0.1:{port}", proc=proc, log=log)
    try:
        wait_http(server.url + "/healthz", proc)
    except RuntimeError:
        server.stop()
        raise RuntimeError(f"gateway did not start:\n{server.output()}")
    return server


@pytest.fixture(scope="session", autouse=True)
def clean_redis() -> None:
    """Start from an empty Redis database: limit and budget counters are keyed by ids that
    a fresh test database hands out again."""
    url = os.environ.get("REDIS_URL")
    if url:
        import redis

        redis.Redis.from_url(url).flushdb()


@pytest.fixture(scope="session")
def live_server_process(
    django_db_setup, django_db_blocker, tmp_path_factory
) -> Iterator[ServerProcess]:
    """One uvicorn process on the test database for the whole session."""
    server = start_server(tmp_path_factory.mktemp("live"))
    yield server
    server.stop()


@pytest.fixture
def live_url(live_server_process, transactional_db) -> str:
    """The live gateway's URL; data the test writes is committed, so the server sees it."""
    return live_server_process.url


@pytest.fixture(scope="session")
def fake_openai_server() -> Iterator[FakeOpenAI]:
    server = FakeOpenAI().start()
    yield server
    server.stop()


@dataclass
class Worker:
    proc: subprocess.Popen
    log: Path

    def output(self) -> str:
        return self.log.read_text() if self.log.exists() else ""


@pytest.fixture
def celery_worker(transactional_db, tmp_path) -> Iterator[Worker | None]:
    """A real Celery worker process when a broker is configured (tasks run in process
    otherwise, and this yields None)."""
    from django.conf import settings

    if not settings.CELERY_BROKER_URL:
        yield None
        return
    log = tmp_path / "worker.log"
    cmd = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "gateway_project",
        "worker",
        "--pool",
        "solo",
        "-Q",
        settings.CELERY_TASK_DEFAULT_QUEUE,
        "--loglevel",
        "warning",
        "--without-gossip",
        "--without-mingle",
    ]
    proc = subprocess.Popen(
        cmd, cwd=ROOT, env=server_env(), stdout=log.open("w"), stderr=subprocess.STDOUT
    )
    yield Worker(proc=proc, log=log)
    proc.terminate()
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.fixture
def fake_openai(fake_openai_server) -> FakeOpenAI:
    fake_openai_server.reset()
    return fake_openai_server


def settle() -> None:
    """Let live processes notice a configuration change (they poll every 0.1 s in tests)."""
    time.sleep(0.3)


def chromium_path() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def browser():
    """Headless Debian Chromium through Playwright; fails in CI when missing, skips elsewhere.

    Module-scoped: Playwright's sync API keeps an event loop in this thread while it runs,
    which would break later tests that start their own loop.
    """
    path = chromium_path()
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        path = None
    if path is None:
        if IN_CI:
            pytest.fail("chromium and playwright are required in CI")
        pytest.skip("chromium or playwright not installed")
    # The ORM calls tests make around Playwright are still plain synchronous calls.
    previous = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    try:
        with sync_playwright() as pw:
            instance = pw.chromium.launch(
                executable_path=path,
                args=[
                    "--headless",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-background-networking",
                ],
            )
            yield instance
            instance.close()
    finally:
        if previous is None:
            os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
        else:
            os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = previous


@pytest.fixture
def page(browser):
    context = browser.new_context()
    page = context.new_page()
    yield page
    context.close()


@dataclass
class Setup:
    url: str
    tenant: Tenant
    key: CreatedKey
    provider: Provider
    mock: Provider

    @property
    def base_url(self) -> str:
        return self.url + "/v1"

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key.secret}"}

    def add_model(
        self, name: str, upstream: str | None = None, *, provider: Provider | None = None, **fields
    ) -> Model:
        model = model_create(
            name=name, input_price_per_million="1.00", output_price_per_million="2.00", **fields
        )
        deployment_create(
            model=model, provider=provider or self.provider, upstream_model=upstream or name
        )
        settle()
        return model


@pytest.fixture
def gw(live_url, fake_openai) -> Setup:
    """A tenant with a key, an `openai` provider on the fake upstream, and a `mock` provider."""
    tenant = TenantFactory(name="acme")
    provider = provider_create(
        name="fake-openai",
        kind="openai",
        base_url=fake_openai.base_url,
        credential=fake_openai.api_key,
    )
    mock = provider_create(name="builtin-mock", kind="mock")
    setup = Setup(url=live_url, tenant=tenant, key=make_key(tenant), provider=provider, mock=mock)
    for name in ("gpt-4o-mini", "slow-model", "drop-model", "hang"):
        model = model_create(
            name=name,
            input_price_per_million="1.00",
            output_price_per_million="2.00",
            timeout_s=2.0 if name == "hang" else None,
        )
        deployment_create(model=model, provider=provider, upstream_model=name)
    embed = model_create(
        name="text-embedding-3-small", mode="embedding", input_price_per_million="0.02"
    )
    deployment_create(model=embed, provider=provider, upstream_model="text-embedding-3-small")
    settle()
    return setup
