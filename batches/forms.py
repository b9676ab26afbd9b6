"""Forms validate everything against the limits of batch-api.md before anything is sent."""

from __future__ import annotations

from typing import Any

from django import forms

from . import storage
from .jsonl_check import ENDPOINTS
from .models import ListFilters
from .openai_client import is_upstream_id

METADATA_ROWS = 14  # the API's 16 pairs less the 2 batchweb stamps
MAX_METADATA_PAIRS = 16
MAX_METADATA_KEY = 64
MAX_METADATA_VALUE = 512
# batchweb stamps two metadata keys of its own on each batch it creates.
RESERVED_METADATA = 2
MIN_EXPIRY_HOURS = 1
MAX_EXPIRY_HOURS = 720  # 30 days: 3600..2592000 seconds

ENDPOINT_CHOICES = [(e, e) for e in ENDPOINTS]


class BatchCreateForm(forms.Form):
    connection = forms.ChoiceField(
        label="Connection",
        required=False,
        help_text="Where the batch runs: an OpenAI project, an Azure resource or another server.",
    )
    input_file = forms.FileField(
        label="Input file (JSONL)",
        required=False,
        help_text="Checked line by line before anything is sent. "
        "Up to 50,000 requests (100,000 on Azure), 200 MB.",
        widget=forms.ClearableFileInput(attrs={"accept": ".jsonl,.json,.txt,application/jsonl"}),
    )
    input_file_id = forms.CharField(
        label="…or the id of a file already uploaded",
        required=False,
        max_length=128,
        help_text="A JSONL file uploaded with purpose “batch”, e.g. file-abc123.",
        widget=forms.TextInput(attrs={"placeholder": "file-…", "autocomplete": "off"}),
    )
    endpoint = forms.ChoiceField(
        label="Endpoint",
        required=False,
        choices=[("", "Infer from the file"), *ENDPOINT_CHOICES],
        help_text="Every line's url must be this endpoint.",
    )
    completion_window = forms.ChoiceField(
        label="Completion window",
        choices=[("24h", "24 hours")],
        initial="24h",
        help_text="The only window the Batch API offers.",
    )
    label = forms.CharField(
        label="Label",
        required=False,
        max_length=MAX_METADATA_VALUE,
        help_text="Shown in the list; stored as the metadata key “job”.",
    )
    output_expires_after_hours = forms.IntegerField(
        label="Delete output files after (hours)",
        required=False,
        min_value=MIN_EXPIRY_HOURS,
        max_value=MAX_EXPIRY_HOURS,
        help_text="Optional: 1 to 720 hours on OpenAI, 336 to 720 (14 to 30 days) on Azure. "
        "Left empty, the provider keeps them 30 days.",
    )
    submission_token = forms.CharField(widget=forms.HiddenInput, max_length=64)

    def __init__(self, *args: Any, connections: list[Any] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.connections = {c.slug: c for c in connections or []}
        self.fields["connection"].choices = [(c.slug, c.name) for c in connections or []]
        if len(self.connections) == 1:
            self.fields["connection"].widget = forms.HiddenInput()
            self.fields["connection"].initial = next(iter(self.connections))
        for i in range(METADATA_ROWS):
            self.fields[f"meta_key_{i}"] = forms.CharField(
                label=f"Metadata key {i + 1}", required=False, max_length=MAX_METADATA_KEY
            )
            self.fields[f"meta_value_{i}"] = forms.CharField(
                label=f"Metadata value {i + 1}", required=False, max_length=MAX_METADATA_VALUE
            )

    def clean_submission_token(self) -> str:
        # Only the shape the server makes (the page's own hidden field): it names the
        # submission, and must never be mistaken for anything else.
        value = self.cleaned_data["submission_token"]
        if not storage.is_token(value):
            raise forms.ValidationError("This form has expired or was damaged.")
        return value

    def clean_input_file_id(self) -> str:
        value = self.cleaned_data["input_file_id"].strip()
        if value and not is_upstream_id(value):
            raise forms.ValidationError(
                "A file id has no spaces or slashes: only letters, digits, _ and -, "
                "e.g. file-abc123."
            )
        return value

    def request_data(self) -> dict[str, Any]:
        """What the create call needs, kept with the submission until it is confirmed."""
        data = self.cleaned_data
        return {
            "endpoint": data["endpoint"] or None,
            "completion_window": data["completion_window"],
            "metadata": data["metadata"],
            "output_expires_after_seconds": data["output_expires_after_seconds"],
        }

    def metadata_rows(self) -> list[tuple[forms.BoundField, forms.BoundField]]:
        return [(self[f"meta_key_{i}"], self[f"meta_value_{i}"]) for i in range(METADATA_ROWS)]

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        metadata: dict[str, str] = {}
        for i in range(METADATA_ROWS):
            key = (data.get(f"meta_key_{i}") or "").strip()
            value = data.get(f"meta_value_{i}") or ""
            if not key and not value:
                continue
            if not key:
                self.add_error(f"meta_key_{i}", "This value needs a key.")
                continue
            if key.startswith("batchweb_"):
                self.add_error(f"meta_key_{i}", "Keys starting with “batchweb_” are reserved.")
                continue
            if key in metadata:
                self.add_error(f"meta_key_{i}", f"The key “{key}” is used twice.")
                continue
            metadata[key] = value
        label = data.get("label")
        if label:
            # add_error() drops "label" from cleaned_data, so it is read first.
            if "job" in metadata:
                self.add_error("label", "Give either a label or a metadata key “job”, not both.")
            metadata["job"] = label
        if len(metadata) > MAX_METADATA_PAIRS - RESERVED_METADATA:
            self.add_error(
                None,
                f"At most {MAX_METADATA_PAIRS - RESERVED_METADATA} metadata pairs "
                f"(batchweb uses {RESERVED_METADATA} of the API's {MAX_METADATA_PAIRS}).",
            )
        data["metadata"] = metadata
        upload, file_id = data.get("input_file"), data.get("input_file_id")
        if upload and file_id:
            self.add_error("input_file_id", "Choose a file or give a file id, not both.")
        elif not upload and not file_id and "input_file_id" not in self.errors:
            self.add_error("input_file", "Choose a JSONL file, or give the id of one.")
        elif file_id and not data.get("endpoint") and "endpoint" not in self.errors:
            self.add_error("endpoint", "Choose the endpoint: it cannot be read from a file id.")
        hours = data.get("output_expires_after_hours")
        data["output_expires_after_seconds"] = hours * 3600 if hours else None
        slug = data.get("connection") or ""
        if not slug and len(self.connections) == 1:
            slug = next(iter(self.connections))  # the only one: nothing to choose
        connection = self.connections.get(slug)
        data["connection"] = connection
        if connection is None and "connection" not in self.errors:
            self.add_error(
                "connection",
                "Choose a connection." if self.connections else "No connection can be used.",
            )
        elif connection is not None:
            self._check_connection_limits(connection, data)
        return data

    def _check_connection_limits(self, connection: Any, data: dict[str, Any]) -> None:
        """What differs by provider: Azure keeps outputs 14 to 30 days only, and a connection
        may allow only some endpoints."""
        low, high = connection.expiry_hours()
        hours = data.get("output_expires_after_hours")
        if hours and not low <= hours <= high and "output_expires_after_hours" not in self.errors:
            self.add_error(
                "output_expires_after_hours",
                f"{connection.name} accepts {low} to {high} hours "
                f"({low // 24} to {high // 24} days)."
                if low >= 24
                else f"{connection.name} accepts {low} to {high} hours.",
            )
        endpoint = data.get("endpoint")
        if endpoint and endpoint not in connection.endpoints() and "endpoint" not in self.errors:
            self.add_error(
                "endpoint",
                f"{connection.name} takes only {', '.join(connection.endpoints())}.",
            )


class BatchFilterForm(forms.Form):
    """The list page's filters; unknown values are ignored rather than failing the page."""

    q = forms.CharField(required=False, max_length=200, label="Search")
    status = forms.CharField(required=False, max_length=32)
    endpoint = forms.CharField(required=False, max_length=64)
    model = forms.CharField(required=False, max_length=128)
    creator = forms.CharField(required=False, max_length=150)
    connection = forms.SlugField(required=False, max_length=50)
    label = forms.CharField(required=False, max_length=512)

    def filters(self) -> ListFilters:
        """The filters given; unknown or malformed values are ignored rather than failing."""
        if not self.is_valid():
            return ListFilters()
        return ListFilters(**{k: v for k, v in self.cleaned_data.items() if v})


class LabelForm(forms.Form):
    label = forms.CharField(
        required=False,
        max_length=MAX_METADATA_VALUE,
        help_text="Empty: the label from the batch's metadata.",
    )
