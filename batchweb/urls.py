from django.contrib import admin
from django.urls import include, path

from batches.views import signin as signin_views
from batches.views.health import healthz

urlpatterns = [
    path("healthz", healthz, name="healthz"),  # load balancers and monitors, no sign-in
    path("accounts/login/", signin_views.sign_in, name="login"),
    path("accounts/logout/", signin_views.sign_out, name="logout"),
    path("oidc/authenticate/", signin_views.company_sign_in, name="oidc-sign-in"),
    path("oidc/callback/", signin_views.company_callback, name="oidc-callback"),
    path("admin/", admin.site.urls),
    path("", include("api.urls")),
    path("", include("batches.urls")),
]
