"""The dashboard: server-rendered pages for org admins and learners.

Views parse the form, call the same service functions as the API (credits/actions.py,
billing/, tenancy/services.py) and render; no rule is written twice. Every form works as a
plain POST; htmx only swaps in the live parts (the quote, the assignment preview).
"""

from __future__ import annotations

import csv
import io
import uuid
import zoneinfo
from collections.abc import Callable
from datetime import date
from functools import wraps
from typing import Any
from zoneinfo import ZoneInfo

import pycountry
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.db.models import Q, QuerySet, Sum
from django.http import Http404, HttpRequest, HttpResponse, StreamingHttpResponse
from django.http.response import HttpResponseBase
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.translation import ngettext
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from learncredits import ids
from learncredits.audit import trail as audit
from learncredits.billing import auto_top_up, purchases, reports
from learncredits.billing import tax as billing_tax
from learncredits.billing.documents import invoice_page, invoice_pdf
from learncredits.billing.invoicing import receipt_of, with_status
from learncredits.billing.models import AutoTopUp, Invoice
from learncredits.billing.payments import TestProvider
from learncredits.catalog.models import Content
from learncredits.catalog.services import current_price_book
from learncredits.credits import (
    accounts,
    actions,
    aging,
    alert_history,
    budgets,
    ledger_export,
    queries,
)
from learncredits.credits.models import Assignment, LedgerEntry, Purchase
from learncredits.credits.queries import balance_view
from learncredits.domain import jurisdictions, pricing, tax
from learncredits.domain.errors import DomainError, NotFound, ValidationFailed
from learncredits.domain.errors import http_status as status_for
from learncredits.domain.money import format_cents
from learncredits.tenancy import access, employee_import, recipients, team
from learncredits.tenancy import departments as tenancy_departments
from learncredits.tenancy import services as tenancy
from learncredits.tenancy.actors import actor_names
from learncredits.tenancy.models import Department, Employee, Membership, Organization

View = Callable[..., HttpResponseBase]


def _membership(request: HttpRequest) -> Membership:
    membership: Membership | None = getattr(request.user, "membership", None)
    if membership is None:
        raise Http404("no organization")
    return membership


def org_admin(view: View) -> View:
    """A dashboard page for an org's members; ``tenancy.access`` (the one table) decides which
    roles may use it, by the page's URL name. A member refused a page gets 403, except a
    learner, who has one page and is sent to it; the operator's staff go to the console."""

    @login_required
    @wraps(view)
    def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        membership = getattr(request.user, "membership", None)
        if membership is None:
            if request.user.is_staff:
                return redirect("/admin/")
            raise Http404("no organization")
        match = request.resolver_match
        if not access.may(membership.role, match.view_name if match else ""):
            if membership.role == Membership.Role.LEARNER:
                return redirect("web:learn")
            raise PermissionDenied("your role may not use this page")
        request.org = membership.org  # type: ignore[attr-defined]
        request.membership = membership  # type: ignore[attr-defined]
        # A manager acts on their own departments' employees only (None: the whole org).
        request.manager_of = (  # type: ignore[attr-defined]
            frozenset(membership.departments.values_list("pk", flat=True))
            if membership.role == Membership.Role.MANAGER
            else None
        )
        timezone.activate(ZoneInfo(membership.org.timezone))  # dates in the org's time zone
        try:
            return view(request, *args, **kwargs)
        finally:
            timezone.deactivate()

    return wrapped


def _manager_of(request: HttpRequest) -> frozenset[int] | None:
    scope: frozenset[int] | None = getattr(request, "manager_of", None)
    return scope


def _employees_in_reach(request: HttpRequest, org: Organization) -> QuerySet[Employee]:
    """The employees the signed-in person may pick: a manager's departments', or everyone's."""
    employees = Employee.objects.filter(org=org)
    scope = _manager_of(request)
    if scope is not None:
        employees = employees.filter(department_id__in=scope)
    return employees


def _actor(request: HttpRequest) -> str:
    return f"user:usr_{request.user.pk}"


def _org(request: HttpRequest) -> Organization:
    org: Organization = request.org  # type: ignore[attr-defined]
    return org


def _fail(request: HttpRequest, exc: DomainError) -> None:
    messages.error(request, exc.detail)


def _int(value: str | None, field: str, *, low: int, high: int) -> int:
    """A number from a form, or the form's usual error message (never a server error)."""
    number = ids.whole_number(value, low=low, high=high)
    if number is None:
        raise ValidationFailed(f"{field} must be a whole number between {low} and {high}")
    return number


def _id(value: str | None) -> int | None:
    """A primary key from a form or a filter; None when the value cannot name a row."""
    return ids.whole_number(value, low=1, high=ids.BIGINT_MAX)


def _page_number(request: HttpRequest) -> int:
    """The list page asked for; anything else is the first page (Paginator clamps the rest)."""
    return ids.whole_number(request.GET.get("page"), low=1) or 1


# --- marketplace ---------------------------------------------------------------------------


@org_admin
def marketplace(request: HttpRequest) -> HttpResponse:
    catalog = Content.objects.order_by("-premium", "title")
    return render(request, "web/marketplace.html", {"catalog": catalog})


# --- buying --------------------------------------------------------------------------------


def _quote_context(org: Organization, raw: str | None) -> dict[str, Any]:
    if not raw:
        return {"quote": None, "quantity": ""}
    try:
        quantity = _int(raw, "quantity", low=1, high=pricing.MAX_PURCHASE_QUANTITY)
        quote = pricing.quote(current_price_book(), quantity)
    except ValidationFailed as exc:
        return {"quote": None, "quantity": raw, "quote_error": exc.detail}
    # Prices are net of tax; an org with a tax profile also sees the tax it would pay today
    # (billing/tax.py decides it, exactly as when the purchase is made).
    taxed = billing_tax.quote_tax(org, quote)
    return {
        "quote": quote,
        "quantity": quantity,
        "tier_min": pricing.unit_price_for(current_price_book(), quantity).min_quantity,
        "quote_tax": taxed,
        "quote_tax_lines": [_tax_line_label(line) for line in taxed.lines] if taxed else [],
    }


def _tax_line_label(line: tax.TaxLine) -> str:
    return tax.label(line.name, line.rate_bps, line.country, line.region)


def bought(request: HttpRequest, purchase: Purchase) -> HttpResponse:
    """Where a paid purchase lands: the billing page, in the layout with the new balance, and
    a message (``buy-success``) saying what was charged, with a link to the receipt."""
    receipt = receipt_of(purchase)
    message = format_html(
        '{} <a href="{}">Receipt {}</a>',
        bought_message(purchase),
        reverse("web:invoice", kwargs={"invoice_id": receipt.pk}),
        receipt.number,
    )
    messages.success(request, message, extra_tags="buy-success")
    return redirect("web:billing")


def bought_message(purchase: Purchase) -> str:
    """The flash after a paid purchase: the amount charged, which includes any tax."""
    if not purchase.tax_cents:
        return f"Bought {purchase.quantity} credits for {format_cents(purchase.total_cents)}."
    charged = purchase.total_cents + purchase.tax_cents
    return (
        f"Bought {purchase.quantity} credits for {format_cents(charged)} "
        f"({format_cents(purchase.total_cents)} plus {format_cents(purchase.tax_cents)} tax)."
    )


@org_admin
@require_http_methods(["GET", "POST"])
def buy(request: HttpRequest) -> HttpResponse:
    if request.method == "POST":
        try:
            quantity = _int(
                request.POST.get("quantity"), "quantity", low=1, high=pricing.MAX_PURCHASE_QUANTITY
            )
            purchase = purchases.purchase_credits(
                _org(request),
                quantity,
                actor=_actor(request),
                # Made when the form was shown: a second click, a resubmitted form or a
                # retry after a dropped connection finds this purchase instead of buying again.
                idempotency_key=_form_purchase_key(request),
            ).purchase
        except DomainError as exc:
            _fail(request, exc)
            context = _quote_context(_org(request), request.POST.get("quantity"))
            context["purchase_key"] = uuid.uuid4().hex  # trying again is a new purchase
            return render(
                request,
                "web/buy.html",
                context,
                status=status_for(exc),
            )
        if purchase.status == Purchase.Status.PENDING and purchase.action_url:
            return redirect(purchase.action_url)  # the card asks the admin to authenticate
        if purchase.status == Purchase.Status.PENDING:
            messages.info(request, "The payment is being processed; the credits follow shortly.")
            return redirect("web:billing")
        return bought(request, purchase)
    context = _quote_context(_org(request), request.GET.get("quantity"))
    context["book"] = current_price_book()
    context["has_tax_profile"] = billing_tax.profile_of(_org(request)) is not None
    context["purchase_key"] = uuid.uuid4().hex
    return render(request, "web/buy.html", context)


@org_admin
@require_http_methods(["GET", "POST"])
def test_authenticate(request: HttpRequest, intent_id: str) -> HttpResponse:
    """The built-in test provider's stand-in for a bank's 3-D Secure page: the admin approves
    or refuses the charge, and the purchase is carried on exactly as a real provider's
    answer would carry it."""
    purchase = Purchase.objects.filter(
        org=_org(request), provider="test", provider_reference=intent_id
    ).first()
    if purchase is None:
        raise Http404("no such payment")
    if request.method == "GET":
        return render(request, "web/test_authenticate.html", {"purchase": purchase})
    provider = TestProvider()
    outcome = provider.authenticate(intent_id, approve=request.POST.get("answer") == "approve")
    purchase = purchases.apply_outcome(purchase, outcome)
    if purchase.status == Purchase.Status.PAID:
        return bought(request, purchase)
    messages.error(request, f"The payment was not completed: {purchase.failure_reason}")
    return redirect("web:buy")


def _form_purchase_key(request: HttpRequest) -> str | None:
    """The buy form's one-time key, scoped to the admin who submits it."""
    key = request.POST.get("purchase_key", "")
    if not key or len(key) > 64 or not key.isascii() or not key.isalnum():
        return None
    return f"dashboard:usr_{request.user.pk}:{key}"


@org_admin
def buy_quote(request: HttpRequest) -> HttpResponse:
    """The live quote fragment (htmx), as the admin types."""
    return render(
        request, "web/_quote.html", _quote_context(_org(request), request.GET.get("quantity"))
    )


# --- assigning -----------------------------------------------------------------------------


def _selected_employees(request: HttpRequest, org: Organization) -> tuple[list[int], list[str]]:
    """Checked employees plus pasted emails (CSV or one per line); unknown emails listed
    (for a manager, an email outside their departments is unknown)."""
    picked = [pk for pk in map(_id, request.POST.getlist("employee")) if pk is not None]
    pasted = request.POST.get("emails", "")
    emails = [
        cell.strip().lower()
        for row in csv.reader(io.StringIO(pasted))
        for cell in row
        if "@" in cell
    ]
    unknown: list[str] = []
    if emails:
        found = dict(
            _employees_in_reach(request, org).filter(email__in=emails).values_list("email", "pk")
        )
        unknown = [e for e in emails if e not in found]
        picked.extend(found[e] for e in emails if e in found)
    return list(dict.fromkeys(picked)), unknown


def _preview(org: Organization, content: Content | None, employee_ids: list[int]) -> dict[str, Any]:
    if content is None or not employee_ids:
        return {"ready": False, "balance": balance_view(org)}
    preview = queries.assign_preview(org, content, employee_ids)
    return {
        "ready": True,
        "balance": preview.balance,
        "content": content,
        "new_count": preview.new_count,
        "skipped_count": preview.skipped_count,
        "reserved": preview.outlook.reserved,
        "available_after": preview.outlook.available_after,
        "billed_at_retail": preview.outlook.billed_at_retail,
        "retail_cost": format_cents(preview.retail_cost_cents),
    }


def _content_from(request: HttpRequest) -> Content | None:
    pk = _id(request.POST.get("content") or request.GET.get("content"))
    return None if pk is None else Content.objects.filter(pk=pk).first()


@org_admin
@require_http_methods(["GET", "POST"])
def assign(request: HttpRequest) -> HttpResponse:
    org = _org(request)
    query = request.GET.get("q", "").strip()
    employees = _employees_in_reach(request, org).filter(active=True).order_by("name")
    if query:
        employees = employees.filter(Q(name__icontains=query) | Q(email__icontains=query))
    status = 200
    context: dict[str, Any] = {
        "catalog": Content.objects.order_by("-premium", "title"),
        "employees": employees[:500],
        "employee_total": employees.count(),
        "q": query,
        "selected_content": _content_from(request),
    }
    if request.method == "POST":
        content = _content_from(request)
        employee_ids, unknown = _selected_employees(request, org)
        context["selected"] = set(employee_ids)
        if unknown:
            messages.error(request, f"No employee with these emails: {', '.join(unknown[:20])}")
        elif content is None:
            messages.error(request, "Pick a content item.")
        elif not employee_ids:
            messages.error(request, "Pick at least one employee.")
        elif request.POST.get("confirm") == "1":
            try:
                result = actions.assign_bulk(
                    org,
                    content_id=content.pk,
                    employee_ids=employee_ids,
                    actor=_actor(request),
                    manager_of=_manager_of(request),
                )
            except DomainError as exc:
                _fail(request, exc)
                status = status_for(exc)
            else:
                for over in result.budget_warnings:
                    messages.warning(
                        request,
                        f"Department {over.name} is now over its budget: "
                        f"{over.committed_credits} of {over.budget_credits} credits committed.",
                    )
                messages.success(
                    request,
                    f"Assigned {content.title} to {len(result.created)} employee(s)"
                    + (
                        f"; {len(result.skipped_employee_ids)} already had it"
                        if result.skipped_employee_ids
                        else ""
                    )
                    + ".",
                )
                return redirect("web:assignments")
        context.update(_preview(org, content, employee_ids))
        context["preview"] = True
    return render(request, "web/assign.html", context, status=status)


@org_admin
@require_POST
def assign_preview(request: HttpRequest) -> HttpResponse:
    org = _org(request)
    employee_ids, unknown = _selected_employees(request, org)
    context = _preview(org, _content_from(request), employee_ids)
    context["unknown"] = unknown
    return render(request, "web/_assign_preview.html", context)


# --- assignments ----------------------------------------------------------------------------


@org_admin
def assignment_list(request: HttpRequest) -> HttpResponse:
    org = _org(request)
    assignments = Assignment.objects.filter(org=org).select_related("content", "employee")
    scope = _manager_of(request)
    if scope is not None:
        assignments = assignments.filter(employee__department_id__in=scope)
    department = _id(request.GET.get("department"))
    if department is not None:
        assignments = assignments.filter(employee__department_id=department)
    status = request.GET.get("status", "")
    if status in Assignment.Status.values:
        assignments = assignments.filter(status=status)
    for field in ("content", "employee"):
        pk = _id(request.GET.get(field))
        if pk is not None:  # a filter that names nothing is ignored (the form offers "any")
            assignments = assignments.filter(**{f"{field}_id": pk})
    email = request.GET.get("employee_email", "").strip().lower()
    if email:
        assignments = assignments.filter(employee__email=email)
    # The aging report: "older than N days", oldest first.
    older_than = request.GET.get("older_than_days", "").strip()
    aged = False
    if older_than:
        try:
            assignments = aging.older_than(assignments, older_than)
            aged = True
        except ValidationFailed as exc:  # the list unfiltered, and why
            _fail(request, exc)
    ordered = assignments.order_by("created_at", "pk") if aged else assignments.order_by("-pk")
    page = Paginator(ordered, 50).get_page(_page_number(request))
    now = timezone.now()
    for row in page:
        row.age_days = (now - row.created_at).days  # type: ignore[attr-defined]
    return render(
        request,
        "web/assignments.html",
        {
            "page": page,
            "status": status,
            "statuses": Assignment.Status.values,
            "catalog": Content.objects.order_by("title"),
            # The employee filter is a drop-down for small orgs, a typed email for large ones.
            "employees": list(
                _employees_in_reach(request, org).order_by("name")[: REASSIGN_SELECT_MAX + 1]
            ),
            "departments": _departments_in_reach(request, org),
            **_reassign_choices(_employees_in_reach(request, org)),
            "filters": request.GET,
        },
    )


REASSIGN_SELECT_MAX = 100


def _reassign_choices(employees: QuerySet[Employee]) -> dict[str, Any]:
    """A drop-down per row for small orgs; for large ones one shared list of emails to type
    from (a drop-down of thousands of names in each of 50 rows made the page megabytes)."""
    active = employees.filter(active=True).order_by("name")
    if active.count() <= REASSIGN_SELECT_MAX:
        return {"active_employees": list(active), "active_emails": None}
    emails = list(active.values_list("email", flat=True)[:5000])
    return {"active_employees": None, "active_emails": emails}


@org_admin
@require_POST
def assignment_action(request: HttpRequest, assignment_id: int, verb: str) -> HttpResponse:
    org = _org(request)
    scope = _manager_of(request)
    try:
        if verb == "cancel":
            actions.cancel_assignment(org, assignment_id, actor=_actor(request), manager_of=scope)
            messages.success(request, "Assignment cancelled; its credit is free again.")
        elif verb == "reassign":
            email = request.POST.get("employee_email", "").strip().lower()
            if email:
                found = _employees_in_reach(request, org).filter(email=email).first()
                if found is None:
                    raise ValidationFailed(f"no employee with the email {email}")
                employee_id = found.pk
            else:
                employee_id = _int(
                    request.POST.get("employee"), "employee", low=1, high=ids.BIGINT_MAX
                )
            moved = actions.reassign(
                org, assignment_id, employee_id=employee_id, actor=_actor(request), manager_of=scope
            )
            messages.success(request, "Assignment moved.")
            for over in moved.budget_warnings:
                messages.warning(
                    request,
                    f"Department {over.name} is now over its budget: "
                    f"{over.committed_credits} of {over.budget_credits} credits committed.",
                )
        else:
            raise Http404("no such action")
    except NotFound:
        raise Http404("no such assignment") from None
    except DomainError as exc:
        _fail(request, exc)
    return redirect("web:assignments")


# --- employees ---------------------------------------------------------------------------------


@org_admin
@require_http_methods(["GET", "POST"])
def employee_list(request: HttpRequest) -> HttpResponse:
    org = _org(request)
    if request.method == "POST":
        if request.POST.get("form") == "invite":
            _invite(request, org)
        elif "csv" in request.POST or "csv_file" in request.FILES:
            return _import_employees(request, org)
        else:
            try:
                employee = tenancy.create_employee(
                    org,
                    name=request.POST.get("name", ""),
                    email=request.POST.get("email", ""),
                    actor=_actor(request),
                )
                messages.success(request, f"Added {employee.name}.")
            except DomainError as exc:
                _fail(request, exc)
        return redirect("web:employees")
    return _employees_page(request, org)


def _employees_page(
    request: HttpRequest,
    org: Organization,
    *,
    status: int = 200,
    import_form: dict[str, Any] | None = None,
) -> HttpResponse:
    """The employees list and its forms; ``import_form`` carries an import's report."""
    query = request.GET.get("q", "").strip()
    employees = Employee.objects.filter(org=org)
    if query:
        employees = employees.filter(Q(name__icontains=query) | Q(email__icontains=query))
    employees = employees.annotate(
        reserved=Sum(
            "assignment__credit_cost",
            filter=Q(assignment__status=Assignment.Status.ASSIGNED),
            default=0,
        )
    ).order_by("-active", "name")
    page = Paginator(employees, 50).get_page(_page_number(request))
    context = {
        "page": page,
        "q": query,
        "import_form": import_form or {},
        "import_max_rows": f"{employee_import.MAX_ROWS:,}",
    }
    return render(request, "web/employees.html", context, status=status)


def _invite(request: HttpRequest, org: Organization) -> None:
    """Invite someone with a role (a manager with their departments): the invitation email
    carries a link to choose a password. An address with an account in another org gets the
    same answer as a sent invitation (tenancy.invite_user)."""
    role = request.POST.get("role", "")
    try:
        email = tenancy.invite_user(
            org,
            email=request.POST.get("email", ""),
            name=request.POST.get("name", ""),
            role=role if role in Membership.Role.values else "",
            actor=_actor(request),
            by_role=_role(request),
            department_ids=_department_ids(request),
        )
    except DomainError as exc:
        _fail(request, exc)
        return
    messages.success(request, f"Invitation sent to {email}.")


def _role(request: HttpRequest) -> str:
    membership: Membership = request.membership  # type: ignore[attr-defined]
    return membership.role


def _department_ids(request: HttpRequest) -> list[int]:
    """The departments ticked in a form; a value that names no row counts as unknown."""
    values = request.POST.getlist("departments")
    found = [_id(value) for value in values]
    if None in found:
        raise ValidationFailed("unknown department")
    return [pk for pk in found if pk is not None]


def _import_employees(request: HttpRequest, org: Organization) -> HttpResponse:
    """The CSV import (rules in tenancy/employee_import.py). A clean file is imported and
    the page says how many; otherwise nothing is, and the page lists every bad row and keeps
    the form, its text filled in so that the admin can fix the rows or tick "import the
    valid rows" and send it again."""
    upload = request.FILES.get("csv_file")
    # A byte past the bound is enough for the service to refuse a file as too large.
    data = (
        upload.read(employee_import.MAX_BYTES + 1)
        if upload
        else request.POST.get("csv", "").encode()
    )
    skip_invalid = request.POST.get("skip_invalid") == "1"
    try:
        result = employee_import.import_employees(
            org, data, actor=_actor(request), skip_invalid=skip_invalid
        )
    except employee_import.ImportRefused as exc:
        form = {
            "csv": _import_text(data),
            "skip_invalid": skip_invalid,
            "error": exc.detail,
            "problems": [str(problem) for problem in exc.problems],
        }
        return _employees_page(request, org, status=status_for(exc), import_form=form)
    count = len(result.employees)
    messages.success(
        request,
        ngettext("Imported %(count)d employee", "Imported %(count)d employees", count)
        % {"count": count},
    )
    if not result.skipped:
        return redirect("web:employees")
    skipped = {"skipped": [str(problem) for problem in result.skipped]}
    return _employees_page(request, org, import_form=skipped)


def _import_text(data: bytes) -> str:
    """A refused file's text for the form's text box, so it can be fixed and sent again;
    empty when it is too large or not UTF-8 (a replacement character would then be imported
    as part of a name)."""
    if len(data) > employee_import.MAX_BYTES:
        return ""
    try:
        return data.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError:
        return ""


@org_admin
@require_http_methods(["GET", "POST"])
def employee_deactivate(request: HttpRequest, employee_id: int) -> HttpResponse:
    """GET shows what deactivating releases; POST does it."""
    org = _org(request)
    employee = Employee.objects.filter(org=org, pk=employee_id).first()
    if employee is None:
        raise Http404("no such employee")
    if request.method == "POST":
        actions.deactivate_employee(org, employee.pk, actor=_actor(request))
        messages.success(request, f"{employee.name} deactivated; reservations released.")
        return redirect("web:employees")
    pending = Assignment.objects.filter(
        org=org, employee=employee, status=Assignment.Status.ASSIGNED
    ).select_related("content")
    return render(
        request,
        "web/deactivate.html",
        {
            "employee": employee,
            "pending": pending,
            "released": sum(a.credit_cost for a in pending),
        },
    )


@org_admin
@require_POST
def employee_reactivate(request: HttpRequest, employee_id: int) -> HttpResponse:
    """Active again; what the deactivation released stays released."""
    org = _org(request)
    employee = Employee.objects.filter(org=org, pk=employee_id).first()
    if employee is None:
        raise Http404("no such employee")
    actions.reactivate_employee(org, employee.pk, actor=_actor(request))
    messages.success(request, f"{employee.name} reactivated.")
    return redirect("web:employees")


# --- settings > team ------------------------------------------------------------------------------


@org_admin
@require_http_methods(["GET", "POST"])
def team_page(request: HttpRequest) -> HttpResponse:
    """Who may sign in, with which role: invite, change a role, remove (tenancy.team)."""
    org = _org(request)
    if request.method == "POST":
        form = request.POST.get("form")
        if form == "invite":
            _invite(request, org)
        elif form in ("role", "remove"):
            _change_member(request, org, form)
        return redirect("web:team")
    return render(
        request,
        "web/team.html",
        {
            "members": team.members(org),
            "roles": _grantable_roles(_role(request)),
            "departments": Department.objects.filter(org=org).order_by("name"),
        },
    )


ROLE_LABELS = {
    "owner": "Owner (everything an admin does, and makes owners)",
    "admin": "Admin (buys, assigns, manages the team)",
    "billing": "Billing (buys, the card, invoices)",
    "manager": "Manager (assigns for their departments)",
    "learner": "Learner (their own assignments)",
}


def _grantable_roles(role: str) -> list[tuple[str, str]]:
    """The roles this member may give: an owner every role, an admin every role but owner."""
    return [
        (value, label)
        for value, label in ROLE_LABELS.items()
        if value != Membership.Role.OWNER or role == Membership.Role.OWNER
    ]


def _change_member(request: HttpRequest, org: Organization, form: str) -> None:
    user_id = _id(request.POST.get("user"))
    try:
        if user_id is None:
            raise NotFound("user not found")
        if form == "remove":
            team.remove_member(org, user_id, by_role=_role(request), actor=_actor(request))
            messages.success(request, "Removed; they can no longer sign in.")
        else:
            changed = team.change_role(
                org,
                user_id,
                role=request.POST.get("role", ""),
                department_ids=_department_ids(request),
                by_role=_role(request),
                actor=_actor(request),
            )
            messages.success(request, f"{changed.user.email} is now {changed.role}.")
    except DomainError as exc:
        _fail(request, exc)


# --- learner -------------------------------------------------------------------------------------


@org_admin
@require_http_methods(["GET", "POST"])
def learn(request: HttpRequest) -> HttpResponse:
    membership = _membership(request)
    if membership.employee_id is None:
        messages.info(request, "Your account is not a learner account.")
        return redirect("web:marketplace")
    org = membership.org
    if request.method == "POST":
        # A value that is no id is answered as an unknown id is: 404, like any other.
        assignment_id = _id(request.POST.get("assignment"))
        if assignment_id is None or not (
            Assignment.objects.filter(
                org=org, pk=assignment_id, employee_id=membership.employee_id
            ).exists()
        ):
            raise Http404("no such assignment")
        try:
            if request.POST.get("verb") == "complete":
                actions.complete_assignment(org, assignment_id, actor=_actor(request))
                messages.success(request, "Marked as completed.")
            else:
                actions.start_assignment(org, assignment_id, actor=_actor(request))
                messages.success(request, "Started. Enjoy the course!")
        except DomainError as exc:
            _fail(request, exc)
        return redirect("web:learn")
    mine = (
        Assignment.objects.filter(org=org, employee_id=membership.employee_id)
        .select_related("content")
        .order_by("-pk")
    )
    return render(request, "web/learn.html", {"assignments": mine})


# --- settings > billing ---------------------------------------------------------------------------


@org_admin
@require_http_methods(["GET", "POST"])
def billing(request: HttpRequest) -> HttpResponse:
    org = _org(request)
    if request.method == "POST":
        if request.POST.get("form") == "tax":
            refused = _save_tax_profile(request, org)
            if refused is not None:  # the page again, with what was typed and why not
                typed, status = refused
                return _billing_page(request, org, tax_form=typed, status=status)
        else:
            _save_billing_settings(request, org)
        return redirect("web:billing")
    return _billing_page(request, org)


def _billing_page(
    request: HttpRequest,
    org: Organization,
    *,
    tax_form: dict[str, Any] | None = None,
    recipients_form: dict[str, Any] | None = None,
    status: int = 200,
) -> HttpResponse:
    tz = ZoneInfo(org.timezone)
    today = timezone.now().astimezone(tz).date()
    first = today.replace(day=1)
    # Twelve months, this one included (in December: January to December).
    start = (
        first.replace(month=1)
        if first.month == 12
        else first.replace(year=first.year - 1, month=first.month + 1)
    )
    usage = reports.usage(org, start, today, "month")
    entries = LedgerEntry.objects.filter(org=org)
    entry_type = request.GET.get("type", "")
    if entry_type in LedgerEntry.Type.values:
        entries = entries.filter(type=entry_type)
    # Keyset pages ("older than entry N"): no COUNT(*) over the whole ledger on every view.
    before = _id(request.GET.get("before"))  # anything else: the newest page
    if before is not None:
        entries = entries.filter(pk__lt=before)
    ledger = list(entries.order_by("-pk")[:26])
    older = ledger[24].pk if len(ledger) > 25 else None
    ledger = ledger[:25]
    named = actor_names(org, {e.actor for e in ledger})
    for e in ledger:
        e.actor_name = named[e.actor]  # type: ignore[attr-defined]
    # Invoices, receipts and credit notes together, each with its derived status (a credit
    # note names the invoice it credits).
    from learncredits.billing.invoicing import invoice_status

    invoices = list(
        with_status(Invoice.objects.filter(org=org))
        .select_related("credits_invoice")
        .order_by("-pk")[:50]
    )
    for invoice in invoices:
        invoice.status_label = invoice_status(invoice)  # type: ignore[attr-defined]
    return render(
        request,
        "web/billing.html",
        {
            "usage": usage,
            "chart": _chart(usage),
            "ledger": ledger,
            "ledger_older": older,
            "ledger_paged": before is not None,
            "entry_type": entry_type,
            "entry_types": LedgerEntry.Type.values,
            "purchases": Purchase.objects.filter(org=org).order_by("-pk")[:20],
            "invoices": invoices,
            "forecast": reports.forecast(org),
            "rule": AutoTopUp.objects.filter(org=org).first(),
            "alert_history": alert_history.history(org),
            **_recipients_context(request, org, recipients_form),
            "timezones": _TIMEZONES,
            "tz": org.timezone,
            **_tax_profile_context(org, tax_form),
        },
        status=status,
    )


def _chart(usage: list[reports.UsagePoint]) -> dict[str, Any]:
    """Bar geometry for the usage chart (SVG drawn by the template; no script needed).

    One 30-unit column a month: three bars on a 100-unit scale, and the month's short name
    under them. The SVG keeps its aspect ratio when scaled (no stretched text); 360 units for
    a year is about a phone's width, so the 12-unit labels stay legible there."""
    peak = max([max(p.consumed_credits, p.overage_credits, p.credits) for p in usage] + [1])
    base = 106
    bars = []
    for index, point in enumerate(usage):
        heights = [
            round(100 * v / peak)
            for v in (point.consumed_credits, point.overage_credits, point.credits)
        ]
        x = index * 30 + 2
        bars.append(
            {
                "point": point,
                "label": point.date[:7],
                "month": date.fromisoformat(point.date[:10]).strftime("%b"),
                "x": x,
                "x2": x + 9,
                "x3": x + 18,
                "middle": x + 13,
                "consumed": heights[0],
                "overage": heights[1],
                "held": heights[2],
                "consumed_y": base - heights[0],
                "overage_y": base - heights[1],
                "held_y": base - heights[2],
            }
        )
    return {
        "bars": bars,
        "width": max(30 * len(usage), 30),
        "height": base + 24,
        "base": base,
        "label_y": base + 17,
    }


# The zone names a browser offers while typing (IANA names; the service checks the value).
_TIMEZONES = sorted(zoneinfo.available_timezones())


def _save_billing_settings(request: HttpRequest, org: Organization) -> None:
    form = request.POST.get("form")
    try:
        if form == "alerts":
            changes: dict[str, object] = {"billing_email": request.POST.get("billing_email", "")}
            if request.POST.get("alert_threshold_kind") == "percent":
                # A percentage of the credits held; the service holds its bounds.
                changes["alert_threshold_percent"] = request.POST.get("alert_threshold", "")
            else:
                changes["alert_threshold"] = _int(
                    request.POST.get("alert_threshold"),
                    "alert threshold",
                    low=-tenancy.MAX_THRESHOLD,
                    high=tenancy.MAX_THRESHOLD,
                )
            if "timezone" in request.POST:
                # Dates on every page, periods and the forecast follow it; the service
                # checks it is an IANA zone name.
                changes["timezone"] = request.POST["timezone"].strip()
            if "release_unstarted_after_days" in request.POST:
                # Blank: never. The service holds the rule for a number of days.
                days = request.POST["release_unstarted_after_days"].strip()
                changes["release_unstarted_after_days"] = days or None
            accounts.update_org_settings(org, changes, actor=_actor(request))
            messages.success(request, "Billing contact, time zone and alert threshold saved.")
        elif form == "auto_top_up":
            mode_target = request.POST.get("mode") == "target"
            amount = _int(request.POST.get("amount"), "amount", low=1, high=1_000_000)
            auto_top_up.configure(
                org,
                auto_top_up.RuleIn(
                    enabled=request.POST.get("enabled") == "on",
                    below_available=_int(
                        request.POST.get("below_available"),
                        "trigger",
                        low=-1_000_000,
                        high=1_000_000,
                    ),
                    quantity=None if mode_target else amount,
                    target_available=amount if mode_target else None,
                    max_purchases_per_month=_int(
                        request.POST.get("max_purchases"), "purchases per month", low=1, high=1000
                    ),
                    max_credits_per_month=_int(
                        request.POST.get("max_credits"), "credits per month", low=1, high=1_000_000
                    ),
                ),
                actor=_actor(request),
            )
            messages.success(request, "Auto top-up saved.")
    except DomainError as exc:
        _fail(request, exc)


def _recipients_context(
    request: HttpRequest, org: Organization, form: dict[str, Any] | None
) -> dict[str, Any]:
    """The alert recipients form: every owner and admin with whether they receive alerts,
    the billing email's box and the extra addresses (the saved choice, the defaults, or
    what was typed when it was refused). Shown to the roles that may change it."""
    membership: Membership = request.membership  # type: ignore[attr-defined]
    choice = recipients.choice_of(org)
    if form is None:
        form = {
            "billing_email": choice.billing_email,
            "user_ids": choice.user_ids,
            "emails": "\n".join(choice.emails),
        }
    people = (
        Membership.objects.filter(org=org, role__in=[Membership.Role.OWNER, Membership.Role.ADMIN])
        .select_related("user")
        .order_by("user__email")
    )
    return {
        "may_choose_recipients": access.may(membership.role, "web:alert_recipients"),
        "recipients_chosen": choice.chosen,
        "recipients_form": form,
        "recipient_people": [
            {
                "id": m.user_id,
                "name": m.user.get_full_name() or m.user.email,
                "email": m.user.email,
                "role": m.role,
                "checked": m.user_id in form["user_ids"],
            }
            for m in people
        ],
        "max_extra_emails": recipients.MAX_EXTRA_EMAILS,
        "threshold_percent_bounds": (tenancy.MIN_THRESHOLD_PERCENT, tenancy.MAX_THRESHOLD_PERCENT),
    }


@org_admin
@require_POST
def alert_recipients(request: HttpRequest) -> HttpResponse:
    """Choose who receives the org's alert emails (owners and admins; the access table),
    or go back to the defaults. A refused choice shows the page again with what was typed,
    the reason and its code (``invalid_recipients``)."""
    org = _org(request)
    if request.POST.get("action") == "defaults":
        tenancy.set_alert_recipients(org, None, actor=_actor(request))
        messages.success(request, "Alerts go to the billing email and every owner and admin.")
        return redirect(reverse("web:billing") + "#alert-recipients")
    typed = request.POST.get("extra_emails", "")
    user_ids = [pk for pk in map(_id, request.POST.getlist("recipient_user")) if pk is not None]
    choice = {
        "billing_email": request.POST.get("billing_email_recipient") == "on",
        "user_ids": user_ids,
        "emails": recipients.split_addresses(typed),
    }
    try:
        tenancy.set_alert_recipients(org, choice, actor=_actor(request))
    except ValidationFailed as exc:
        _fail(request, exc)
        form = {**choice, "user_ids": frozenset(user_ids), "emails": typed, "code": exc.code}
        return _billing_page(request, org, recipients_form=form, status=status_for(exc))
    messages.success(request, "Alert recipients saved.")
    return redirect(reverse("web:billing") + "#alert-recipients")


def _tax_profile_context(org: Organization, form: dict[str, Any] | None) -> dict[str, Any]:
    """The org's saved tax profile, and the form's values: the saved ones, or what was
    typed when the form was refused (so that nothing has to be typed again)."""
    profile = billing_tax.profile_of(org)
    if form is None:
        form = {
            "country": org.tax_country,
            "region": org.tax_region,
            "tax_id": org.tax_id,
            "exempt": org.tax_exempt,
        }
    return {
        "tax_profile": profile,
        "tax_profile_name": _country_name(profile.country) if profile else "",
        "tax_profile_note": (
            tax.NOTES[tax.treatment(billing_tax.current_seller().country, profile)]
            if profile
            else ""
        ),
        "tax_form": form,
        "tax_id_help": _tax_id_help(str(form["country"])) or _tax_id_help(org.tax_country),
    }


def _country_name(code: str) -> str:
    country = pycountry.countries.get(alpha_2=code)
    return str(country.name) if country is not None else code


def _tax_id_help(country: str) -> str:
    """Which tax id the country asks for and its format; empty until a country is known."""
    if not country:
        return ""
    try:
        return jurisdictions.describe_tax_id(country)
    except ValidationFailed:
        return ""


def _save_tax_profile(request: HttpRequest, org: Organization) -> tuple[dict[str, Any], int] | None:
    """Save or remove the tax profile (accounts.update_org_settings checks every value and
    writes them together, audited, or nothing). When refused: the typed values and the
    refusal's status."""
    if request.POST.get("action") == "remove":
        accounts.update_org_settings(org, {"tax": None}, actor=_actor(request))
        messages.success(request, "Tax profile removed: no tax is charged from now on.")
        return None
    typed: dict[str, Any] = {
        "country": request.POST.get("country", ""),
        "region": request.POST.get("region", ""),
        "tax_id": request.POST.get("tax_id", ""),
        "exempt": request.POST.get("exempt") == "on",
    }
    try:
        accounts.update_org_settings(org, {"tax": dict(typed)}, actor=_actor(request))
    except ValidationFailed as exc:
        _fail(request, exc)
        return typed, status_for(exc)
    messages.success(request, "Tax profile saved.")
    return None


@org_admin
def ledger_csv(request: HttpRequest) -> StreamingHttpResponse:
    """The ledger CSV (the API's file); ``?department=<id>`` keeps one department's part."""
    org = _org(request)
    department: int | None = None
    if "department" in request.GET:
        department = _id(request.GET.get("department"))
        if department is None or not Department.objects.filter(org=org, pk=department).exists():
            raise Http404("no such department")
    response = StreamingHttpResponse(
        ledger_export.ledger_csv(org, department_id=department), content_type="text/csv"
    )
    filename = ledger_export.ledger_csv_filename(org, department)
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


@org_admin
@require_GET
def audit_trail(request: HttpRequest) -> HttpResponse:
    """The org's own audit trail (who did what, when), filterable by action and actor, a
    page of 50 at a time, newest first."""
    org = _org(request)
    action = request.GET.get("action", "").strip()[:64]
    actor = request.GET.get("actor", "").strip()[:200]
    events = audit.org_trail(org.pk, action=action, actor=actor)
    before = _id(request.GET.get("before"))
    if before is not None:
        events = events.filter(pk__lt=before)
    rows = list(events[:51])
    older = rows[49].pk if len(rows) > 50 else None
    rows = rows[:50]
    named = actor_names(org, {e.actor for e in rows})
    for e in rows:
        e.actor_name = named[e.actor]  # type: ignore[attr-defined]
    return render(
        request,
        "web/audit.html",
        {"events": rows, "older": older, "filters": {"action": action, "actor": actor}},
    )


@org_admin
@require_GET
def audit_csv(request: HttpRequest) -> StreamingHttpResponse:
    """The same trail, every matching event, as CSV."""
    org = _org(request)
    events = audit.org_trail(
        org.pk,
        action=request.GET.get("action", "").strip()[:64],
        actor=request.GET.get("actor", "").strip()[:200],
    )
    actors = set(events.values_list("actor", flat=True).distinct())
    response = StreamingHttpResponse(
        audit.trail_csv(events.iterator(chunk_size=500), actor_names(org, actors)),
        content_type="text/csv",
    )
    response["Content-Disposition"] = f'attachment; filename="audit-org_{org.pk}.csv"'
    return response


def _own_invoice(request: HttpRequest, invoice_id: int) -> Invoice:
    found = (
        with_status(Invoice.objects.filter(org=_org(request), pk=invoice_id))
        .select_related("org", "purchase")
        .first()
    )
    if found is None:
        raise Http404("no such invoice")
    return found


@org_admin
def invoice(request: HttpRequest, invoice_id: int) -> HttpResponse:
    return invoice_page(request, _own_invoice(request, invoice_id))


@org_admin
def invoice_download(request: HttpRequest, invoice_id: int) -> HttpResponse:
    found = _own_invoice(request, invoice_id)
    response = HttpResponse(invoice_pdf(found), content_type="application/pdf")
    response["Content-Disposition"] = f'attachment; filename="{found.number}.pdf"'
    return response


def home(request: HttpRequest) -> HttpResponseBase:
    """``/``: the marketplace; a learner is sent to their own page (the table refuses them)."""
    return marketplace(request)


# --- departments --------------------------------------------------------------------------------


def _departments_in_reach(request: HttpRequest, org: Organization) -> list[Department]:
    departments = Department.objects.filter(org=org).order_by("name", "pk")
    scope = _manager_of(request)
    if scope is not None:
        departments = departments.filter(pk__in=scope)
    return list(departments)


def _budget_field(value: str | None) -> int | None:
    """A budget typed in a form: blank for no limit (the rule on its range is the service's)."""
    if value is None or not value.strip():
        return None
    return _int(value, "budget_credits", low=0, high=ids.BIGINT_MAX)


def _department_form(request: HttpRequest, org: Organization) -> None:
    """Create or update one department from the page's forms (owners and admins only)."""
    fields: dict[str, Any] = {
        "name": request.POST.get("name", ""),
        "budget_credits": _budget_field(request.POST.get("budget_credits")),
        "budget_year_start": request.POST.get("budget_year_start") or "01-01",
    }
    if request.POST.get("action") == "update":
        pk = _id(request.POST.get("department_id"))
        if pk is None:
            raise NotFound("department not found")
        changed = tenancy_departments.update_department(org, pk, actor=_actor(request), **fields)
        messages.success(request, f"Department {changed.name} saved.")
    else:
        made = tenancy_departments.create_department(org, actor=_actor(request), **fields)
        messages.success(request, f"Department {made.name} created.")


@org_admin
@require_GET
def department_list(request: HttpRequest) -> HttpResponse:
    """Each department with its budget, what it has committed this budget year and what
    remains; owners and admins create, rename and budget them (``department_edit``),
    managers see theirs."""
    return _departments_page(request, _org(request))


@org_admin
@require_POST
def department_edit(request: HttpRequest) -> HttpResponse:
    """Create, rename or budget a department (owners and admins, by the access table)."""
    org = _org(request)
    try:
        _department_form(request, org)
    except NotFound:
        raise Http404("no such department") from None
    except DomainError as exc:
        _fail(request, exc)
        return _departments_page(request, org, status=status_for(exc), form=request.POST)
    return redirect("web:departments")


def _departments_page(
    request: HttpRequest, org: Organization, *, status: int = 200, form: Any = None
) -> HttpResponse:
    rows = _departments_in_reach(request, org)
    committed = budgets.committed_by_department(org, rows)
    return render(
        request,
        "web/departments.html",
        {
            "rows": [
                {
                    "department": d,
                    "committed": committed[d.pk],
                    "remaining": None
                    if d.budget_credits is None
                    else d.budget_credits - committed[d.pk],
                }
                for d in rows
            ],
            "can_edit": access.may(_role(request), "web:department_edit"),
            "form": form or {},
        },
        status=status,
    )
