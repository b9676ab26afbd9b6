"""Roll-ups of spend and tokens per day and per month, so the spend page reads a few thousand
small rows rather than every cached batch. Built by services/spend.py; pages never write them."""

from __future__ import annotations

from django.db import models

from .connections import Connection


class SpendRollup(models.Model):
    """The batches of one connection created in one period (a UTC day, or a calendar month),
    summed under one key of one dimension: all of them, a model, a person (their user id; ""
    for batches made elsewhere) or a label. A period's rows are replaced together; `stale`
    marks a period whose batches were deleted since, which pages then count afresh."""

    class Period(models.TextChoices):
        DAY = "day"
        MONTH = "month"

    class Dimension(models.TextChoices):
        TOTAL = "total"
        MODEL = "model"
        PERSON = "person"
        LABEL = "label"

    connection = models.ForeignKey(Connection, on_delete=models.CASCADE, related_name="+")
    period = models.CharField(max_length=5, choices=Period.choices)
    start = models.DateField(help_text="The day, or the first day of the month.")
    dimension = models.CharField(max_length=8, choices=Dimension.choices)
    key = models.CharField(max_length=512, blank=True)

    batches = models.PositiveIntegerField(default=0)
    # Finished batches whose cost is known, and those whose cost is not ("unknown").
    priced = models.PositiveIntegerField(default=0)
    unpriced = models.PositiveIntegerField(default=0)
    cost_usd = models.DecimalField(max_digits=18, decimal_places=6, default=0)
    # The list price of the priced batches that have one, and their batch cost: the saving.
    list_cost_usd = models.DecimalField(max_digits=18, decimal_places=6, default=0)
    listed_cost_usd = models.DecimalField(max_digits=18, decimal_places=6, default=0)
    input_tokens = models.BigIntegerField(default=0)
    cached_tokens = models.BigIntegerField(default=0)
    output_tokens = models.BigIntegerField(default=0)

    stale = models.BooleanField(default=False)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["connection", "period", "start", "dimension", "key"],
                name="one_spend_rollup_per_key",
            )
        ]
        indexes = [
            models.Index(fields=["period", "dimension", "start"], name="spend_period_start"),
            models.Index(fields=["start"], name="spend_stale", condition=models.Q(stale=True)),
        ]

    def __str__(self) -> str:
        return f"{self.connection_id}/{self.period}/{self.start}/{self.dimension}/{self.key}"
