"""The admin site, open to superusers and to the Admins group (without the staff flag to
remember: being an Admin is one group membership, managed like the other roles)."""

from django.contrib import admin
from django.http import HttpRequest

from batches.roles import is_admin


class AdminSite(admin.AdminSite):
    site_header = "batchweb administration"
    site_title = "batchweb admin"

    def has_permission(self, request: HttpRequest) -> bool:
        return super().has_permission(request) or is_admin(request.user)
