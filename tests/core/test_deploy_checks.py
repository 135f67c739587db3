"""`manage.py check --deploy` is clean with production settings, and weak settings refuse to start."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT


def run_manage(*args: str, **env: str) -> subprocess.CompletedProcess:
    base = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("GATEWAY_") and k not in ("SECRET_KEY", "DEBUG")
    }
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


PRODUCTION = {
    "DEBUG": "false",
    "SECRET_KEY": "x7#p2Lq9vR!mZ4tW8yB1nK6cF3hJ0sD5gA-eU_oI+rT.wQ@v9Zk3Lm7Np",
    "ALLOWED_HOSTS": "gateway.example.com",
    "GATEWAY_HTTPS": "true",
}


def test_check_deploy_reports_nothing():
    result = run_manage("check", "--deploy", "--fail-level", "WARNING", **PRODUCTION)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


@pytest.mark.parametrize("secret", ["short", "django-insecure-" + "a" * 50])
def test_weak_secret_key_refuses_to_start(secret):
    result = run_manage("check", **{**PRODUCTION, "SECRET_KEY": secret})
    assert result.returncode != 0
    assert "SECRET_KEY" in result.stderr
