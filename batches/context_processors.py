from django.conf import settings
from django.http import HttpRequest

from .models import SyncState


def dashboard(request: HttpRequest) -> dict:
    """The freshness line and banners every page shows to signed-in people."""
    if not getattr(request, "user", None) or not request.user.is_authenticated:
        return {"demo_mode": settings.BATCHWEB_DEMO}
    return {
        "sync_state": SyncState.get(),
        "demo_mode": settings.BATCHWEB_DEMO,
        "upstream_url": settings.OPENAI_BASE_URL,
    }
