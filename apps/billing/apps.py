from django.apps import AppConfig


class BillingConfig(AppConfig):
    name = "apps.billing"
    label = "billing"
    verbose_name = "Billing"

    def ready(self) -> None:
        from django.db.models.signals import post_delete, post_save

        from apps.billing.models import Budget, ModelRateLimit
        from apps.core.services import config_changed

        def changed(**kwargs: object) -> None:
            config_changed()

        for model in (Budget, ModelRateLimit):
            post_save.connect(changed, sender=model, dispatch_uid=f"billing-save-{model.__name__}")
            post_delete.connect(
                changed, sender=model, dispatch_uid=f"billing-delete-{model.__name__}"
            )
