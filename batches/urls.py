from django.urls import include, path

from . import (
    converters,  # noqa: F401 (registers the strict converters used below)
    views,
)

# A batch's pages name its connection: ids are unique per connection, not globally.
batch_patterns = [
    path("", views.batch_detail, name="batch-detail"),
    path("cancel/", views.batch_cancel, name="batch-cancel"),
    path("live/", views.batch_live, name="batch-live"),
    path("label/", views.batch_label, name="batch-label"),
    path("retry/", views.batch_retry, name="batch-retry"),
    path("results/", views.batch_results, name="batch-results"),
    path("results/<int:row_id>/", views.result_view, name="batch-result"),
    path("results.csv", views.results_export, name="batch-results-csv"),
    path("files/<str:kind>/", views.batch_download, name="batch-download"),
    path("watch/", views.batch_watch, name="batch-watch"),
    path("capacity/wait/", views.batch_capacity_wait, name="batch-capacity-wait"),
    path("capacity/cancel/", views.batch_capacity_cancel, name="batch-capacity-cancel"),
]

urlpatterns = [
    path("", views.batch_list, name="batch-list"),
    path("batches/new/", views.batch_create, name="batch-create"),
    path(
        "batches/new/<submission_token:token>/", views.submission_confirm, name="submission-confirm"
    ),
    path(
        "batches/new/<submission_token:token>/capacity/wait/",
        views.submission_capacity_wait,
        name="submission-capacity-wait",
    ),
    path(
        "batches/new/<submission_token:token>/capacity/cancel/",
        views.submission_capacity_cancel,
        name="submission-capacity-cancel",
    ),
    path("batches/sync/", views.sync_now, name="batch-sync"),
    path("batches/export.csv", views.batch_export, name="batch-export"),
    path("batches/live/", views.batch_rows_live, name="batch-rows-live"),
    # Links of the release before connections: /batches/<id>/... finds the batch by id.
    path("batches/<upstream_id:openai_id>/", views.batch_legacy_redirect, name="batch-legacy"),
    path("batches/<upstream_id:openai_id>/<page_rest:rest>", views.batch_legacy_redirect),
    path("connections/", views.connection_list, name="connection-list"),
    path("connections/<slug:slug>/", views.connection_detail, name="connection-detail"),
    path("connections/<slug:slug>/test/", views.connection_test, name="connection-test"),
    path("connections/<slug:slug>/batches/<upstream_id:openai_id>/", include(batch_patterns)),
    path("activity/", views.activity, name="activity"),
    path("activity/export.csv", views.activity_export, name="activity-export"),
    path("spend/", views.spend, name="spend"),
    path("spend/export.csv", views.spend_export, name="spend-export"),
    path("profile/", views.profile, name="profile"),
    path(
        "profile/email/<signed_token:signed>/",
        views.profile_email_verify,
        name="profile-email-verify",
    ),
    path("webhooks/openai/<slug:slug>/", views.openai_webhook, name="openai-webhook"),
]
