from django.conf import settings
from django.http import HttpRequest
from django.utils.functional import SimpleLazyObject

from .models import Connection, SyncState


def dashboard(request: HttpRequest) -> dict:
    """The freshness line and banners every page shows to signed-in people: one line part and
    one outage banner per connection they may see. Read when a template first shows them, so
    a page's body (drawn apart from its frame, batches/cache/pages.py) costs no query for
    them."""
    if not getattr(request, "user", None) or not request.user.is_authenticated:
        return {"demo_mode": settings.BATCHWEB_DEMO}
    found = getattr(request, "_bw_dashboard", None)
    if found is None:  # once a request: a page drawn in parts (page_cache) asks more than once
        states = SimpleLazyObject(lambda: _sync_states(request))
        found = request._bw_dashboard = {
            "sync_states": states,
            "failing_states": SimpleLazyObject(lambda: [s for s in states if s.is_failing]),
            "demo_mode": settings.BATCHWEB_DEMO,
        }
    return found


def _sync_states(request: HttpRequest) -> list[SyncState]:
    """One per connection the person may see, in name order; a connection never synced has
    an unsaved one."""
    connections = [
        c
        for c in Connection.objects.listed_to(request.user)
        if c.enabled and not (c.from_settings and not settings.OPENAI_API_KEY)
    ]
    states = {s.connection_id: s for s in SyncState.objects.filter(connection__in=connections)}
    return [states.get(c.pk) or SyncState(connection=c) for c in connections]
