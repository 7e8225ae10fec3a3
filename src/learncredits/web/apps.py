from django.apps import AppConfig


class WebConfig(AppConfig):
    name = "learncredits.web"
    label = "web"
