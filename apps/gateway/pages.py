"""HTML pages of the gateway: the chat page for frontends and the admin's live traffic.

Both are shells: the chat page talks to ``/ws/v1/chat/`` and the live page to
``/ws/admin/live/`` from their static scripts. No template renders model output.
"""

from __future__ import annotations

from django.contrib import admin
from django.contrib.admin.views.decorators import staff_member_required
from django.contrib.auth.views import LoginView
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.http import require_GET


def content_security_policy(request: HttpRequest) -> str:
    """Scripts and styles from our own origin only: an injected tag would not run."""
    host = request.get_host()
    return "; ".join(
        [
            "default-src 'self'",
            "script-src 'self'",
            "style-src 'self'",
            "img-src 'self' data:",
            f"connect-src 'self' ws://{host} wss://{host}",
            "object-src 'none'",
            "base-uri 'none'",
            "form-action 'self'",
            "frame-ancestors 'none'",
        ]
    )


@require_GET
def chat_page(request: HttpRequest) -> HttpResponse:
    user = request.user if request.user.is_authenticated else None
    response = render(
        request,
        "gateway/chat.html",
        {
            "session_user": user,
            "login_url": reverse("chat-login") + "?next=" + reverse("chat"),
        },
    )
    response["Content-Security-Policy"] = content_security_policy(request)
    response["Cache-Control"] = "no-store"
    return response


class ChatLoginView(LoginView):
    """Sign-in for tenant members who are not staff (the admin's login admits staff only)."""

    template_name = "gateway/chat_login.html"
    redirect_authenticated_user = True

    def get_default_redirect_url(self) -> str:
        return reverse("chat")


@staff_member_required
@require_GET
def live_traffic_page(request: HttpRequest) -> HttpResponse:
    context = {**admin.site.each_context(request), "title": "Live traffic"}
    return render(request, "admin/live_traffic.html", context)
