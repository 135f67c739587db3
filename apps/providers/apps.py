from django.apps import AppConfig


class ProvidersConfig(AppConfig):
    name = "apps.providers"
    label = "providers"
    verbose_name = "Providers"

    def ready(self) -> None:
        from django.db.models.signals import post_delete, post_save

        from apps.core.services import config_changed
        from apps.providers.models import Deployment, Model, Provider

        def changed(**kwargs: object) -> None:
            config_changed()

        for model in (Provider, Model, Deployment):
            post_save.connect(changed, sender=model, dispatch_uid=f"routing-save-{model.__name__}")
            post_delete.connect(
                changed, sender=model, dispatch_uid=f"routing-delete-{model.__name__}"
            )
