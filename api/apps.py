from django.apps import AppConfig


class ApiConfig(AppConfig):
    """The OpenAI-compatible API under /v1/ and the personal tokens that open it."""

    name = "api"
    verbose_name = "API"
    default_auto_field = "django.db.models.BigAutoField"
