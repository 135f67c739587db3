"""DRF's exception handler, rendering errors in the same shape as `/v1/*`."""

from __future__ import annotations

import logging
from typing import Any

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import Http404
from rest_framework import exceptions, status
from rest_framework.response import Response

from apps.core.errors import GatewayError

logger = logging.getLogger("gateway.api")

_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    409: "invalid_request_error",
    413: "invalid_request_error",
    415: "invalid_request_error",
    429: "rate_limit_error",
}


def _first_field_error(detail: Any, prefix: str = "") -> tuple[str | None, str]:
    if isinstance(detail, dict):
        for key, value in detail.items():
            name = key if key != "non_field_errors" else ""
            param = f"{prefix}.{name}" if prefix and name else (name or prefix)
            return _first_field_error(value, param)
    if isinstance(detail, list) and detail:
        return _first_field_error(detail[0], prefix)
    return (prefix or None), str(detail)


def error_body(*, message: str, type: str, param: str | None, code: str | None) -> dict:
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def exception_handler(exc: Exception, context: dict) -> Response | None:
    if isinstance(exc, GatewayError):
        return Response(exc.to_dict(), status=exc.status, headers=exc.headers)
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied()
    elif isinstance(exc, DjangoValidationError):
        exc = exceptions.ValidationError(
            exc.message_dict if hasattr(exc, "error_dict") else exc.messages
        )
    if not isinstance(exc, exceptions.APIException):
        # Anything unexpected still answers in the API's shape, never an HTML page.
        logger.exception("unhandled error in the management API", exc_info=exc)
        return Response(
            error_body(
                message="The gateway hit an internal error; it has been logged.",
                type="api_error",
                param=None,
                code="internal_error",
            ),
            status=500,
        )
    status_code = exc.status_code
    if isinstance(exc, exceptions.ValidationError):
        param, message = _first_field_error(exc.detail)
        body = error_body(
            message=f"{param}: {message}" if param else message,
            type="invalid_request_error",
            param=param,
            code="invalid_value",
        )
        body["error"]["details"] = exc.detail
    else:
        code = exc.get_codes() if isinstance(exc.get_codes(), str) else None
        body = error_body(
            message=str(exc.detail),
            type=_TYPES.get(status_code, "api_error"),
            param=None,
            code=code,
        )
    headers = {}
    if getattr(exc, "wait", None):
        headers["Retry-After"] = str(int(exc.wait))
    if status_code == status.HTTP_401_UNAUTHORIZED:
        headers["WWW-Authenticate"] = 'Bearer realm="api"'
    return Response(body, status=status_code, headers=headers)
