# Issue 19 (connection restrictions fail closed, admin changes keep their connection):
# - Connection.restricted: set on every connection that has groups now, so that losing its
#   last group later leaves it to Admins instead of opening it to everyone;
# - audit entries of admin-site changes to capacity limits and channels get the connection
#   they belong to, found through Django's admin log (same person, same object, within a few
#   seconds) while the object still exists; the Activity page then hides them from people who
#   cannot see that connection. Entries whose object is gone keep no connection.

import datetime as dt

from django.db import migrations, models

ADMIN_FLAGS = {"admin_add": 1, "admin_change": 2, "admin_delete": 3}
# The audit entry's target is "<verbose name> <str(obj)>" (batches/admin_audit.py).
TARGETS = {"capacity limit ": "capacitylimit", "channel ": "channel"}
NEAR = dt.timedelta(seconds=10)


def mark_restricted(apps, schema_editor):
    Connection = apps.get_model("batches", "Connection")
    through = Connection.groups.through
    with_groups = through.objects.values("connection_id")
    Connection.objects.filter(pk__in=with_groups).update(restricted=True)


def connect_admin_entries(apps, schema_editor):
    Event = apps.get_model("batches", "Event")
    LogEntry = apps.get_model("admin", "LogEntry")
    ContentType = apps.get_model("contenttypes", "ContentType")
    CapacityLimit = apps.get_model("batches", "CapacityLimit")
    Channel = apps.get_model("batches", "Channel")
    Connection = apps.get_model("batches", "Connection")
    types = {
        model: ContentType.objects.filter(app_label="batches", model=model).first()
        for model in TARGETS.values()
    }
    entries = Event.objects.filter(
        action__in=list(ADMIN_FLAGS), connection__isnull=True, user__isnull=False
    ).filter(
        models.Q(target__startswith="capacity limit ") | models.Q(target__startswith="channel ")
    )
    for event in entries.iterator():
        prefix = next(p for p in TARGETS if event.target.startswith(p))
        kind = types[TARGETS[prefix]]
        if kind is None:
            continue
        logged = (
            LogEntry.objects.filter(
                content_type=kind,
                user_id=event.user_id,
                action_flag=ADMIN_FLAGS[event.action],
                object_repr=event.target[len(prefix) :][:200],
                action_time__gte=event.at - NEAR,
                action_time__lte=event.at + NEAR,
            )
            .order_by("action_time")
            .first()
        )
        if logged is None or not str(logged.object_id).isdigit():
            continue
        pk = int(logged.object_id)
        if kind.model == "capacitylimit":
            connection_id = (
                CapacityLimit.objects.filter(pk=pk).values_list("connection_id", flat=True).first()
            )
        else:
            channel = Channel.objects.filter(pk=pk).first()
            connection_id = _channel_connection(Connection, channel) if channel else None
        if connection_id is not None:
            Event.objects.filter(pk=event.pk).update(connection_id=connection_id)


def _channel_connection(Connection, channel):
    """As batches/admin_audit.py: the one connection of a channel, or among several the first
    restricted one (none: the channel is about every connection)."""
    connections = list(channel.connections.all().order_by("name"))
    if len(connections) <= 1:
        return connections[0].pk if connections else None
    through = Connection.groups.through
    grouped = set(through.objects.values_list("connection_id", flat=True))
    closed = [c for c in connections if c.restricted or c.pk in grouped]
    return (closed or connections)[0].pk


class Migration(migrations.Migration):
    dependencies = [
        ("batches", "0016_strangers"),
        ("admin", "0003_logentry_add_action_flag_choices"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]

    operations = [
        migrations.AddField(
            model_name="connection",
            name="restricted",
            field=models.BooleanField(
                default=False,
                editable=False,
                help_text="Has been restricted to groups: with none left, only Admins see it.",
            ),
        ),
        migrations.AlterField(
            model_name="connection",
            name="groups",
            field=models.ManyToManyField(
                blank=True,
                help_text="Only members of these groups see and use this connection. None: "
                "everyone, unless it had groups before: then Admins only, until it is opened to "
                "everyone.",
                related_name="connections",
                to="auth.group",
            ),
        ),
        migrations.RunPython(mark_restricted, migrations.RunPython.noop),
        migrations.RunPython(connect_admin_entries, migrations.RunPython.noop),
    ]
