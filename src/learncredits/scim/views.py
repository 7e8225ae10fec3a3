"""The SCIM 2.0 endpoints (RFC 7644) under /scim/v2/: parse with scim2-models, call
``scim.provisioning``, answer ``application/scim+json``. Every refusal is an RFC 7644 error
body with its ``scimType``."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.views.decorators.csrf import csrf_exempt
from pydantic import ValidationError
from scim2_models import (
    Context,
    Error,
    Group,
    InvalidFilterException,
    InvalidSyntaxException,
    InvalidValueException,
    ListResponse,
    NotFoundException,
    PatchOp,
    Resource,
    ResponseParameters,
    SCIMException,
    User,
)

from learncredits.domain.errors import AlreadyExists, DomainError, NotFound
from learncredits.scim import provisioning as prov
from learncredits.scim import resources
from learncredits.tenancy.models import Department, Employee
from learncredits.tenancy.scim_tokens import ScimCaller, authenticate_scim_token

CONTENT_TYPE = "application/scim+json"
_JSON_TYPES = ("application/scim+json", "application/json")
DEFAULT_COUNT = 100
_FILTER = re.compile(r'\s*([A-Za-z]+)\s+eq\s+"((?:[^"\\]|\\.)*)"\s*', re.ASCII | re.IGNORECASE)
_USER_FILTERS = {"username": "userName", "externalid": "externalId"}
_GROUP_FILTERS = {"displayname": "displayName", "externalid": "externalId"}
_PATCH_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:PatchOp"


def _answer(data: dict[str, Any], status: int = 200) -> HttpResponse:
    response = HttpResponse(json.dumps(data), status=status, content_type=CONTENT_TYPE)
    return response


def _error(status: int, detail: str, scim_type: str | None = None) -> HttpResponse:
    body = Error(status=status, scim_type=scim_type, detail=detail).model_dump(
        scim_ctx=Context.RESOURCE_QUERY_RESPONSE
    )
    response = _answer(body, status)
    if status == 401:
        response["WWW-Authenticate"] = 'Bearer realm="learncredits SCIM"'
    return response


def _base_url(request: HttpRequest) -> str:
    base: str = settings.LEARNCREDITS_BASE_URL or request.build_absolute_uri("/")
    return base.rstrip("/")


class _Unauthorized(Exception):
    pass


def _caller(request: HttpRequest) -> ScimCaller:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    token = token.strip()
    found = None
    if scheme.lower() == "bearer" and token and len(token) <= 512:
        found = authenticate_scim_token(token)
    if found is None:
        raise _Unauthorized
    return found


def _body(request: HttpRequest) -> dict[str, Any]:
    media_type = request.content_type.lower() if request.content_type else ""
    if media_type and media_type not in _JSON_TYPES:
        raise InvalidSyntaxException(detail=f"the body must be {CONTENT_TYPE}, not {media_type}")
    try:
        data = json.loads(request.body.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise InvalidSyntaxException(detail="the body is not JSON") from None
    if not isinstance(data, dict):
        raise InvalidSyntaxException(detail="the body must be a JSON object")
    return data


def _parameters(request: HttpRequest, model: type[Resource[Any]]) -> ResponseParameters[Any]:
    raw = {
        key: request.GET[name]
        for key, name in (
            ("attributes", "attributes"),
            ("excluded_attributes", "excludedAttributes"),
        )
        if request.GET.get(name)
    }
    try:
        return ResponseParameters[model].model_validate(raw)  # type: ignore[valid-type]
    except ValidationError:
        raise InvalidValueException(
            detail="attributes or excludedAttributes is not valid"
        ) from None


def _dump(
    model: type[Resource[Any]], data: dict[str, Any], params: ResponseParameters[Any] | None
) -> dict[str, Any]:
    resource = model.model_validate(data)
    dumped: dict[str, Any] = resource.model_dump(
        scim_ctx=Context.RESOURCE_QUERY_RESPONSE, response_parameters=params
    )
    return dumped


def _validated(model: type[Resource[Any]], data: dict[str, Any], ctx: Context) -> dict[str, Any]:
    """The request's resource through the model (types, required attributes, mutability)
    and back as SCIM attributes."""
    resource = model.model_validate(data, scim_ctx=ctx)
    dumped: dict[str, Any] = resource.model_dump(scim_ctx=Context.RESOURCE_REPLACEMENT_REQUEST)
    return dumped


def _paging(request: HttpRequest) -> tuple[int, int]:
    def number(name: str, default: int) -> int:
        raw = request.GET.get(name)
        if raw is None or raw == "":
            return default
        try:
            return int(raw)
        except ValueError:
            raise InvalidValueException(detail=f"{name} must be a whole number") from None

    start = max(1, number("startIndex", 1))
    count = min(max(0, number("count", DEFAULT_COUNT)), resources.MAX_COUNT)
    return start, count


def _filtered(request: HttpRequest, rows: QuerySet[Any], allowed: dict[str, str]) -> QuerySet[Any]:
    text = request.GET.get("filter")
    if text is None:
        return rows
    match = _FILTER.fullmatch(text)
    if match is None or match.group(1).lower() not in allowed:
        supported = " or ".join(f'{a} eq "..."' for a in allowed.values())
        raise InvalidFilterException(detail=f"filter must be {supported}")
    attribute = allowed[match.group(1).lower()]
    value = json.loads(f'"{match.group(2)}"') if "\\" in match.group(2) else match.group(2)
    if attribute == "userName":
        return rows.filter(prov.user_name_matches(value))
    if attribute == "displayName":
        return rows.filter(name__iexact=value)
    return rows.filter(external_id=value)


def _list(
    request: HttpRequest,
    rows: QuerySet[Any],
    model: type[Resource[Any]],
    show: Callable[[Any], dict[str, Any]],
) -> HttpResponse:
    params = _parameters(request, model)
    start, count = _paging(request)
    total = rows.count()
    page = list(rows.order_by("pk")[start - 1 : start - 1 + count]) if count else []
    listed = ListResponse[model](  # type: ignore[valid-type]
        total_results=total,
        start_index=start,
        items_per_page=len(page),
        resources=[model.model_validate(show(row)) for row in page],
    )
    return _answer(
        listed.model_dump(scim_ctx=Context.RESOURCE_QUERY_RESPONSE, response_parameters=params)
    )


def _entra_patch(body: dict[str, Any]) -> dict[str, Any]:
    """Microsoft Entra removes group members with their ids in ``value`` (RFC 7644 puts them
    in a path filter); each such removal is read as one ``members[value eq "..."]``."""
    operations = body.get("Operations")
    if not isinstance(operations, list):
        return body
    rewritten: list[Any] = []
    for operation in operations:
        if (
            isinstance(operation, dict)
            and str(operation.get("op", "")).lower() == "remove"
            and str(operation.get("path", "")).strip().lower() == "members"
            and isinstance(operation.get("value"), list)
        ):
            for member in operation["value"]:
                value = member.get("value") if isinstance(member, dict) else member
                if not isinstance(value, str) or '"' in value or "\\" in value:
                    raise InvalidValueException(detail="members: each value must be an id")
                rewritten.append({"op": "remove", "path": f'members[value eq "{value}"]'})
        else:
            rewritten.append(operation)
    return {**body, "Operations": rewritten}


def _patched(
    model: type[Resource[Any]], current: dict[str, Any], body: dict[str, Any]
) -> dict[str, Any]:
    body = _entra_patch(body)
    body.setdefault("schemas", [_PATCH_SCHEMA])
    patch = PatchOp[model].model_validate(body, scim_ctx=Context.RESOURCE_PATCH_REQUEST)  # type: ignore[valid-type]
    resource = model.model_validate(current)
    patch.patch(resource)
    dumped: dict[str, Any] = resource.model_dump(scim_ctx=Context.RESOURCE_REPLACEMENT_REQUEST)
    return dumped


# --- the endpoints ---------------------------------------------------------------------------


def _user(request: HttpRequest, employee: Employee) -> dict[str, Any]:
    return resources.user_attributes(employee, prov.profile_of(employee), _base_url(request))


def _group(request: HttpRequest, department: Department) -> dict[str, Any]:
    return resources.group_attributes(department, prov.members_of(department), _base_url(request))


def users(request: HttpRequest, caller: ScimCaller) -> HttpResponse:
    if request.method == "GET":
        rows = _filtered(request, prov.visible_employees(caller.org), _USER_FILTERS)
        return _list(request, rows, User, lambda e: _user(request, e))
    if request.method == "POST":
        attributes = _validated(User, _body(request), Context.RESOURCE_CREATION_REQUEST)
        employee = prov.create_user(caller, attributes)
        return _answer(_dump(User, _user(request, employee), _parameters(request, User)), 201)
    return _error(405, f"{request.method} is not allowed on /Users")


def user(request: HttpRequest, caller: ScimCaller, public_id: str) -> HttpResponse:
    employee = prov.get_visible_employee(caller.org, public_id)
    if request.method == "GET":
        return _answer(_dump(User, _user(request, employee), _parameters(request, User)))
    if request.method == "PUT":
        attributes = _validated(User, _body(request), Context.RESOURCE_REPLACEMENT_REQUEST)
        employee = prov.replace_user(caller, employee.pk, attributes)
    elif request.method == "PATCH":
        attributes = _patched(User, _user(request, employee), _body(request))
        employee = prov.replace_user(caller, employee.pk, attributes)
    elif request.method == "DELETE":
        prov.delete_user(caller, employee.pk)
        return HttpResponse(status=204)
    else:
        return _error(405, f"{request.method} is not allowed on a User")
    return _answer(_dump(User, _user(request, employee), _parameters(request, User)))


def groups(request: HttpRequest, caller: ScimCaller) -> HttpResponse:
    if request.method == "GET":
        rows = _filtered(request, Department.objects.filter(org=caller.org), _GROUP_FILTERS)
        return _list(request, rows, Group, lambda d: _group(request, d))
    if request.method == "POST":
        attributes = _validated(Group, _body(request), Context.RESOURCE_CREATION_REQUEST)
        department = prov.create_group(caller, attributes)
        return _answer(_dump(Group, _group(request, department), _parameters(request, Group)), 201)
    return _error(405, f"{request.method} is not allowed on /Groups")


def group(request: HttpRequest, caller: ScimCaller, public_id: str) -> HttpResponse:
    department = prov.get_department(caller.org, public_id)
    if request.method == "GET":
        return _answer(_dump(Group, _group(request, department), _parameters(request, Group)))
    if request.method == "PUT":
        attributes = _validated(Group, _body(request), Context.RESOURCE_REPLACEMENT_REQUEST)
        department = prov.replace_group(caller, department.pk, attributes)
    elif request.method == "PATCH":
        attributes = _patched(Group, _group(request, department), _body(request))
        department = prov.replace_group(caller, department.pk, attributes)
    elif request.method == "DELETE":
        prov.delete_group(caller, department.pk)
        return HttpResponse(status=204)
    else:
        return _error(405, f"{request.method} is not allowed on a Group")
    return _answer(_dump(Group, _group(request, department), _parameters(request, Group)))


def _discovery_list(items: list[dict[str, Any]]) -> HttpResponse:
    return _answer(
        {
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:ListResponse"],
            "totalResults": len(items),
            "startIndex": 1,
            "itemsPerPage": len(items),
            "Resources": items,
        }
    )


def _with_meta(item: dict[str, Any], kind: str, where: str) -> dict[str, Any]:
    return {**item, "meta": {"resourceType": kind, "location": where}}


def _schemas(request: HttpRequest) -> list[dict[str, Any]]:
    base = _base_url(request)
    return [
        _with_meta(s, "Schema", f"{base}/scim/v2/Schemas/{s['id']}")
        for s in (resources.user_schema(), resources.group_schema())
    ]


def _resource_types(request: HttpRequest) -> list[dict[str, Any]]:
    base = _base_url(request)
    answer = []
    for resource_type in resources.resource_types():
        dumped = resource_type.model_dump(scim_ctx=Context.RESOURCE_QUERY_RESPONSE)
        answer.append(
            _with_meta(dumped, "ResourceType", f"{base}/scim/v2/ResourceTypes/{dumped['id']}")
        )
    return answer


def discovery(request: HttpRequest, caller: ScimCaller, what: str, key: str | None) -> HttpResponse:
    if request.method != "GET":
        return _error(405, f"{request.method} is not allowed on /{what}")
    if what == "ServiceProviderConfig":
        if key is not None:
            raise NotFoundException(detail="not found")
        config = resources.service_provider_config(_base_url(request)).model_dump(
            scim_ctx=Context.RESOURCE_QUERY_RESPONSE
        )
        config["meta"] = {
            "resourceType": "ServiceProviderConfig",
            "location": f"{_base_url(request)}/scim/v2/ServiceProviderConfig",
        }
        return _answer(config)
    items = _schemas(request) if what == "Schemas" else _resource_types(request)
    if key is None:
        if request.GET.get("filter"):
            raise InvalidFilterException(detail=f"/{what} cannot be filtered")
        return _discovery_list(items)
    for item in items:
        if item["id"] == key:
            return _answer(item)
    raise NotFoundException(detail=f"no such {what[:-1]}")


_ROUTES: dict[str, Callable[..., HttpResponse]] = {"Users": users, "Groups": groups}
_ONE: dict[str, Callable[..., HttpResponse]] = {"Users": user, "Groups": group}


@csrf_exempt
def endpoint(request: HttpRequest, rest: str = "") -> HttpResponse:
    """Every /scim/v2/ request: authenticate the token, route, and turn every refusal into
    an RFC 7644 error."""
    try:
        caller = _caller(request)
        parts = [p for p in rest.split("/") if p]
        if len(parts) in (1, 2) and parts[0] in (
            "ServiceProviderConfig",
            "Schemas",
            "ResourceTypes",
        ):
            return discovery(request, caller, parts[0], parts[1] if len(parts) == 2 else None)
        if len(parts) == 1 and parts[0] in _ROUTES:
            return _ROUTES[parts[0]](request, caller)
        if len(parts) == 2 and parts[0] in _ONE and parts[1] != ".search":
            return _ONE[parts[0]](request, caller, parts[1])
        if parts and parts[-1] == ".search" and request.method == "POST":
            return _error(501, "searching with POST .search is not supported")
        return _error(404, "no such SCIM endpoint")
    except _Unauthorized:
        return _error(401, "a valid SCIM token is required (Authorization: Bearer)")
    except SCIMException as exc:
        error = exc.to_error()
        return _error(error.status or 400, error.detail or str(exc), error.scim_type)
    except ValidationError as exc:
        errors = Error.from_validation_errors(exc)
        first = errors[0] if errors else Error(status=400, detail=str(exc))
        return _error(
            first.status or 400, first.detail or "invalid", first.scim_type or "invalidValue"
        )
    except RequestDataTooBig:
        return _error(413, "the request body is too large")
    except AlreadyExists as exc:
        return _error(409, exc.detail, "uniqueness")
    except NotFound as exc:
        return _error(404, exc.detail)
    except DomainError as exc:
        return _error(400, exc.detail, "invalidValue")
