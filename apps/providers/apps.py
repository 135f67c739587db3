from django.apps import AppConfig


class ProvidersConfig(AppConfig):
    name = "apps.providers"
    label = "providers"
    verbose_name = "Providers"

    def ready(self) -> None:
        from django.db.models.signals import post_delete, post_save

        from apps.core.services import config_changed
        from apps.providers.models import Deployment, Model, Price, Provider
        from apps.providers.services import price_sync_from_model

        def changed(**kwargs: object) -> None:
            config_changed()

        def model_saved(instance: Model, raw: bool = False, **kwargs: object) -> None:
            if not raw:
                price_sync_from_model(model=instance)

        post_save.connect(model_saved, sender=Model, dispatch_uid="price-sync")
        for model in (Provider, Model, Deployment, Price):
            post_save.connect(changed, sender=model, dispatch_uid=f"routing-save-{model.__name__}")
            post_delete.connect(
                changed, sender=model, dispatch_uid=f"routing-delete-{model.__name__}"
            )
