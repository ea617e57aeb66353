"""No export goes unaudited: its EXPORT entry is committed before the first byte leaves, its
EXPORT_END entry (rows, outcome) after the last; a CSV says its charset once."""

from __future__ import annotations

import logging

import pytest
from sqlalchemy import select
from sqlalchemy.exc import OperationalError

from backoffice.extensions import db
from backoffice.models import AuditEntry, RoleName
from backoffice.services import audit as audit_service
from tests.conftest import AuthActions
from tests.factories import make_patient


@pytest.fixture
def manager(client):  # noqa: ANN001, ANN201
    for i in range(3):
        make_patient("Exportada", f"Apellido{i}", mrn=f"EXA-{i}")
    db.session.commit()
    AuthActions(client).as_role(RoleName.MANAGER, email="export-audit@test.example.com")
    return client


def entries(action: str) -> list[AuditEntry]:
    db.session.expire_all()
    return db.session.scalars(
        select(AuditEntry).where(AuditEntry.action == action).order_by(AuditEntry.id)
    ).all()


@pytest.mark.parametrize("fmt", ["csv", "xlsx"])
def test_the_export_is_recorded_before_its_first_byte(manager, fmt):
    response = manager.get(f"/admin/patient/export/{fmt}/?search=Exportada", buffered=False)
    (intent,) = entries("EXPORT")  # the body has not been read yet
    assert intent.entity == "patient" and intent.details["format"] == fmt
    assert intent.details["search"] == "Exportada"
    assert entries("EXPORT_END") == []
    body = b"".join(response.response)
    response.close()
    assert body
    (end,) = entries("EXPORT_END")
    assert end.details == {
        "export": intent.details["export"],
        "format": fmt,
        "rows": 3,
        "outcome": "completed",
    }
    assert end.actor_id == intent.actor_id is not None


def test_the_export_entry_stays_when_the_database_drops_at_the_end(manager, monkeypatch, caplog):
    """The stream ends, the outcome cannot be written: the EXPORT entry written before the
    first byte still says who exported what; the log says what failed, not its message."""
    response = manager.get("/admin/patient/export/csv/", buffered=False)
    real = audit_service.append_entries
    message = "-".join(("server", "closed", "the", "connection"))  # not in any source line

    def database_gone(connection, rows):  # noqa: ANN001, ANN202
        if rows and rows[0]["action"] == "EXPORT_END":
            raise OperationalError("INSERT", {}, Exception(message))
        return real(connection, rows)

    caplog.set_level(logging.INFO)
    monkeypatch.setattr(audit_service, "append_entries", database_gone)
    body = b"".join(response.response)
    response.close()
    monkeypatch.undo()
    assert body.count(b"\r\n") == 1 + 3  # the file itself is whole
    (intent,) = entries("EXPORT")
    assert intent.details["format"] == "csv"
    assert entries("EXPORT_END") == []
    assert "the audit entry could not be written: OperationalError" in caplog.text
    assert message not in caplog.text


def test_no_file_leaves_when_its_entry_cannot_be_written(manager, monkeypatch, app):
    monkeypatch.setitem(app.config, "PROPAGATE_EXCEPTIONS", False)

    def database_gone(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        raise OperationalError("INSERT", {}, Exception("server closed the connection"))

    monkeypatch.setattr(audit_service, "append_entries", database_gone)
    response = manager.get("/admin/patient/export/csv/")
    monkeypatch.undo()
    assert response.status_code == 503
    assert "attachment" not in response.headers.get("Content-Disposition", "")
    assert b"EXA-" not in response.get_data()
    assert entries("EXPORT") == [] and entries("EXPORT_END") == []


def test_an_export_cut_off_by_the_client_says_so(manager, monkeypatch):
    from backoffice.services import export as export_service

    monkeypatch.setattr(export_service, "BATCH_ROWS", 1)
    response = manager.get("/admin/patient/export/csv/", buffered=False)
    chunks = iter(response.response)
    next(chunks), next(chunks)
    response.close()  # the client went away after one row
    (end,) = entries("EXPORT_END")
    assert end.details["outcome"] == "interrupted" and end.details["rows"] == 1


@pytest.mark.parametrize(
    "url, content_type",
    [
        ("/admin/patient/export/csv/", "text/csv; charset=utf-8"),
        ("/admin/patient-studies/export/csv/", "text/csv; charset=utf-8"),
        (
            "/admin/patient/export/xlsx/",
            "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        ),
    ],
)
def test_the_content_type_says_its_charset_once(manager, url, content_type):
    response = manager.get(url)
    assert response.headers["Content-Type"] == content_type
    assert response.get_data()  # read to its end, as a browser does
    response.close()
