"""The profile page's API tokens section, rendered by the api app (the page belongs to
batches, which knows nothing of tokens)."""

from __future__ import annotations

from typing import Any

from django import template
from django.utils import timezone

from ..models import ApiToken
from ..token_views import TokenForm

register = template.Library()

SHOWN = 50


@register.inclusion_tag("api/tokens_section.html", takes_context=True)
def api_tokens_section(context: dict[str, Any]) -> dict[str, Any]:
    request = context["request"]
    user = request.user
    tokens = list(ApiToken.objects.filter(user=user)[:SHOWN])
    now = timezone.now()
    return {
        "request": request,
        "csrf_token": context.get("csrf_token"),
        "rows": [(t, t.state(now=now)) for t in tokens],
        "form": TokenForm(user=user),
        "base_url": request.build_absolute_uri("/v1"),
    }
