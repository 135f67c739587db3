from django.apps import AppConfig


class BillingConfig(AppConfig):
    name = "apps.billing"
    label = "billing"
    verbose_name = "Billing"

    def ready(self) -> None:
        from apps.billing.models import Budget, ModelRateLimit
        from apps.core.signals import watch_routing

        watch_routing(Budget, ModelRateLimit)
