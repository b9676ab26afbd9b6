"""The four roles as groups, each with its permissions; labels and usernames for what the
previous release cached.

| group | may |
|---|---|
| Viewers | read, download, export |
| Submitters | also create and retry batches, and cancel their own |
| Operators | also cancel anyone's batch, press Sync now, change labels |
| Admins | everything, including connections and people (and the admin site) |
"""

from django.db import migrations

BATCH_PERMISSIONS = {
    "view_batch": "Can view batch",
    "submit_batch": "Can create and retry batches, and cancel their own",
    "cancel_batch": "Can cancel their own batches upstream",
    "cancel_any_batch": "Can cancel anyone's batch upstream",
    "sync_batches": "Can press Sync now",
    "manage_labels": "Can change the label of any batch",
}
VIEWER = ["view_batch"]
SUBMITTER = [*VIEWER, "submit_batch", "cancel_batch"]
OPERATOR = [*SUBMITTER, "cancel_any_batch", "sync_batches", "manage_labels"]
ROLES = {"Viewers": VIEWER, "Submitters": SUBMITTER, "Operators": OPERATOR}


def create_roles(apps, schema_editor):
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    ContentType = apps.get_model("contenttypes", "ContentType")
    batch_type, _ = ContentType.objects.get_or_create(app_label="batches", model="batch")
    for codename, name in BATCH_PERMISSIONS.items():
        Permission.objects.update_or_create(
            content_type=batch_type, codename=codename, defaults={"name": name}
        )
    for group_name, codenames in ROLES.items():
        group, _ = Group.objects.get_or_create(name=group_name)
        group.permissions.set(
            Permission.objects.filter(content_type=batch_type, codename__in=codenames)
        )
    # Admins: every permission of batchweb and auth. Those of models made in this same migrate
    # run exist only after it, so batches.roles.ensure_roles (after every migrate)
    # fills the group in.
    Group.objects.get_or_create(name="Admins")


def fill_labels_and_names(apps, schema_editor):
    Batch = apps.get_model("batches", "Batch")
    for batch in Batch.objects.exclude(metadata=None).only("pk", "metadata").iterator():
        meta = batch.metadata if isinstance(batch.metadata, dict) else {}
        label = str(meta.get("job") or meta.get("label") or meta.get("name") or "")[:512]
        if label:
            Batch.objects.filter(pk=batch.pk).update(label=label)
    Event = apps.get_model("batches", "Event")
    User = apps.get_model("auth", "User")
    for user in User.objects.filter(pk__in=Event.objects.values("user_id")):
        Event.objects.filter(user=user).update(username=user.username)


class Migration(migrations.Migration):
    dependencies = [("batches", "0006_team")]

    operations = [
        migrations.RunPython(create_roles, migrations.RunPython.noop),
        migrations.RunPython(fill_labels_and_names, migrations.RunPython.noop),
    ]
