"""Dashboard URLs (docs/api.md, "Dashboard pages"): /login, /logout, /, /buy, /assign, /assignments,
/employees, /learn, /settings/billing, /settings/sso; /login/sso/start and /login/sso/callback."""

from django.contrib.auth import views as auth_views
from django.urls import path

from learncredits.web import account_views, payment_views, sso_views, views

app_name = "web"

urlpatterns = [
    path("", views.home, name="marketplace"),
    path("login", sso_views.SignInView.as_view(), name="login"),
    path("login/sso/start", sso_views.sso_start, name="sso_start"),
    path("login/sso/callback", sso_views.sso_callback, name="sso_callback"),
    path(
        "payments/test/authenticate/<str:intent_id>",
        views.test_authenticate,
        name="test_authenticate",
    ),
    path("logout", auth_views.LogoutView.as_view(), name="logout"),
    path(
        "password-reset",
        auth_views.PasswordResetView.as_view(
            # The reset pages are ours, in the dashboard's layout: the admin app's templates
            # of the same default names load inline styles the CSP refuses.
            template_name="registration/reset_form.html",
            success_url="/password-reset/sent",
            email_template_name="registration/reset_email.txt",
        ),
        name="password_reset",
    ),
    path(
        "password-reset/sent",
        auth_views.PasswordResetDoneView.as_view(template_name="registration/reset_sent.html"),
        name="password_reset_done",
    ),
    path(
        "reset/<uidb64>/<token>/",
        auth_views.PasswordResetConfirmView.as_view(
            template_name="registration/reset_confirm.html", success_url="/reset/done"
        ),
        name="password_reset_confirm",
    ),
    path(
        "reset/done",
        auth_views.PasswordResetCompleteView.as_view(template_name="registration/reset_done.html"),
        name="password_reset_complete",
    ),
    path("buy", views.buy, name="buy"),
    path("buy/quote", views.buy_quote, name="buy_quote"),
    path("assign", views.assign, name="assign"),
    path("assign/preview", views.assign_preview, name="assign_preview"),
    path("assignments", views.assignment_list, name="assignments"),
    path(
        "assignments/<int:assignment_id>/<str:verb>",
        views.assignment_action,
        name="assignment_action",
    ),
    path("employees", views.employee_list, name="employees"),
    path(
        "employees/<int:employee_id>/deactivate",
        views.employee_deactivate,
        name="employee_deactivate",
    ),
    path(
        "employees/<int:employee_id>/reactivate",
        views.employee_reactivate,
        name="employee_reactivate",
    ),
    path("departments", views.department_list, name="departments"),
    path("departments/edit", views.department_edit, name="department_edit"),
    path("learn", views.learn, name="learn"),
    path("settings/billing", views.billing, name="billing"),
    path("settings/sso", sso_views.sso_settings, name="sso_settings"),
    path("settings/team", views.team_page, name="team"),
    path("settings/audit", views.audit_trail, name="audit"),
    path("settings/audit.csv", views.audit_csv, name="audit_csv"),
    path("settings/payment", payment_views.payment_method, name="payment_method"),
    path("settings/profile", account_views.profile_page, name="profile"),
    path("settings/password", account_views.password_page, name="password"),
    path("settings/billing/ledger.csv", views.ledger_csv, name="ledger_csv"),
    path("settings/billing/alert-recipients", views.alert_recipients, name="alert_recipients"),
    path("settings/billing/invoices/<int:invoice_id>", views.invoice, name="invoice"),
    path(
        "settings/billing/invoices/<int:invoice_id>.pdf", views.invoice_download, name="invoice_pdf"
    ),
]
