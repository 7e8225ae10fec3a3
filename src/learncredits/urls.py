"""URL map: the v1 API under /api/v1/, SCIM under /scim/v2/, the operator console under
/admin/, the dashboard."""

from django.contrib import admin
from django.templatetags.static import static
from django.urls import include, path, re_path
from django.views.generic import RedirectView

from learncredits.api.app import api
from learncredits.billing.webhook_views import stripe_webhook
from learncredits.ops.health import healthz, readyz
from learncredits.scim.views import endpoint as scim_endpoint

urlpatterns = [
    path("healthz", healthz, name="healthz"),
    path("readyz", readyz, name="readyz"),
    # Browsers ask for /favicon.ico on pages that name no icon (a PDF, the API's JSON).
    path("favicon.ico", RedirectView.as_view(url=static("web/favicon.svg"), permanent=True)),
    path("api/v1/", api.urls),
    re_path(r"^scim/v2/(?P<rest>.*)$", scim_endpoint, name="scim"),
    path("stripe/webhook", stripe_webhook, name="stripe_webhook"),
    path("admin/", admin.site.urls),
    path("", include("learncredits.web.urls")),
]
