"""Email-first sign-in, single sign-on through the org's OpenID Connect provider, and the
owner's and admins' page that sets it up (docs/identity.md, "Single sign-on").

``/login`` asks for the email first. An address of a domain with single sign-on continues
to ``/login/sso/start``, which sends the browser to the provider (authorization code flow
with PKCE, state and nonce); the provider sends it back to ``/login/sso/callback``, where
the code is exchanged and the id token checked (signature against the provider's published
keys, issuer, audience, nonce, expiry) by Authlib, and tenancy/sso.py decides who that
signs in. Any other address gets the password form, with the sign-in throttling of
web/signin.py as before. Which protocol library and why: docs/decisions/0012.

The provider is reached from an ordinary page, never as the redirect of a form post: the
dashboard's content security policy allows forms to submit to itself only, and browsers
apply that to where a submission is redirected too.
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import urlencode

from authlib.integrations.django_client import DjangoIntegration, DjangoOAuth2App, OAuthError
from django import forms
from django.contrib import messages
from django.contrib.auth import login
from django.contrib.auth.forms import AuthenticationForm
from django.contrib.auth.views import LoginView
from django.core.exceptions import NON_FIELD_ERRORS, ValidationError
from django.core.validators import validate_email
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.http.response import HttpResponseBase
from django.shortcuts import redirect, render
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_http_methods

from learncredits.domain.errors import DomainError, SignInRefused
from learncredits.domain.errors import http_status as status_for
from learncredits.tenancy import sso
from learncredits.tenancy.models import Membership, SsoConfig
from learncredits.web.views import org_admin

logger = logging.getLogger(__name__)

# Session key of one sign-in under way at the provider, by its state: the org and where to
# go afterwards. Authlib keeps the state's PKCE verifier and nonce beside it.
_PENDING = "learncredits_sso_{state}"
_PROVIDER_TIMEOUT_SECONDS = 10
_MODEL_BACKEND = "django.contrib.auth.backends.ModelBackend"


# --- the password form ---------------------------------------------------------------------


class SignInForm(AuthenticationForm):
    """Django's sign-in form, refusing a correct password of an org that requires single
    sign-on (its owner aside)."""

    def confirm_login_allowed(self, user: Any) -> None:
        super().confirm_login_allowed(user)
        refusal = sso.password_refusal(user)
        if refusal is not None:
            raise forms.ValidationError(refusal, code="sso_required")


def _valid_email(value: str) -> bool:
    try:
        validate_email(value)
    except ValidationError:
        return False
    return True


class SignInView(LoginView):
    """``/login``: the email first, then the password form or the org's provider.

    A post with a password is the password form (so a client posting both at once, as the
    sign-in hardening tests do, still signs in in one step); a post without one is the email
    step."""

    form_class = SignInForm
    redirect_authenticated_user = True

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        form = context["form"]
        query = self.request.GET
        email = query.get("email", "").strip()[:254] if self.request.method == "GET" else ""
        wants_password = self.request.method == "POST" or email or query.get("password")
        context["step"] = "password" if wants_password else "email"
        context["email"] = email or (form["username"].value() or "")
        context["sso_required"] = form.is_bound and form.has_error(NON_FIELD_ERRORS, "sso_required")
        return context

    def post(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if "password" in request.POST:
            response: HttpResponse = super().post(request, *args, **kwargs)
            return response
        email = request.POST.get("username", "").strip().lower()[:254]
        next_url = self.get_redirect_url()
        if not _valid_email(email):
            return render(
                request,
                "registration/login.html",
                {
                    **self._base_context(next_url),
                    "step": "email",
                    "email": email,
                    "email_error": "Enter your email address, like name@example.com.",
                },
                status=422,
            )
        config = sso.config_for_email(email)
        if config is None:
            return render(
                request,
                "registration/login.html",
                {**self._base_context(next_url), "step": "password", "email": email},
            )
        query = urlencode({"email": email, **({"next": next_url} if next_url else {})})
        return render(
            request,
            "registration/sso_continue.html",
            {"org_name": config.org.name, "start_url": f"/login/sso/start?{query}"},
        )

    def _base_context(self, next_url: str) -> dict[str, Any]:
        return {"next": next_url, "form": self.get_form_class()(self.request)}


# --- single sign-on ------------------------------------------------------------------------


def _client(config: SsoConfig) -> Any:
    """Authlib's OpenID Connect client for one org's provider (made per request: each org
    has its own, and its settings may change at any time)."""
    return DjangoOAuth2App(
        DjangoIntegration("sso"),
        name="sso",
        client_id=config.client_id,
        client_secret=config.client_secret,
        server_metadata_url=sso.discovery_url(config.issuer),
        client_kwargs={
            "scope": sso.SCOPES,
            "code_challenge_method": "S256",
            "default_timeout": _PROVIDER_TIMEOUT_SECONDS,
        },
    )


def _refused(request: HttpRequest, detail: str, status: int) -> HttpResponse:
    return render(request, "registration/sso_refused.html", {"detail": detail}, status=status)


def _provider_metadata(client: Any, config: SsoConfig) -> None:
    """Discovery, with the check OpenID Connect Discovery asks for: the document's issuer
    is exactly the one configured (else its tokens would be checked against another)."""
    metadata = client.load_server_metadata()
    if metadata.get("issuer") != config.issuer:
        raise ValueError(
            f"the provider's discovery document names the issuer {metadata.get('issuer')!r}, "
            f"not {config.issuer!r}"
        )


@never_cache
@require_GET
def sso_start(request: HttpRequest) -> HttpResponseBase:
    """Send the browser to the provider of the address's org, remembering the state."""
    email = request.GET.get("email", "").strip().lower()[:254]
    config = sso.config_for_email(email) if _valid_email(email) else None
    if config is None:
        return redirect("/login?" + urlencode({"email": email}) if email else "/login")
    client = _client(config)
    try:
        _provider_metadata(client, config)
        found = client.create_authorization_url(sso.redirect_uri(), login_hint=email)
    except Exception as exc:  # the provider's answer or its absence: never a 500 of ours
        logger.warning("SSO of org %s: the provider cannot be used: %s", config.org_id, exc)
        return _refused(
            request,
            f"The sign-in service of {config.org.name} cannot be reached right now. Try again "
            "in a few minutes; if it goes on, tell your administrator.",
            502,
        )
    client.save_authorize_data(request, redirect_uri=sso.redirect_uri(), **found)
    next_url = request.GET.get("next", "")
    request.session[_PENDING.format(state=found["state"])] = {
        "org": config.org_id,
        "next": next_url if _safe(request, next_url) else "",
    }
    return HttpResponseRedirect(found["url"])


def _safe(request: HttpRequest, url: str) -> bool:
    return bool(url) and url_has_allowed_host_and_scheme(
        url, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    )


@never_cache
@require_GET
def sso_callback(request: HttpRequest) -> HttpResponseBase:
    """The provider's answer: check it, then sign in the account it stands for."""
    state = request.GET.get("state", "")
    pending = request.session.pop(_PENDING.format(state=state), None) if state else None
    config = (
        SsoConfig.objects.select_related("org")
        .filter(org_id=pending["org"] if pending else None)
        .first()
    )
    if pending is None or config is None:
        return _refused(
            request,
            "This sign-in has expired or was already used. Start again from the sign-in page.",
            400,
        )
    client = _client(config)
    try:
        token = client.authorize_access_token(
            request, claims_options={"iss": {"essential": True, "value": config.issuer}}
        )
    except OAuthError as exc:
        detail = exc.description or exc.error or "the provider refused the sign-in"
        return _refused(request, f"Your organization's sign-in did not complete: {detail}.", 403)
    except Exception as exc:  # an answer that does not check out, or no answer at all
        logger.warning("SSO of org %s: the provider's answer was refused: %s", config.org_id, exc)
        return _refused(
            request,
            "Your organization's sign-in service answered with something we could not verify. "
            "Try again; if it goes on, tell your administrator.",
            502,
        )
    claims = token.get("userinfo")
    if not claims:
        return _refused(request, "Your organization's sign-in service sent no id token.", 502)
    try:
        membership = sso.sign_in(config, dict(claims))
    except SignInRefused as exc:
        return _refused(request, f"Sign-in refused: {exc.detail}.", 403)
    login(request, membership.user, backend=_MODEL_BACKEND)
    return redirect(pending.get("next") or "/")


# --- settings > single sign-on -------------------------------------------------------------


@never_cache
@org_admin
@require_http_methods(["GET", "POST"])
def sso_settings(request: HttpRequest) -> HttpResponseBase:
    """The org's single sign-on (owners and admins, by the access table)."""
    membership: Membership = request.membership  # type: ignore[attr-defined]
    org = membership.org
    actor = f"user:usr_{request.user.pk}"
    config = SsoConfig.objects.filter(org=org).first()
    form: dict[str, Any] = {
        "issuer": config.issuer if config else "",
        "client_id": config.client_id if config else "",
        "email_domains": " ".join(sso.domains_of(config)) if config else "",
        "required": config.required if config else False,
    }
    status = 200
    if request.method == "POST":
        try:
            if request.POST.get("form") == "disable":
                sso.disable(org, actor=actor)
                messages.success(request, "Single sign-on is off: passwords work for everyone.")
                return redirect("web:sso_settings")
            form = {
                "issuer": request.POST.get("issuer", ""),
                "client_id": request.POST.get("client_id", ""),
                "email_domains": request.POST.get("email_domains", ""),
                "required": request.POST.get("required") == "on",
            }
            sso.configure(
                org,
                issuer=form["issuer"],
                client_id=form["client_id"],
                client_secret=request.POST.get("client_secret", "").strip() or None,
                email_domains=form["email_domains"].replace(",", " ").split(),
                required=form["required"],
                actor=actor,
            )
            messages.success(request, "Single sign-on saved.")
            return redirect("web:sso_settings")
        except DomainError as exc:
            messages.error(request, exc.detail)
            status = status_for(exc)
    return render(
        request,
        "web/settings_sso.html",
        {"config": config, "form": form, "redirect_uri": sso.redirect_uri(), "scopes": sso.SCOPES},
        status=status,
    )
