from django.urls import path

from . import views

urlpatterns = [
    path("", views.batch_list, name="batch-list"),
    path("batches/new/", views.batch_create, name="batch-create"),
    path("batches/new/<str:token>/", views.submission_confirm, name="submission-confirm"),
    path("batches/sync/", views.sync_now, name="batch-sync"),
    path("batches/export.csv", views.batch_export, name="batch-export"),
    path("batches/live/", views.batch_rows_live, name="batch-rows-live"),
    path("batches/<str:openai_id>/", views.batch_detail, name="batch-detail"),
    path("batches/<str:openai_id>/cancel/", views.batch_cancel, name="batch-cancel"),
    path("batches/<str:openai_id>/live/", views.batch_live, name="batch-live"),
    path("batches/<str:openai_id>/retry/", views.batch_retry, name="batch-retry"),
    path("batches/<str:openai_id>/results/", views.batch_results, name="batch-results"),
    path("batches/<str:openai_id>/results/<int:row_id>/", views.result_view, name="batch-result"),
    path("batches/<str:openai_id>/results.csv", views.results_export, name="batch-results-csv"),
    path("batches/<str:openai_id>/files/<str:kind>/", views.batch_download, name="batch-download"),
    path("activity/", views.activity, name="activity"),
]
