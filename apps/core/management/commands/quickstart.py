"""One command from a fresh checkout to a running gateway with demo data."""

from __future__ import annotations

import secrets

from django.contrib.auth import get_user_model
from django.core.management import BaseCommand, call_command
from django.db import transaction

from apps.keys.models import ApiKey, Scope
from apps.keys.services import key_create
from apps.providers.models import Model, Provider
from apps.providers.services import deployment_create, model_create, provider_create
from apps.tenants.models import Role, Tenant
from apps.tenants.services import membership_set, tenant_create

DEMO_MODELS = [
    # name, upstream, description, input $/M, output $/M, context window, mode
    (
        "mock-small",
        "mock-small",
        "Fast demo chat model (built-in mock).",
        "0.15",
        "0.60",
        16_384,
        "chat",
    ),
    (
        "mock-large",
        "mock-large",
        "Slower, pricier demo chat model (built-in mock).",
        "2.50",
        "10.00",
        128_000,
        "chat",
    ),
    (
        "mock-embed",
        "mock-embed",
        "Demo embedding model (built-in mock).",
        "0.02",
        "0",
        8_192,
        "embedding",
    ),
]


class Command(BaseCommand):
    help = "Migrate, create an admin user and demo data (tenant, key, mock provider, models), then serve."

    def add_arguments(self, parser):
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8000)
        parser.add_argument(
            "--no-serve", action="store_true", help="Set up, print the details, and exit."
        )
        parser.add_argument("--admin-username", default="admin")

    def handle(self, *args, host: str, port: int, no_serve: bool, admin_username: str, **options):
        call_command("migrate", interactive=False, verbosity=0)
        lines = self._setup(admin_username)
        base = f"http://{host}:{port}"
        self.stdout.write(self.style.SUCCESS("\nLLM gateway is set up.\n"))
        for line in lines:
            self.stdout.write(line)
        self.stdout.write(
            f"\n  Admin:      {base}/admin/\n"
            f"  API docs:   {base}/api/docs/\n"
            f"  OpenAI API: {base}/v1  (models: mock-small, mock-large, mock-embed)\n"
            f'\n  curl {base}/v1/chat/completions -H "Authorization: Bearer $GATEWAY_KEY" '
            "-H 'Content-Type: application/json' \\\n"
            '    -d \'{"model": "mock-small", "messages": [{"role": "user", "content": "Hello"}]}\'\n'
        )
        if no_serve:
            return
        from daphne.cli import CommandLineInterface

        self.stdout.write(f"Serving on {base} with daphne (Ctrl-C to stop)…\n")
        self.stdout.flush()
        CommandLineInterface().run(
            ["-b", host, "-p", str(port), "gateway_project.asgi:application"]
        )

    @transaction.atomic
    def _setup(self, username: str) -> list[str]:
        lines: list[str] = []
        User = get_user_model()
        user = User.objects.filter(username=username).first()
        if user is None:
            password = secrets.token_urlsafe(12)
            user = User.objects.create_superuser(username=username, email="", password=password)
            lines.append(
                f"  Admin login:  {username} / {password}   (shown once; change it in the admin)"
            )
        else:
            lines.append(
                f"  Admin login:  {username} (password shown on the first run; "
                f"reset it with: python manage.py changepassword {username})"
            )
        tenant = Tenant.objects.filter(name="demo").first() or tenant_create(
            name="demo", display_name="Demo tenant"
        )
        membership_set(user=user, tenant=tenant, role=Role.OWNER)
        provider = Provider.objects.filter(
            tenant__isnull=True, name="mock"
        ).first() or provider_create(
            name="mock", kind="mock", options={"latency_ms": 120, "tokens_per_second": 60}
        )
        for name, upstream, description, inp, out, window, mode in DEMO_MODELS:
            if not Model.objects.filter(tenant__isnull=True, name=name).exists():
                model = model_create(
                    name=name,
                    description=description,
                    input_price_per_million=inp,
                    output_price_per_million=out,
                    context_window=window,
                    mode=mode,
                )
                deployment_create(model=model, provider=provider, upstream_model=upstream)
        if not ApiKey.objects.filter(tenant=tenant, name="demo-key").exists():
            created = key_create(
                tenant=tenant,
                name="demo-key",
                created_by=user,
                scopes=[Scope.INFERENCE, Scope.MANAGEMENT_READ, Scope.MANAGEMENT_WRITE],
            )
            lines.append(
                f"  Demo key:     {created.secret}   (tenant 'demo'; shown once, store it now)"
            )
            lines.append(f"                export GATEWAY_KEY={created.secret}")
        else:
            lines.append(
                "  Demo key:     'demo-key' exists (its secret was shown once); create more in the admin"
            )
        return lines
