"""A person's own page: what they are told, and the batches they watch."""

from __future__ import annotations

from django import forms
from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods

from .. import services
from ..models import Batch, NotificationPreference
from .access import rule

WATCHED_SHOWN = 200


class ProfileForm(forms.Form):
    email = forms.EmailField(
        label="Email address",
        required=False,
        max_length=254,
        help_text="Where notifications go. Leave empty to receive no email.",
    )
    my_batches = forms.BooleanField(
        label="Batches I created", required=False, help_text="Email me when one of them ends."
    )
    watched = forms.BooleanField(
        label="Batches I watch",
        required=False,
        help_text="Email me when a batch I pressed Watch on ends.",
    )
    at_risk = forms.BooleanField(
        label="Batches at risk of expiring",
        required=False,
        help_text="Email me once when a batch I created or watch may not finish within its "
        "window (an estimate from its progress so far).",
    )

    SWITCHES = ("my_batches", "watched", "at_risk")


@rule()
@require_http_methods(["GET", "POST"])
def profile(request: HttpRequest) -> HttpResponse:
    user = request.user
    preference = NotificationPreference.of(user)
    if request.method == "POST":
        form = ProfileForm(request.POST)
        if form.is_valid():
            services.notification_preferences_save(user=user, **form.cleaned_data)
            messages.success(request, "Your notification settings are saved.")
            return redirect("profile")
        messages.error(request, "Nothing was saved: correct the field marked below.")
    else:
        form = ProfileForm(
            initial={
                "email": user.email,
                **{k: getattr(preference, k) for k in ProfileForm.SWITCHES},
            }
        )
    watched = (
        Batch.objects.visible_to(user)
        .filter(watches__user=user)
        .select_related("connection")
        .order_by("-watches__created_at")[:WATCHED_SHOWN]
    )
    context = {
        "form": form,
        "switches": [form[name] for name in ProfileForm.SWITCHES],
        "watched": watched,
    }
    return render(request, "batches/profile/profile.html", context)
