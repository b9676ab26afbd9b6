from django.contrib import admin

from .models import Batch, Event


@admin.register(Batch)
class BatchAdmin(admin.ModelAdmin):
    list_display = ("openai_id", "status", "endpoint", "model", "created_by", "created_at")
    list_filter = ("status", "endpoint")
    search_fields = ("openai_id", "input_file_id", "output_file_id", "search_text")
    raw_id_fields = ("created_by", "retry_of")
    readonly_fields = ("raw", "synced_at")
    list_select_related = ("created_by",)


@admin.register(Event)
class EventAdmin(admin.ModelAdmin):
    list_display = ("at", "user", "action", "batch_openai_id", "detail")
    list_filter = ("action",)
    search_fields = ("batch_openai_id", "detail", "user__username")
    list_select_related = ("user",)
