"""The two team roles: Viewers may look, Submitters may also create and cancel batches."""

from django.db import migrations

GROUPS = {
    "Viewers": [],
    "Submitters": ["submit_batch", "cancel_batch"],
}


def create_groups(apps, schema_editor):
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    ContentType = apps.get_model("contenttypes", "ContentType")
    batch_type, _ = ContentType.objects.get_or_create(app_label="batches", model="batch")
    names = {
        "submit_batch": "Can create batches upstream",
        "cancel_batch": "Can cancel batches upstream",
    }
    for group_name, codenames in GROUPS.items():
        group, _ = Group.objects.get_or_create(name=group_name)
        for codename in codenames:
            permission, _ = Permission.objects.get_or_create(
                content_type=batch_type, codename=codename, defaults={"name": names[codename]}
            )
            group.permissions.add(permission)


def remove_groups(apps, schema_editor):
    apps.get_model("auth", "Group").objects.filter(name__in=GROUPS).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("batches", "0001_initial"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]

    operations = [migrations.RunPython(create_groups, remove_groups)]
