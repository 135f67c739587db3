"""One error hierarchy for every surface.

Each error knows its HTTP status and its OpenAI-style type and code; `/v1/*`, the
management API and the WebSocket consumer render the same body:
``{"error": {"message", "type", "param", "code"}}``.
"""

from __future__ import annotations

from typing import Any


class GatewayError(Exception):
    status: int = 500
    type: str = "api_error"
    code: str | None = None

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code
        self.headers = headers or {}

    def to_dict(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }


class InvalidRequest(GatewayError):
    status = 400
    type = "invalid_request_error"


class AuthenticationFailed(GatewayError):
    status = 401
    type = "authentication_error"
    code = "invalid_api_key"


class PermissionDenied(GatewayError):
    status = 403
    type = "permission_error"
    code = "permission_denied"


class NotFound(GatewayError):
    status = 404
    type = "not_found_error"
    code = "not_found"


class MethodNotAllowed(GatewayError):
    status = 405
    type = "invalid_request_error"
    code = "method_not_allowed"


class PayloadTooLarge(GatewayError):
    status = 413
    type = "invalid_request_error"
    code = "request_too_large"


class RateLimited(GatewayError):
    status = 429
    type = "rate_limit_error"
    code = "rate_limit_exceeded"


class BudgetExceeded(GatewayError):
    status = 429
    type = "insufficient_quota"
    code = "budget_exceeded"


class ContentBlocked(GatewayError):
    status = 400
    type = "invalid_request_error"
    code = "content_policy_violation"


class ProviderError(GatewayError):
    """Raised by provider adapters: says what the client sees and whether a retry may help.

    ``retryable`` is true for failures that another attempt (or another deployment)
    may not repeat: connection errors, timeouts, 408/429/5xx.
    """

    type = "api_error"

    def __init__(
        self,
        message: str,
        *,
        status: int = 502,
        retryable: bool = False,
        retry_after: float | None = None,
        code: str | None = "upstream_error",
        type: str | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message, param=param, code=code, headers=headers)
        self.status = status
        self.retryable = retryable
        self.retry_after = retry_after
        if type is not None:
            self.type = type


def upstream_unavailable(message: str) -> ProviderError:
    return ProviderError(message, status=503, retryable=True, code="upstream_unavailable")


def upstream_timeout(message: str) -> ProviderError:
    return ProviderError(message, status=504, retryable=True, code="upstream_timeout")
