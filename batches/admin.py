from django.contrib import admin

from .models import Batch, BatchTally, Event


@admin.register(Batch)
class BatchAdmin(admin.ModelAdmin):
    list_display = ("openai_id", "status", "endpoint", "model", "created_by", "created_at")
    list_filter = ("status", "endpoint")
    search_fields = ("openai_id", "input_file_id", "output_file_id", "search_text")
    raw_id_fields = ("created_by", "retry_of")
    readonly_fields = ("raw", "synced_at")
    list_select_related = ("created_by",)

    # Deleting here bypasses the services that keep the list's counts: recount afterwards.
    def delete_model(self, request, obj) -> None:
        super().delete_model(request, obj)
        BatchTally.rebuild()

    def delete_queryset(self, request, queryset) -> None:
        super().delete_queryset(request, queryset)
        BatchTally.rebuild()


@admin.register(Event)
class EventAdmin(admin.ModelAdmin):
    list_display = ("at", "user", "action", "batch_openai_id", "detail")
    list_filter = ("action",)
    search_fields = ("batch_openai_id", "detail", "user__username")
    list_select_related = ("user",)
