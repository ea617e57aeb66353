"""Column formatters shared by the admin views: links to related records, lists, badges."""

from __future__ import annotations

from typing import Any

from flask import url_for
from markupsafe import Markup, escape

from backoffice.models import StudyStatus, Urgency

URGENCY_BADGE = {"HIGH": "danger", "MID": "warning", "LOW": "secondary"}
STATUS_BADGE = {
    "ORDERED": "light",
    "SCHEDULED": "info",
    "ARRIVED": "primary",
    "IN_PROGRESS": "warning",
    "PERFORMED": "secondary",
    "REPORTED": "success",
    "CANCELLED": "dark",
    "NO_SHOW": "danger",
}


def record_link(endpoint: str, obj: Any, text: object | None = None) -> Markup:
    """A link to a record's details page."""
    if obj is None:
        return Markup("")
    url = url_for(f"{endpoint}.details_view", id=obj.id)
    return Markup('<a href="{}">{}</a>').format(url, escape(str(obj if text is None else text)))


def relation_link(endpoint: str, attr: str):  # noqa: ANN201
    """Formatter factory: show a related record as a link to its details page."""

    def _fmt(view: Any, context: Any, model: Any, name: str) -> Markup:
        return record_link(endpoint, getattr(model, attr))

    return _fmt


def urgency_badge(value: Urgency | str | None) -> Markup:
    if value is None:
        return Markup("")
    urgency = Urgency.parse(value)
    return Markup('<span class="badge badge-{} urgency-{}">{}</span>').format(
        URGENCY_BADGE[urgency.value], urgency.value.lower(), urgency.label
    )


def urgency_formatter(view: Any, context: Any, model: Any, name: str) -> Markup:
    return urgency_badge(getattr(model, name))


def status_badge(value: StudyStatus | str | None) -> Markup:
    """A study's status as a badge with its label ("Checked in"), never its code."""
    if value is None:
        return Markup("")
    status = StudyStatus.parse(value)
    return Markup('<span class="badge badge-{} study-status status-{}">{}</span>').format(
        STATUS_BADGE[status.value], status.value.lower().replace("_", "-"), status.label
    )


def status_formatter(view: Any, context: Any, model: Any, name: str) -> Markup:
    return status_badge(getattr(model, name))


def bullet_list(items: list[Markup | str]) -> Markup:
    if not items:
        return Markup('<span class="text-muted">&mdash;</span>')
    inner = Markup("").join(Markup("<li>{}</li>").format(i) for i in items)
    return Markup('<ul class="list-unstyled mb-0">{}</ul>').format(inner)
