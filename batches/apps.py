from django.apps import AppConfig
from django.conf import settings
from django.core import checks


class BatchesConfig(AppConfig):
    name = "batches"
    verbose_name = "Batches"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        checks.register(check_openai_settings, checks.Tags.compatibility)


def check_openai_settings(app_configs=None, **kwargs) -> list[checks.CheckMessage]:
    """Warn at start-up about upstream settings that would make every call fail."""
    messages: list[checks.CheckMessage] = []
    if not settings.OPENAI_API_KEY:
        messages.append(
            checks.Warning(
                "OPENAI_API_KEY is not set: calls to the OpenAI API will be refused.",
                hint="Set OPENAI_API_KEY in the environment or in .env, or run `make run` "
                "without it to try batchweb against its built-in simulator.",
                id="batches.W001",
            )
        )
    base = settings.OPENAI_BASE_URL
    if not base.startswith(("http://", "https://")):
        messages.append(
            checks.Error(
                f"OPENAI_BASE_URL must start with http:// or https:// (it is {base!r}).",
                hint="For example https://api.openai.com/v1",
                id="batches.E001",
            )
        )
    elif base.startswith("http://") and not _is_loopback(base):
        messages.append(
            checks.Warning(
                "OPENAI_BASE_URL uses plain http to a remote host: "
                "the API key would travel unencrypted.",
                hint="Use https:// for any server that is not on this machine.",
                id="batches.W002",
            )
        )
    return messages


def _is_loopback(url: str) -> bool:
    from urllib.parse import urlsplit

    host = urlsplit(url).hostname or ""
    return host in ("localhost", "::1") or host.startswith("127.")
