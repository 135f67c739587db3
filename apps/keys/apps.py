from django.apps import AppConfig


class KeysConfig(AppConfig):
    name = "apps.keys"
    label = "keys"
    verbose_name = "API keys"

    def ready(self) -> None:
        from django.db.models.signals import post_delete, post_save

        from apps.core.services import config_changed
        from apps.keys.models import ApiKey
        from apps.tenants.models import Tenant

        def changed(**kwargs: object) -> None:
            config_changed()

        for model in (ApiKey, Tenant):
            post_save.connect(changed, sender=model, dispatch_uid=f"keys-save-{model.__name__}")
            post_delete.connect(changed, sender=model, dispatch_uid=f"keys-delete-{model.__name__}")
