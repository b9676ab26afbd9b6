from django.conf import settings
from django.http import HttpRequest

from .models import Connection, SyncState


def dashboard(request: HttpRequest) -> dict:
    """The freshness line and banners every page shows to signed-in people: one line part and
    one outage banner per connection they may see."""
    if not getattr(request, "user", None) or not request.user.is_authenticated:
        return {"demo_mode": settings.BATCHWEB_DEMO}
    found = getattr(request, "_bw_dashboard", None)
    if found is None:  # once a request: a page drawn in parts (page_cache) asks more than once
        found = request._bw_dashboard = _dashboard(request)
    return found


def _dashboard(request: HttpRequest) -> dict:
    connections = [
        c
        for c in Connection.objects.listed_to(request.user)
        if c.enabled and not (c.from_settings and not settings.OPENAI_API_KEY)
    ]
    states = {s.connection_id: s for s in SyncState.objects.filter(connection__in=connections)}
    sync_states = [
        states.get(c.pk) or SyncState(connection=c) for c in connections
    ]  # one per connection, in name order; a connection never synced has an unsaved one
    return {
        "sync_states": sync_states,
        "failing_states": [s for s in sync_states if s.is_failing],
        "demo_mode": settings.BATCHWEB_DEMO,
    }
