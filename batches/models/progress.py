"""The history of a running batch's request counts, as the worker saw them: what finish-time
estimates are made from (see services/estimates.py)."""

from __future__ import annotations

from django.db import models

from .batches import Batch


class ProgressSnapshot(models.Model):
    """The request counts of a batch at one moment. Written when a cached running batch's counts
    or status change (not on every refresh); thinned by the worker once the batch has ended."""

    batch = models.ForeignKey(Batch, on_delete=models.CASCADE, related_name="progress_snapshots")
    at = models.DateTimeField()
    completed = models.IntegerField(null=True, blank=True)
    failed = models.IntegerField(null=True, blank=True)
    total = models.IntegerField(null=True, blank=True)

    class Meta:
        ordering = ("at", "id")
        indexes = [
            models.Index(fields=["batch", "at"], name="progress_batch_at"),
            # The worker's housekeeping deletes old snapshots by age.
            models.Index(fields=["at"], name="progress_at"),
        ]

    def __str__(self) -> str:
        return f"{self.batch_id} at {self.at:%Y-%m-%d %H:%M:%S}: {self.done}/{self.total}"

    @property
    def done(self) -> int:
        return (self.completed or 0) + (self.failed or 0)
