"""The models and the migrations agree, and the team groups exist after migrating."""

import io

import pytest
from django.contrib.auth.models import Group
from django.core.management import call_command


@pytest.mark.django_db
def test_no_model_change_is_missing_a_migration():
    out = io.StringIO()
    call_command("makemigrations", "batches", "--check", "--dry-run", stdout=out)
    assert "No changes detected" in out.getvalue()


@pytest.mark.django_db
def test_migrating_creates_the_viewers_and_submitters_groups():
    submitters = Group.objects.get(name="Submitters")
    assert set(submitters.permissions.values_list("codename", flat=True)) == {
        "submit_batch",
        "cancel_batch",
    }
    assert not Group.objects.get(name="Viewers").permissions.exists()
