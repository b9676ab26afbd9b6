"""A person's own page: what they are told, and the batches they watch; and the link that
verifies a new email address (an address typed here counts once that link is opened)."""

from __future__ import annotations

from django import forms
from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods

from ..models import Batch, NotificationPreference
from ..services import addresses, notifications
from .access import rule
from .failures import shown

WATCHED_SHOWN = 200


class ProfileForm(forms.Form):
    email = forms.EmailField(
        label="Email address",
        required=False,
        max_length=254,
        help_text="Where notifications go. A new address counts once you open the link "
        "emailed to it. Leave empty to receive no email.",
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
        action = request.POST.get("action", "")
        if action == "cancel-email":
            if addresses.email_change_cancel(user=user):
                messages.success(request, "The change of address is cancelled.")
            return redirect("profile")
        if action == "verify-email" and user.email:
            _say_requested(request, addresses.email_link_send(user=user, address=user.email), "")
            return redirect("profile")
        form = ProfileForm(request.POST)
        if form.is_valid():
            data = form.cleaned_data
            switches = {name: data[name] for name in ProfileForm.SWITCHES}
            notifications.notification_preferences_save(user=user, **switches)
            requested = addresses.email_change_request(user=user, address=data["email"])
            _say_requested(request, requested, "Your notification settings are saved.")
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
    record = addresses.email_record(user=user)
    context = {
        "form": form,
        "switches": [form[name] for name in ProfileForm.SWITCHES],
        "watched": watched,
        "pending_email": record.pending if record else "",
        "email_trusted": addresses.email_trusted(user=user),
    }
    return render(request, "batches/profile/profile.html", context)


def _say_requested(request: HttpRequest, requested: str, saved: str) -> None:
    """What became of the address asked for, said after SAVED (what else the form did)."""
    record = addresses.email_record(user=request.user)
    pending = record.pending if record else ""
    level, text = messages.SUCCESS, ""
    if requested == "removed":
        text = "Your account has no email address now: nothing is emailed to you."
    elif requested == "sent" and pending.lower() == (request.user.email or "").lower():
        text = f"We emailed a link to {pending}: open it within {_hours()} hours to verify it."
    elif requested == "sent":
        text = (
            f"We emailed a link to {pending}: notifications go there once you open it (within "
            f"{_hours()} hours)."
        )
        if request.user.email:
            text += f" Until then they go to {request.user.email}."
    elif requested == "too_soon":
        level = messages.INFO
        text = f"A link was emailed to {pending} less than a minute ago: open it from there."
    elif requested == "not_sent":
        level = messages.ERROR
        text = (
            f"The link to {pending} could not be emailed: the mail server did not take it. "
            "Your address is unchanged; try again later, or ask your batchweb admin."
        )
    messages.add_message(request, level, " ".join(part for part in (saved, text) if part))


def _hours() -> int:
    return int(addresses.LINK_MAX_AGE.total_seconds() // 3600)


@rule()
@require_http_methods(["GET", "POST"])
def profile_email_verify(request: HttpRequest, signed: str) -> HttpResponse:
    """The link emailed to a new address: opening it asks to confirm (a mail scanner that
    fetches it changes nothing), the button makes the address the account's. Only for the
    account it was sent for; a bad, expired or used link changes nothing."""
    with shown(request):
        if request.method == "POST":
            address = addresses.email_change_verify(user=request.user, token=signed)
            messages.success(request, f"Your email address is now {address}: it is verified.")
            return redirect("profile")
        address = addresses.email_link_check(user=request.user, token=signed)
        return render(request, "batches/profile/email_confirm.html", {"address": address})
    return redirect("profile")
