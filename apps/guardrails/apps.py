from django.apps import AppConfig


class GuardrailsConfig(AppConfig):
    name = "apps.guardrails"
    label = "guardrails"
    verbose_name = "Guardrails"

    def ready(self) -> None:
        from apps.core.signals import watch_routing
        from apps.guardrails.models import Policy

        watch_routing(Policy)
