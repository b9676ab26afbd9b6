from django.urls import path

from batches import converters  # noqa: F401 (registers upstream_id)

from . import token_views, views

urlpatterns = [
    path("v1/openapi.yaml", views.openapi, name="api-openapi"),
    path("v1/files", views.files, name="api-files"),
    path("v1/files/<upstream_id:file_id>", views.file_detail, name="api-file"),
    path("v1/files/<upstream_id:file_id>/content", views.file_content, name="api-file-content"),
    path("v1/batches", views.batches, name="api-batches"),
    path("v1/batches/<upstream_id:batch_id>", views.batch_detail, name="api-batch"),
    path("v1/batches/<upstream_id:batch_id>/cancel", views.batch_cancel, name="api-batch-cancel"),
    path("v1/<path:rest>", views.unknown, name="api-unknown"),
    path("profile/tokens/", token_views.token_create, name="token-create"),
    path("profile/tokens/<int:token_id>/revoke/", token_views.token_revoke, name="token-revoke"),
]
