"""The operator console (Django admin): organizations, catalog, price book, adjustments,
refunds of paid purchases, and read-only views of the ledger, invoices, credit notes,
refunds, purchases, alerts and webhook deliveries, each linked to the records it belongs to
(a purchase to its receipt and refunds, a refund to its credit note, a credit note to the
invoice it credits).

Immutable records (ledger entries, lot draws, invoices and their lines and payments) have no
add, change or delete permission here; the database refuses such writes anyway. Every write
the console makes (organizations, catalog items, the price book, adjustments, refunds) goes
through the same service function as the API's, with its rules and its audit row.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

from django import forms
from django.contrib import admin, messages
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404, render
from django.urls import path, reverse
from django.utils.html import format_html
from django.utils.translation import ngettext

from learncredits import ids
from learncredits.audit.models import AuditEvent
from learncredits.billing import refunds
from learncredits.billing.models import (
    CreditNote,
    Invoice,
    InvoiceLine,
    InvoicePayment,
    InvoiceTaxLine,
    Refund,
    SellerDetails,
    TaxRateEntry,
    TaxRateTable,
)
from learncredits.billing.stripe_provider import StripeProviderError
from learncredits.catalog.models import Content, PriceBook, PriceTier
from learncredits.catalog.services import (
    clean_content,
    create_content,
    current_price_book,
    set_price_book,
    update_content,
)
from learncredits.credits import accounts, actions
from learncredits.credits.models import Alert, Assignment, Balance, CreditLot, LedgerEntry, Purchase
from learncredits.domain import pricing
from learncredits.domain.errors import DomainError
from learncredits.domain.errors import http_status as status_for
from learncredits.ids import whole_number
from learncredits.notify.models import WebhookDelivery, WebhookEndpoint
from learncredits.tenancy import services as tenancy
from learncredits.tenancy.models import Employee, Organization

# django-stubs makes the admin's classes generic over their model; at run time they are not
# subscriptable, so the parameters exist for the type checker only.
if TYPE_CHECKING:
    _ModelAdmin = admin.ModelAdmin[Any]
    _TabularInline = admin.TabularInline[Any, Any]
    _ModelForm = forms.ModelForm[Any]
else:
    _ModelAdmin = admin.ModelAdmin
    _TabularInline = admin.TabularInline
    _ModelForm = forms.ModelForm

# The product's name on every console page: the header, the browser tab and the index.
admin.site.site_header = "learncredits operator console"
admin.site.site_title = "learncredits operator console"
admin.site.index_title = "learncredits operator console: every organization"


def operator_actor(request: HttpRequest) -> str:
    return f"operator:{request.user.get_username()}"


class ReadOnlyAdmin(_ModelAdmin):
    """Visible, searchable, never editable."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class OrgIdSearch(_ModelAdmin):
    """Search also takes an org's public id (``org_12``, as the API and the dashboard show
    it), which finds that org's rows only; any other term searches ``search_fields``."""

    def get_search_results(
        self, request: HttpRequest, queryset: Any, search_term: str
    ) -> tuple[Any, bool]:
        org_pk = ids.decode("org", search_term.strip())
        if org_pk is not None:
            return queryset.filter(org_id=org_pk), False
        return super().get_search_results(request, queryset, search_term)


def change_link(obj: Any, label: str, testid: str) -> str:
    """A link to ``obj``'s console page (read-only or not), or "-" when there is none."""
    if obj is None:
        return "-"
    opts = obj._meta
    url = reverse(f"admin:{opts.app_label}_{opts.model_name}_change", args=[obj.pk])
    return format_html('<a href="{}" data-testid="{}">{}</a>', url, testid, label)


def changelist_link(model: Any, query: str, label: str, testid: str) -> str:
    """A link to ``model``'s console list narrowed by ``query`` (a field lookup)."""
    opts = model._meta
    url = reverse(f"admin:{opts.app_label}_{opts.model_name}_changelist")
    return format_html('<a href="{}?{}" data-testid="{}">{}</a>', url, query, testid, label)


class AdjustmentForm(forms.Form):
    credits = forms.IntegerField(help_text="positive grants credits (at cost 0); negative removes")
    reason = forms.CharField(widget=forms.Textarea, max_length=2000, help_text="required")


class RefundForm(forms.Form):
    credits = forms.IntegerField(
        min_value=1,
        max_value=refunds.MAX_REFUND_CREDITS,
        help_text="unused credits of this purchase to give back, at its unit price",
    )
    reason = forms.CharField(widget=forms.Textarea, max_length=2000, help_text="required")
    # A one-time key made when the form is shown: a double click, a reload of the POST or a
    # retry after Stripe could not be reached carries on the same refund instead of a second.
    refund_key = forms.CharField(widget=forms.HiddenInput, max_length=64)

    def clean_refund_key(self) -> str:
        key: str = self.cleaned_data["refund_key"]
        if not key.isascii() or not key.isalnum():
            raise forms.ValidationError("the form is stale; open it again")
        return key


class BalanceInline(_TabularInline):
    model = Balance
    fields = ("credits", "assigned", "at_risk")
    readonly_fields = fields
    can_delete = False
    max_num = 0


@admin.register(Organization)
class OrganizationAdmin(_ModelAdmin):
    list_display = ("id", "name", "billing_email", "timezone", "alert_threshold", "created_at")
    search_fields = ("name", "billing_email")
    fields = ("name", "billing_email", "timezone", "alert_threshold", "alert_threshold_percent")
    inlines = [BalanceInline]
    change_form_template = "admin/learncredits/organization_change.html"

    def save_model(self, request: HttpRequest, obj: Organization, form: Any, change: bool) -> None:
        try:
            if change:
                # The row as stored, not ``obj``: the form has already put the new values on
                # ``obj``, and the audit row's "before" must be what was there.
                accounts.update_org_settings(
                    tenancy.get_org(obj.pk),
                    {f: getattr(obj, f) for f in form.changed_data},
                    actor=operator_actor(request),
                )
            else:
                created = accounts.create_org(
                    name=obj.name,
                    billing_email=obj.billing_email,
                    timezone_name=obj.timezone,
                    alert_threshold=obj.alert_threshold,
                    actor=operator_actor(request),
                )
                obj.pk = created.pk
        except DomainError as exc:
            messages.error(request, exc.detail)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def get_urls(self) -> list[Any]:
        custom = [
            path(
                "<int:org_id>/adjust/",
                self.admin_site.admin_view(self.adjust),
                name="learncredits_adjust",
            ),
        ]
        return custom + super().get_urls()

    def adjust(self, request: HttpRequest, org_id: int) -> HttpResponse:
        """An operator adjustment, with a required reason, through the one write path."""
        org = get_object_or_404(Organization, pk=org_id)
        form = AdjustmentForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            try:
                entry = actions.adjust_credits(
                    org,
                    form.cleaned_data["credits"],
                    reason=form.cleaned_data["reason"],
                    actor=operator_actor(request),
                )
            except DomainError as exc:
                form.add_error(None, exc.detail)
            else:
                messages.success(request, f"Adjusted {org.name} by {entry.credits_delta} credits.")
                return HttpResponseRedirect(
                    reverse("admin:tenancy_organization_change", args=[org.pk])
                )
        context = {
            **self.admin_site.each_context(request),
            "form": form,
            "org": org,
            "title": f"Adjust credits of {org.name}",
        }
        return render(request, "admin/learncredits/adjust.html", context)


@admin.register(Employee)
class EmployeeAdmin(ReadOnlyAdmin):
    list_display = ("id", "org", "name", "email", "active")
    list_filter = ("active",)
    search_fields = ("name", "email")


class ContentForm(_ModelForm):
    class Meta:
        model = Content
        fields = ("title", "premium", "credit_cost", "xapi_activity_id")

    def clean(self) -> dict[str, Any]:
        """The catalog service's own rule, so that a refusal shows on the form (the save
        goes through the service too, which checks it again)."""
        cleaned: dict[str, Any] = super().clean() or {}
        if {"title", "premium", "credit_cost"} <= cleaned.keys():
            try:
                clean_content(
                    title=cleaned["title"],
                    premium=cleaned["premium"],
                    credit_cost=cleaned["credit_cost"],
                    xapi_activity_id=cleaned.get("xapi_activity_id"),
                )
            except DomainError as exc:
                raise forms.ValidationError(exc.detail) from None
        return cleaned


@admin.register(Content)
class ContentAdmin(_ModelAdmin):
    form = ContentForm
    list_display = ("id", "title", "premium", "credit_cost", "xapi_activity_id")
    search_fields = ("title",)

    def save_model(self, request: HttpRequest, obj: Content, form: Any, change: bool) -> None:
        """Creating and editing both go through the catalog service (its rule, its audit)."""
        actor = operator_actor(request)
        try:
            if change:
                update_content(
                    obj.pk,
                    title=obj.title,
                    premium=obj.premium,
                    credit_cost=obj.credit_cost,
                    xapi_activity_id=obj.xapi_activity_id,
                    actor=actor,
                )
            else:
                obj.pk = create_content(
                    title=obj.title,
                    premium=obj.premium,
                    credit_cost=obj.credit_cost,
                    xapi_activity_id=obj.xapi_activity_id,
                    actor=actor,
                ).pk
        except DomainError as exc:
            messages.error(request, exc.detail)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class PriceBookForm(forms.Form):
    retail_unit_price_cents = forms.IntegerField(min_value=1)
    tiers = forms.CharField(
        widget=forms.Textarea,
        help_text="one tier per line: min_quantity unit_price_cents (e.g. '50 900')",
    )

    def clean_tiers(self) -> list[pricing.Tier]:
        tiers = []
        for number, line in enumerate(self.cleaned_data["tiers"].splitlines(), start=1):
            if not line.strip():
                continue
            # ASCII digits only: '²'.isdigit() is true, yet int('²') fails.
            numbers = [n for n in (whole_number(p, low=0) for p in line.split()) if n is not None]
            if len(numbers) != 2 or len(line.split()) != 2:
                raise forms.ValidationError(f"line {number}: two whole numbers, please")
            tiers.append(pricing.Tier(numbers[0], numbers[1]))
        return tiers


class PriceTierInline(_TabularInline):
    model = PriceTier
    fields = ("min_quantity", "unit_price_cents")
    readonly_fields = fields
    can_delete = False
    max_num = 0


@admin.register(PriceBook)
class PriceBookAdmin(ReadOnlyAdmin):
    """Versions of the price book; a new version is set with validation, never edited."""

    list_display = ("id", "retail_unit_price_cents", "currency", "created_at", "created_by")
    inlines = [PriceTierInline]
    change_list_template = "admin/learncredits/pricebook_changelist.html"

    def get_urls(self) -> list[Any]:
        own = path("set/", self.admin_site.admin_view(self.set_book), name="learncredits_set_price")
        return [own, *super().get_urls()]

    def set_book(self, request: HttpRequest) -> HttpResponse:
        book = current_price_book()
        initial = {
            "retail_unit_price_cents": book.retail_unit_price_cents,
            "tiers": "\n".join(f"{t.min_quantity} {t.unit_price_cents}" for t in book.tiers),
        }
        form = PriceBookForm(request.POST or None, initial=initial)
        if request.method == "POST" and form.is_valid():
            try:
                set_price_book(
                    form.cleaned_data["retail_unit_price_cents"],
                    form.cleaned_data["tiers"],
                    actor=operator_actor(request),
                )
            except DomainError as exc:
                problems = exc.extra.get("errors")
                for problem in problems if isinstance(problems, list) else [exc.detail]:
                    form.add_error(None, str(problem))
            else:
                messages.success(request, "New price book in force.")
                return HttpResponseRedirect(reverse("admin:catalog_pricebook_changelist"))
        context = {
            **self.admin_site.each_context(request),
            "form": form,
            "title": "Set the price book",
        }
        return render(request, "admin/learncredits/set_price_book.html", context)


@admin.register(LedgerEntry)
class LedgerEntryAdmin(ReadOnlyAdmin):
    list_display = (
        "id",
        "org",
        "type",
        "credits_delta",
        "assigned_delta",
        "overage_credits",
        "credits_after",
        "assigned_after",
        "actor",
        "created_at",
    )
    list_filter = ("type",)
    search_fields = ("org__name", "actor", "reason")


@admin.register(Purchase)
class PurchaseAdmin(OrgIdSearch, ReadOnlyAdmin):
    list_display = (
        "id",
        "org",
        "quantity",
        "unit_price_cents",
        "total_cents",
        "status",
        "created_at",
        "refund_link",
    )
    list_filter = ("status",)
    search_fields = ("org__name",)
    list_select_related = ("org",)
    readonly_fields = ("refund_link", "receipt_link", "refunds_link")

    @admin.display(description="receipt")
    def receipt_link(self, obj: Purchase) -> str:
        """The purchase's receipt (an invoice of kind purchase), once it is paid."""
        receipt = Invoice.objects.filter(org_id=obj.org_id, purchase_id=obj.pk).first()
        return change_link(receipt, receipt.number if receipt else "", "receipt-link")

    @admin.display(description="refunds")
    def refunds_link(self, obj: Purchase) -> str:
        """The refunds made of this purchase, each with its credit note, in their own list."""
        count = Refund.objects.filter(org_id=obj.org_id, purchase_id=obj.pk).count()
        if not count:
            return "none"
        return changelist_link(
            Refund,
            f"purchase__id__exact={obj.pk}",
            ngettext("%(count)d refund", "%(count)d refunds", count) % {"count": count},
            "purchase-refunds",
        )

    @admin.display(description="refund")
    def refund_link(self, obj: Purchase) -> str:
        """A way into the refund form, on paid purchases only (nothing else can be refunded)."""
        if obj.status != Purchase.Status.PAID:
            return "-"
        url = reverse("admin:learncredits_refund", args=[obj.pk])
        return format_html('<a href="{}" data-testid="refund-link">Refund</a>', url)

    def get_urls(self) -> list[Any]:
        own = path(
            "<int:object_id>/refund/",
            self.admin_site.admin_view(self.refund),
            name="learncredits_refund",
        )
        return [own, *super().get_urls()]

    def refund(self, request: HttpRequest, object_id: int) -> HttpResponse:
        """Refund unused credits of a paid purchase through ``refunds.refund_purchase``, the
        function the API's refund route calls, so the console cannot refund differently
        (limits, credit note, money back once). The result is shown on this page: the credit
        note's number, or the service's own reason for refusing."""
        purchase = get_object_or_404(Purchase.objects.select_related("org"), pk=object_id)
        form = RefundForm(request.POST or None, initial={"refund_key": uuid.uuid4().hex})
        status = 200
        if request.method == "POST" and form.is_valid():
            try:
                refund = refunds.refund_purchase(
                    purchase.org,
                    purchase.pk,
                    form.cleaned_data["credits"],
                    reason=form.cleaned_data["reason"],
                    actor=operator_actor(request),
                    idempotency_key=(
                        f"console:{request.user.pk}:{form.cleaned_data['refund_key']}"
                    ),
                )
            except DomainError as exc:
                form.add_error(None, exc.detail)
                status = status_for(exc)
            except StripeProviderError as exc:
                # The credits and the credit note are committed, the money is not yet back:
                # submitting the same form again (same key) finishes it, so does the worker.
                form.add_error(None, f"Stripe could not be reached; submit again ({exc}).")
                status = 502
            else:
                note = refund.credit_note
                messages.success(
                    request,
                    f"Refunded {refund.credits} credits of {ids.encode('purchase', purchase.pk)}:"
                    f" credit note {note.number}.",
                )
                return HttpResponseRedirect(
                    reverse("admin:learncredits_refund", args=[purchase.pk])
                )
        lot = CreditLot.objects.filter(purchase_id=purchase.pk).first()
        balance = Balance.objects.filter(org_id=purchase.org_id).first()
        context = {
            **self.admin_site.each_context(request),
            "form": form,
            "purchase": purchase,
            "public_id": ids.encode("purchase", purchase.pk),
            "paid": purchase.status == Purchase.Status.PAID,
            "lot_remaining": lot.remaining if lot is not None else 0,
            "available": (balance.credits - balance.assigned) if balance is not None else 0,
            "refunds": Refund.objects.filter(purchase_id=purchase.pk)
            .select_related("credit_note")
            .order_by("pk"),
            "opts": self.model._meta,
            "title": f"Refund purchase {ids.encode('purchase', purchase.pk)} of {purchase.org}",
        }
        return render(request, "admin/learncredits/refund.html", context, status=status)


@admin.register(Assignment)
class AssignmentAdmin(ReadOnlyAdmin):
    list_display = (
        "id",
        "org",
        "employee",
        "content",
        "status",
        "credit_cost",
        "charged_credits",
        "overage_credits",
        "created_at",
    )
    list_filter = ("status",)


class InvoiceLineInline(_TabularInline):
    model = InvoiceLine
    fields = ("position", "description", "quantity", "unit_price_cents", "amount_cents")
    readonly_fields = fields
    can_delete = False
    max_num = 0


class InvoiceTaxLineInline(_TabularInline):
    model = InvoiceTaxLine
    fields = ("position", "name", "rate_bps", "country", "region", "taxable_cents", "amount_cents")
    readonly_fields = fields
    can_delete = False
    max_num = 0


@admin.register(Invoice)
class InvoiceAdmin(ReadOnlyAdmin):
    """Receipts, monthly invoices and credit notes (``kind``); a credit note names the
    invoice it credits, and searching an invoice's number also finds its credit notes."""

    list_display = (
        "number",
        "org",
        "kind",
        "credits_invoice",
        "period",
        "total_cents",
        "tax_cents",
        "tax_treatment",
        "issued_at",
        "due_at",
    )
    list_filter = ("kind", "tax_treatment")
    search_fields = ("number", "org__name", "credits_invoice__number")
    list_select_related = ("org", "credits_invoice")
    readonly_fields = ("credit_notes_link", "refunds_link")
    inlines = [InvoiceLineInline, InvoiceTaxLineInline]

    @admin.display(description="credit notes")
    def credit_notes_link(self, obj: Invoice) -> str:
        """The credit notes issued against this invoice (none on a credit note itself)."""
        if obj.kind == Invoice.Kind.CREDIT_NOTE:
            return "-"
        count = Invoice.objects.filter(org_id=obj.org_id, credits_invoice_id=obj.pk).count()
        if not count:
            return "none"
        return changelist_link(
            CreditNote,
            f"credits_invoice__id__exact={obj.pk}",
            ngettext("%(count)d credit note", "%(count)d credit notes", count) % {"count": count},
            "invoice-credit-notes",
        )

    @admin.display(description="refunds")
    def refunds_link(self, obj: Invoice) -> str:
        """Money given back: a credit note's own refund, or a receipt's purchase's refunds."""
        if obj.kind == Invoice.Kind.CREDIT_NOTE:
            refund = Refund.objects.filter(org_id=obj.org_id, credit_note_id=obj.pk).first()
            return change_link(refund, f"refund {refund.pk}" if refund else "", "invoice-refund")
        if obj.purchase_id is None:
            return "-"
        count = Refund.objects.filter(org_id=obj.org_id, purchase_id=obj.purchase_id).count()
        if not count:
            return "none"
        return changelist_link(
            Refund,
            f"purchase__id__exact={obj.purchase_id}",
            ngettext("%(count)d refund", "%(count)d refunds", count) % {"count": count},
            "invoice-refunds",
        )


@admin.register(CreditNote)
class CreditNoteAdmin(OrgIdSearch, ReadOnlyAdmin):
    """Credit notes on their own: the invoices of kind credit_note, each with the invoice it
    credits and the refund that gave the money back (a credit note for a disputed overage
    line has none). Read-only: they are issued by the refund form on a purchase and by the
    API (``POST .../credit-note``), through billing/refunds.py."""

    list_display = (
        "number",
        "org",
        "credited_invoice",
        "refund",
        "total_cents",
        "tax_cents",
        "issued_at",
    )
    search_fields = ("number", "org__name", "credits_invoice__number")
    search_help_text = "a credit note's number, the credited invoice's number, an org's name or id"
    list_select_related = ("org", "credits_invoice")
    readonly_fields = ("credited_invoice", "refund")
    inlines = [InvoiceLineInline, InvoiceTaxLineInline]

    def get_queryset(self, request: HttpRequest) -> Any:
        return super().get_queryset(request).filter(kind=Invoice.Kind.CREDIT_NOTE)

    @admin.display(description="credits invoice", ordering="credits_invoice__number")
    def credited_invoice(self, obj: CreditNote) -> str:
        credited = obj.credits_invoice
        return change_link(credited, credited.number if credited else "", "credited-invoice")

    @admin.display(description="refund")
    def refund(self, obj: CreditNote) -> str:
        refund = Refund.objects.filter(org_id=obj.org_id, credit_note_id=obj.pk).first()
        return change_link(refund, f"refund {refund.pk}" if refund else "", "credit-note-refund")


@admin.register(Refund)
class RefundAdmin(OrgIdSearch, ReadOnlyAdmin):
    """Money given back, one row per refund, with its purchase and credit note. Read-only:
    a refund is made with the refund form of a paid purchase (or the API), through
    ``refunds.refund_purchase``, which takes the credits back and issues the credit note in
    the same transaction; a pending one is finished by the worker."""

    list_display = (
        "id",
        "org",
        "purchase_link",
        "credit_note_link",
        "credits",
        "amount_cents",
        "currency",
        "status",
        "provider",
        "actor",
        "created_at",
        "done_at",
    )
    list_filter = ("status", "provider")
    search_fields = ("org__name", "credit_note__number", "reason", "actor")
    search_help_text = "a credit note's number, an org's name or id, a purchase's id, the reason"
    list_select_related = ("org", "purchase", "credit_note")
    readonly_fields = ("purchase_link", "credit_note_link")
    exclude = ("idempotency_key",)

    def get_search_results(
        self, request: HttpRequest, queryset: Any, search_term: str
    ) -> tuple[Any, bool]:
        purchase_pk = ids.decode("purchase", search_term.strip())
        if purchase_pk is not None:
            return queryset.filter(purchase_id=purchase_pk), False
        return super().get_search_results(request, queryset, search_term)

    @admin.display(description="purchase", ordering="purchase")
    def purchase_link(self, obj: Refund) -> str:
        purchase = obj.purchase
        return change_link(
            purchase, ids.encode("purchase", obj.purchase_id) or "", "refund-purchase"
        )

    @admin.display(description="credit note", ordering="credit_note__number")
    def credit_note_link(self, obj: Refund) -> str:
        """To the credit note's own page (its lines, the invoice it credits)."""
        note = obj.credit_note
        url = reverse("admin:billing_creditnote_change", args=[note.pk])
        return format_html('<a href="{}" data-testid="refund-credit-note">{}</a>', url, note.number)


class TaxRateEntryInline(_TabularInline):
    model = TaxRateEntry
    fields = ("country", "region", "name", "rate_bps", "effective_from")
    readonly_fields = fields
    can_delete = False
    max_num = 0


@admin.register(TaxRateTable)
class TaxRateTableAdmin(ReadOnlyAdmin):
    """Versions of the tax rate schedule (set with ``PUT /tax/rates``, validated, never
    edited); the newest is in force."""

    list_display = ("id", "created_at", "created_by")
    inlines = [TaxRateEntryInline]


@admin.register(SellerDetails)
class SellerDetailsAdmin(ReadOnlyAdmin):
    """The seller's details printed on new documents (set with ``PUT /seller``)."""

    list_display = ("legal_name", "country", "tax_id", "updated_at", "updated_by")


@admin.register(InvoicePayment)
class InvoicePaymentAdmin(ReadOnlyAdmin):
    list_display = (
        "invoice",
        "attempt",
        "approved",
        "amount_cents",
        "failure_reason",
        "attempted_at",
    )


@admin.register(Alert)
class AlertAdmin(ReadOnlyAdmin):
    list_display = ("id", "org", "kind", "period", "active", "created_at", "resolved_at")
    list_filter = ("kind", "active")


@admin.register(WebhookEndpoint)
class WebhookEndpointAdmin(ReadOnlyAdmin):
    list_display = ("id", "org", "url", "active", "consecutive_failures", "created_at")
    exclude = ("secret",)


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(ReadOnlyAdmin):
    list_display = (
        "id",
        "org",
        "endpoint",
        "event_type",
        "status",
        "attempts",
        "last_status_code",
        "created_at",
    )
    list_filter = ("status", "event_type")


@admin.register(AuditEvent)
class AuditEventAdmin(ReadOnlyAdmin):
    list_display = ("created_at", "actor", "action", "org_id", "target", "ip_address")
    list_filter = ("action",)
    search_fields = ("actor", "target", "action")
