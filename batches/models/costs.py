"""Prices an admin sets by hand: they win over the price package (see services/costs.py)."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal, InvalidOperation

from django.core.exceptions import ValidationError
from django.db import models

RATE_FIELDS = ("input_per_mtok", "cached_input_per_mtok", "output_per_mtok")


class PriceOverride(models.Model):
    """Batch prices of one model, in US dollars per million tokens. Also how to price a model
    the package does not know (a fine-tune, another server's model)."""

    model = models.CharField(
        max_length=128,
        unique=True,
        help_text="The model name as batches report it (for Azure: the model, not the deployment).",
    )
    input_per_mtok = models.DecimalField(
        "input, $ per million tokens", max_digits=12, decimal_places=6
    )
    cached_input_per_mtok = models.DecimalField(
        "cached input, $ per million tokens",
        max_digits=12,
        decimal_places=6,
        null=True,
        blank=True,
        help_text="Empty: cached input costs the same as input.",
    )
    output_per_mtok = models.DecimalField(
        "output, $ per million tokens", max_digits=12, decimal_places=6
    )
    note = models.CharField(max_length=255, blank=True, help_text="Where the price comes from.")
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ("model",)
        verbose_name = "price override"

    def __str__(self) -> str:
        return self.model

    def clean(self) -> None:
        errors: dict[str, str] = {}
        for name in RATE_FIELDS:
            value = getattr(self, name)
            if value is None:
                continue
            try:
                value = Decimal(str(value))
            except (InvalidOperation, ValueError):
                value = Decimal("NaN")
            if not value.is_finite():
                errors[name] = "Enter a number of dollars, such as 1.25."
            elif value < 0:
                errors[name] = "A price cannot be negative."
        self.model = (self.model or "").strip()
        if not self.model:
            errors["model"] = "Name the model."
        if errors:
            raise ValidationError(errors)


def dollars(value: Decimal | None) -> str:
    """ "$1.23", "$1,234.50"; a fraction of a cent to the micro-dollar ("$0.00033") rather than
    rounded to nothing; "" for None."""
    if value is None:
        return ""
    if Decimal(0) < abs(value) < Decimal("0.01"):
        return f"${value.quantize(Decimal('0.000001'), ROUND_HALF_UP).normalize():f}"
    return f"${value.quantize(Decimal('0.01'), ROUND_HALF_UP):,.2f}"
