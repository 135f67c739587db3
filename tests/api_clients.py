"""Helpers shared by the management API tests."""

from __future__ import annotations

from rest_framework.test import APIClient


def session_client(user) -> APIClient:
    client = APIClient()
    client.force_login(user)
    return client


def key_client(secret: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    return client


def assert_error(response, status: int, **expected) -> dict:
    """The response has ``status`` and the error shape, with the ``expected`` fields."""
    assert response.status_code == status, response.content
    error = response.json()["error"]
    assert {"message", "type", "param", "code"} <= set(error)
    assert isinstance(error["message"], str) and error["message"]
    for name, value in expected.items():
        assert error[name] == value, error
    return error


def ids(response) -> set[int]:
    assert response.status_code == 200, response.content
    return {row["id"] for row in response.json()["results"]}
