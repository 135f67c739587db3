from django.apps import AppConfig


class ProvidersConfig(AppConfig):
    name = "apps.providers"
    label = "providers"
    verbose_name = "Providers"

    def ready(self) -> None:
        from django.db.models.signals import post_save

        from apps.core.signals import watch_routing
        from apps.providers.models import Deployment, Model, Price, Provider
        from apps.providers.signals import model_saved

        post_save.connect(model_saved, sender=Model, dispatch_uid="providers-price-sync")
        watch_routing(Provider, Model, Deployment, Price)
