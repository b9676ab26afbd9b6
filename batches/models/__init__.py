"""batchweb's models: the connections it talks to, and the local cache of their batches with
the records batchweb keeps of its own. Import from here."""

from .audit import AuditLogIsAppendOnly, Event, EventQuerySet
from .batches import (
    CANCELLABLE_STATUSES,
    RUNNING_STATUSES,
    STATUS_RANK,
    TERMINAL_STATUSES,
    TIMESTAMP_FIELDS,
    TOKEN_KEY,
    USER_KEY,
    Batch,
    BatchQuerySet,
    BatchTally,
    ResultFile,
    ResultRow,
    Status,
    Submission,
    SyncState,
    label_choices,
    payload_counts,
    payload_id,
    unix_to_datetime,
)
from .capacity import CapacityLimit, CapacityWait
from .connections import (
    DEFAULT_SLUG,
    Access,
    AuthStyle,
    Connection,
    ConnectionKeyError,
    Dialect,
    access_for,
    default_connection,
    default_connection_id,
)
from .costs import PriceOverride
from .generation import CacheGeneration
from .identity import AccountEmail, CompanyIdentity
from .notifications import (
    Channel,
    NotificationPreference,
    Outbox,
    Watch,
    WebhookDelivery,
    WebhookRefusals,
)
from .progress import ProgressSnapshot
from .spend import SpendRollup

__all__ = [
    "CANCELLABLE_STATUSES",
    "DEFAULT_SLUG",
    "RUNNING_STATUSES",
    "STATUS_RANK",
    "TERMINAL_STATUSES",
    "TIMESTAMP_FIELDS",
    "TOKEN_KEY",
    "USER_KEY",
    "Access",
    "AccountEmail",
    "AuditLogIsAppendOnly",
    "AuthStyle",
    "Batch",
    "BatchQuerySet",
    "BatchTally",
    "CacheGeneration",
    "CapacityLimit",
    "CapacityWait",
    "Channel",
    "CompanyIdentity",
    "Connection",
    "ConnectionKeyError",
    "Dialect",
    "Event",
    "EventQuerySet",
    "NotificationPreference",
    "Outbox",
    "PriceOverride",
    "ProgressSnapshot",
    "ResultFile",
    "ResultRow",
    "SpendRollup",
    "Status",
    "Submission",
    "SyncState",
    "Watch",
    "WebhookDelivery",
    "WebhookRefusals",
    "access_for",
    "default_connection",
    "default_connection_id",
    "label_choices",
    "payload_counts",
    "payload_id",
    "unix_to_datetime",
]
