from django.urls import path

from . import views

urlpatterns = [
    path("", views.batch_list, name="batch-list"),
    path("batches/new/", views.batch_create, name="batch-create"),
    path("batches/sync/", views.sync_now, name="batch-sync"),
    path("batches/<str:openai_id>/", views.batch_detail, name="batch-detail"),
    path("batches/<str:openai_id>/cancel/", views.batch_cancel, name="batch-cancel"),
    path("activity/", views.activity, name="activity"),
]
