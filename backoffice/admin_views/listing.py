"""The patient–study listing: each patient with their studies, filtered, sorted and exportable."""

from __future__ import annotations

from typing import Any

from flask import abort, request, url_for
from flask_admin import expose

from backoffice.admin_views.base import SecuredBaseView
from backoffice.admin_views.formatters import urgency_badge
from backoffice.auth.permissions import Perm, can
from backoffice.extensions import db
from backoffice.models import StudyType, Urgency
from backoffice.services.export import FORMATS, export_response
from backoffice.services.listing import (
    PAGE_SIZES,
    ListingQuery,
    filter_choices,
    listing_export,
    listing_page,
)


class PatientStudiesView(SecuredBaseView):
    """Patients with their studies on one page: most urgent and newest studies first."""

    endpoint_permissions = {"index": Perm.VIEW, "export": Perm.EXPORT}
    menu_permission = Perm.VIEW

    @expose("/")
    def index(self) -> Any:
        query = ListingQuery.from_args(request.args)
        page = listing_page(query)
        clinics, doctors = filter_choices()

        def page_url(number: int) -> str:
            return url_for(".index", **query.to_args(page=number))

        return self.render(
            "admin/listing/index.html",
            listing=page,
            q=query,
            clinics=clinics,
            doctors=doctors,
            urgencies=Urgency.choices(),
            study_types=StudyType.choices(),
            page_sizes=PAGE_SIZES,
            page_url=page_url,
            export_args=query.to_args(page=0),
            can_export=can(Perm.EXPORT),
            can_edit=can(Perm.EDIT),
            urgency_badge=urgency_badge,
        )

    @expose("/export/<export_type>/")
    def export(self, export_type: str) -> Any:
        """Every page of the listing as a file: one row per study shown (see listing_export)."""
        if export_type not in FORMATS:
            abort(404)
        query = ListingQuery.from_args(request.args)
        return export_response(listing_export(query, db.engine.dialect.name), export_type)
