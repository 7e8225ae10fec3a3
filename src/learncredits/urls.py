"""URL map: the v1 API under /api/v1/ and the operator console under /admin/."""

from django.contrib import admin
from django.urls import path

from learncredits.api.app import api

urlpatterns = [
    path("api/v1/", api.urls),
    path("admin/", admin.site.urls),
]
