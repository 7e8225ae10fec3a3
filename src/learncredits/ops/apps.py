from django.apps import AppConfig


class OpsConfig(AppConfig):
    name = "learncredits.ops"
    label = "ops"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Registers the integer ``__in`` lookup that ignores values no column can hold.
        from learncredits.db import lookups  # noqa: F401
