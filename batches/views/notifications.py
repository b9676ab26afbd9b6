"""Watching a batch: told by email when it ends."""

from __future__ import annotations

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_POST

from .. import roles
from ..services import notifications
from .access import rule
from .lookups import batch_for

# Watching is reading: whoever may read a batch may ask to be told when it ends.


@rule(roles.VIEW)
@require_POST
def batch_watch(request: HttpRequest, slug: str, openai_id: str) -> HttpResponse:
    """Start or stop watching: `watch=on` / `watch=off` (a repeated press changes nothing),
    anything else toggles. Back to the batch, or to `next` when it is a page of this site."""
    batch = batch_for(request.user, slug, openai_id)
    wanted = {"on": True, "off": False}.get(request.POST.get("watch", ""))
    if wanted is None:
        wanted = not batch.watches.filter(user=request.user).exists()
    if wanted and batch.is_terminal:
        messages.info(
            request,
            f"This batch has {batch.display_status()} already: there is nothing more to tell.",
        )
    else:
        watching = notifications.watch_set(user=request.user, batch=batch, watch=wanted)
        if not watching:
            messages.success(request, "You no longer watch this batch.")
        elif request.user.email:
            messages.success(
                request, f"You are watching this batch: {request.user.email} is told when it ends."
            )
        else:
            messages.warning(
                request,
                "You are watching this batch, but your account has no email address, so "
                "nothing can reach you: add one on your profile page (your name, top right).",
            )
    target = request.POST.get("next", "")
    if target and url_has_allowed_host_and_scheme(
        target, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return redirect(target)
    return redirect(batch.get_absolute_url())
