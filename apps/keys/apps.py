from django.apps import AppConfig


class KeysConfig(AppConfig):
    name = "apps.keys"
    label = "keys"
    verbose_name = "API keys"

    def ready(self) -> None:
        from apps.core.signals import watch_routing
        from apps.keys.models import ApiKey
        from apps.tenants.models import Membership, Tenant

        watch_routing(ApiKey, Tenant, Membership)

        from apps.billing.recorder import recorder
        from apps.keys.usage import keys_touch

        recorder.on_written(keys_touch)
