from django.apps import AppConfig


class BillingConfig(AppConfig):
    name = "learncredits.billing"
    label = "billing"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        """Plug billing's reactions into the outbox that credits writes (credits sits below
        billing and cannot call it). Imported here because the tasks need the models loaded."""
        from learncredits.billing import tasks
        from learncredits.credits import events

        events.react_to("auto_top_up.due", tasks.enqueue_auto_top_up)
