"""The Bulk upload page: preview, confirm, modes, downloads, roles, CSRF, the command, RQ jobs."""

from __future__ import annotations

import csv
import io
import re
import uuid
from pathlib import Path

import pytest
from sqlalchemy import func, select

from backoffice.extensions import db
from backoffice.models import AuditEntry, ImportBatch, Patient, RoleName
from tests.conftest import csrf_token_from

DATA = Path(__file__).resolve().parent.parent / "backoffice" / "data"
BASE = "/admin/bulk-upload/"


@pytest.fixture(autouse=True)
def upload_dir(app, tmp_path):  # noqa: ANN001, ANN201
    previous = app.config.get("IMPORT_UPLOAD_DIR")
    app.config["IMPORT_UPLOAD_DIR"] = str(tmp_path / "uploads")
    yield tmp_path / "uploads"
    app.config["IMPORT_UPLOAD_DIR"] = previous


def patients() -> int:
    db.session.expire_all()
    return db.session.scalar(select(func.count()).select_from(Patient))


def upload(client, content: bytes, kind: str = "patients", name: str = "patients.csv"):  # noqa: ANN001, ANN201
    page = client.get(BASE)
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    token = re.search(r'name="token" value="([^"]+)"', html).group(1)
    return client.post(
        BASE + "upload",
        data={
            "csrf_token": csrf_token_from(html),
            "token": token,
            "kind": kind,
            "file": (io.BytesIO(content), name),
        },
        content_type="multipart/form-data",
    )


def confirm(client, status_url: str, skip_invalid: bool = False):  # noqa: ANN001, ANN201
    html = client.get(status_url).get_data(as_text=True)
    data = {"csrf_token": csrf_token_from(html)}
    if skip_invalid:
        data["skip_invalid"] = "1"
    return client.post(status_url + "confirm", data=data)


def counts_on(html: str) -> dict[str, int]:
    return {
        key: int(re.search(rf'id="count-{key}">(\d+)<', html).group(1))
        for key in ("created", "updated", "unchanged", "rejected")
    }


def test_preview_then_confirm_imports_the_reference_file(client, auth, upload_dir):
    user = auth.as_role(RoleName.OPERATOR)
    response = upload(client, (DATA / "patients.csv").read_bytes())
    assert response.status_code == 302
    status_url = response.headers["Location"]
    html = client.get(status_url).get_data(as_text=True)
    assert "Preview of patients.csv, nothing written yet" in html
    assert counts_on(html) == {"created": 4, "updated": 0, "unchanged": 0, "rejected": 0}
    assert "Villalobos" in html and "1955-04-10" in html  # the first rows as stored
    assert 'id="bulk-confirm-form"' in html
    assert patients() == 0

    response = confirm(client, status_url)
    assert response.status_code == 302
    html = client.get(status_url).get_data(as_text=True)
    assert "Imported: 4 created" in html
    assert patients() == 4
    # The file itself is gone once imported; the folder is the user's own.
    folder = upload_dir / str(user.id) / status_url.rstrip("/").rsplit("/", 1)[1]
    assert not (folder / "upload.csv").exists()
    batch = db.session.scalars(select(ImportBatch)).one()
    assert (batch.status, batch.rows_created, batch.actor_label) == (
        "committed",
        4,
        user.email,
    )
    event = db.session.scalars(select(AuditEntry).where(AuditEntry.action == "IMPORT")).one()
    assert event.actor_id == user.id and event.details["file_name"] == "patients.csv"

    # The same file again: nothing changes, and the page says so.
    status_url = upload(client, (DATA / "patients.csv").read_bytes()).headers["Location"]
    confirm(client, status_url)
    html = client.get(status_url).get_data(as_text=True)
    assert counts_on(html)["unchanged"] == 4 and "4 unchanged" in html
    assert patients() == 4


BAD = b"first_name,last_name,birth_date,id\nAna,Good,1970-01-01,P1\nBo,Bad,1955-13-10,P2\n"


def test_all_or_nothing_then_skip_invalid_with_the_rejected_rows_downloadable(client, auth):
    auth.as_role(RoleName.ADMIN)
    status_url = upload(client, BAD).headers["Location"]
    html = client.get(status_url).get_data(as_text=True)
    assert counts_on(html) == {"created": 1, "updated": 0, "unchanged": 0, "rejected": 1}
    assert "birth_date &#39;1955-13-10&#39; is not a date; expected YYYY-MM-DD." in html
    rejected = client.get(status_url + "rejected.csv")
    assert rejected.status_code == 200 and rejected.mimetype == "text/csv"
    assert rejected.headers["Cache-Control"] == "no-store"
    rows = list(csv.reader(io.StringIO(rejected.get_data(as_text=True).lstrip("\ufeff"))))
    assert rows[0][-1] == "error" and rows[1][:2] == ["Bo", "Bad"]

    confirm(client, status_url)  # all or nothing (the default)
    html = client.get(status_url).get_data(as_text=True)
    assert "Nothing was imported: 1 rows have problems" in html
    assert patients() == 0

    confirm(client, status_url, skip_invalid=True)
    html = client.get(status_url).get_data(as_text=True)
    assert "Imported: 1 created" in html and "The 1 rejected rows were skipped." in html
    assert patients() == 1
    assert client.get(status_url + "rejected.csv").status_code == 200


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "The file is empty."),
        (b"first_name,last_name,birth_date,id\n", "a header line but no rows"),
        (b"\x00\x01\x02\x03binary", "not a text (CSV) file"),
        (b"first_name\nAna\n", "Required columns are missing: last_name, birth_date."),
    ],
)
def test_refused_files_are_explained_on_the_page(client, auth, content, message):
    auth.as_role(RoleName.OPERATOR)
    status_url = upload(client, content).headers["Location"]
    html = client.get(status_url).get_data(as_text=True)
    assert "The file was refused; nothing was written." in html
    assert message in html
    assert 'id="bulk-confirm-form"' not in html
    assert patients() == 0


def test_a_file_over_the_limit_gets_413_before_it_is_read(app, client, auth):
    auth.as_role(RoleName.OPERATOR)
    previous = app.config["MAX_CONTENT_LENGTH"]
    app.config["MAX_CONTENT_LENGTH"] = 2000
    try:
        response = upload(
            client, b"first_name,last_name,birth_date,id\n" + b"A,B,1970-01-01,X\n" * 500
        )
    finally:
        app.config["MAX_CONTENT_LENGTH"] = previous
    assert response.status_code == 413
    assert patients() == 0


def test_uploads_are_private_to_their_user(client, auth):
    auth.as_role(RoleName.OPERATOR, email="one@test.example.com")
    status_url = upload(client, BAD).headers["Location"]
    auth.logout()
    auth.as_role(RoleName.OPERATOR, email="two@test.example.com")
    assert client.get(status_url).status_code == 404
    assert client.get(status_url + "rejected.csv").status_code == 404


def test_progress_endpoint_and_page_script(client, auth):
    auth.as_role(RoleName.OPERATOR)
    index = client.get(BASE).get_data(as_text=True)
    assert re.search(r'<script nonce="[^"]+" src="/static/js/bulk_upload.js', index)
    assert "onclick" not in index and "onsubmit" not in index
    status_url = upload(client, BAD).headers["Location"]
    info = client.get(status_url + "progress").get_json()
    assert info["state"] == "previewed" and info["phase"] == "done"
    waiting = client.get(BASE + "A" * 24 + "/progress").get_json()
    assert waiting["state"] == "uploading"


def test_templates_explain_every_column(client, auth):
    auth.as_role(RoleName.OPERATOR)
    response = client.get(BASE + "template/doctors.csv")
    assert response.status_code == 200
    rows = list(csv.reader(io.StringIO(response.get_data(as_text=True).lstrip("\ufeff"))))
    header = rows[0]
    assert "phones" in header and "email" in header
    explained = [r[0] for r in rows[1:] if r and r[0].startswith("# ")]
    assert [line.split(":")[0][2:] for line in explained] == header
    assert client.get(BASE + "template/unknown.csv").status_code == 404


def test_the_page_and_the_command_give_the_same_counts(app, client, auth, tmp_path):
    auth.as_role(RoleName.OPERATOR)
    content = BAD + b"Cy,Good,1980-01-01,P3\n"
    html = client.get(upload(client, content).headers["Location"]).get_data(as_text=True)
    page = counts_on(html)
    path = tmp_path / "same.csv"
    path.write_bytes(content)
    result = app.test_cli_runner().invoke(args=["import", "patients", str(path), "--dry-run"])
    assert result.exit_code == 1  # rows are rejected
    line = result.output.splitlines()[0]
    numbers = re.search(
        r"(\d+) created, (\d+) updated, (\d+) unchanged, (\d+) rejected", line
    ).groups()
    assert (
        dict(zip(("created", "updated", "unchanged", "rejected"), map(int, numbers), strict=True))
        == page
    )
    assert "line 3: birth_date '1955-13-10' is not a date; expected YYYY-MM-DD." in result.output
    assert patients() == 0


def test_the_command_imports_as_its_operator(app, tmp_path):
    runner = app.test_cli_runner()
    result = runner.invoke(
        args=["import", "patients", str(DATA / "patients.csv"), "--operator", "night-batch"]
    )
    assert result.exit_code == 0, result.output
    assert "4 created" in result.output
    event = db.session.scalars(select(AuditEntry).where(AuditEntry.action == "IMPORT")).one()
    assert event.actor_label == "night-batch"
    again = runner.invoke(args=["import", "patients", str(DATA / "patients.csv")])
    assert again.exit_code == 0 and "4 unchanged" in again.output
    bad = tmp_path / "bad.csv"
    bad.write_bytes(BAD)
    skipped = runner.invoke(args=["import", "patients", str(bad), "--skip-invalid"])
    assert skipped.exit_code == 1 and "1 created" in skipped.output
    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"")
    refused = runner.invoke(args=["import", "patients", str(empty)])
    assert refused.exit_code == 2 and "The file is empty." in refused.output


# --------------------------------------------------------------------------- roles and CSRF


@pytest.mark.parametrize("role", [RoleName.MANAGER, RoleName.SUPPORT])
def test_roles_without_upload_are_refused_on_every_step(client, auth, role):
    auth.as_role(role)
    assert client.get(BASE).status_code == 403
    token = csrf_token_from(client.get("/admin/").get_data(as_text=True))
    response = client.post(
        BASE + "upload",
        data={"csrf_token": token, "kind": "patients", "file": (io.BytesIO(BAD), "x.csv")},
        content_type="multipart/form-data",
    )
    assert response.status_code == 403
    assert client.get(BASE + "template/patients.csv").status_code == 403
    assert "/admin/bulk-upload/" not in client.get("/admin/").get_data(as_text=True)
    assert patients() == 0


def test_anonymous_visitors_go_to_the_login_page(client):
    response = client.get(BASE)
    assert response.status_code == 302 and response.headers["Location"].startswith("/login")


def test_upload_and_confirm_without_a_csrf_token_are_refused(client, auth, upload_dir):
    auth.as_role(RoleName.OPERATOR)
    response = client.post(
        BASE + "upload",
        data={"kind": "patients", "file": (io.BytesIO(BAD), "x.csv")},
        content_type="multipart/form-data",
    )
    assert response.status_code == 400
    assert not any(upload_dir.rglob("upload.csv")) if upload_dir.exists() else True
    status_url = upload(client, (DATA / "patients.csv").read_bytes()).headers["Location"]
    assert client.post(status_url + "confirm", data={}).status_code == 400
    assert client.post(status_url + "discard", data={}).status_code == 400
    assert patients() == 0
    response = confirm(client, status_url)
    assert response.status_code == 302 and patients() == 4


def test_discard_removes_the_file(client, auth, upload_dir):
    auth.as_role(RoleName.OPERATOR)
    status_url = upload(client, BAD).headers["Location"]
    html = client.get(status_url).get_data(as_text=True)
    response = client.post(status_url + "discard", data={"csrf_token": csrf_token_from(html)})
    assert response.status_code == 302
    assert not list(upload_dir.rglob("upload.csv"))
    assert client.get(status_url).status_code == 404


def test_admins_see_the_import_batches_and_others_do_not(client, auth):
    auth.as_role(RoleName.ADMIN)
    status_url = upload(client, (DATA / "patients.csv").read_bytes()).headers["Location"]
    confirm(client, status_url)
    html = client.get("/admin/import_batch/").get_data(as_text=True)
    assert "patients.csv" in html and "committed" in html
    batch_id = db.session.scalars(select(ImportBatch.id)).one()
    assert client.get(f"/admin/import_batch/details/?id={batch_id}").status_code == 200
    assert client.get("/admin/import_batch/new/").status_code == 403
    auth.logout()
    auth.as_role(RoleName.OPERATOR)
    assert client.get("/admin/import_batch/").status_code == 403


# --------------------------------------------------------------------------- RQ


@pytest.fixture
def rq_queue(app):  # noqa: ANN001, ANN201
    """The real local Redis (.ci/run starts it): a failure here is a failure, not a skip."""
    from redis import Redis
    from redis.exceptions import ConnectionError as RedisConnectionError

    url = "redis://127.0.0.1:6379/15"
    try:
        Redis.from_url(url).ping()
    except RedisConnectionError:
        pytest.fail("Redis is not running on 127.0.0.1:6379 (start it: see .ci/run)")
    name = f"imports-test-{uuid.uuid4().hex[:8]}"
    app.config.update(RQ_REDIS_URL=url, RQ_IMPORT_QUEUE=name)
    from backoffice.services.imports import get_queue

    with app.app_context():
        queue = get_queue()
    yield queue
    queue.empty()
    queue.delete(delete_jobs=True)
    app.config.update(RQ_REDIS_URL=None, RQ_IMPORT_QUEUE="imports")


def work(queue) -> None:  # noqa: ANN001
    from rq import SimpleWorker

    SimpleWorker([queue], connection=queue.connection).work(burst=True)


def test_with_a_queue_configured_the_same_job_runs_on_rq(client, auth, rq_queue):
    user = auth.as_role(RoleName.OPERATOR)
    status_url = upload(client, (DATA / "patients.csv").read_bytes()).headers["Location"]
    html = client.get(status_url).get_data(as_text=True)
    assert 'id="bulk-status"' in html  # waiting for the worker, with a progress bar
    assert client.get(status_url + "progress").get_json()["state"] == "queued"
    assert rq_queue.count == 1
    work(rq_queue)
    html = client.get(status_url).get_data(as_text=True)
    assert counts_on(html)["created"] == 4 and patients() == 0

    confirm(client, status_url)
    assert client.get(status_url + "progress").get_json()["state"] == "queued"
    job = rq_queue.jobs[0]
    work(rq_queue)
    job.refresh()
    assert job.meta["progress"]["phase"] == "done"  # progress was kept in the job's meta
    html = client.get(status_url).get_data(as_text=True)
    assert "Imported: 4 created" in html
    assert patients() == 4
    event = db.session.scalars(select(AuditEntry).where(AuditEntry.action == "IMPORT")).one()
    assert event.actor_id == user.id


def test_old_uploads_are_removed_and_each_user_stays_within_a_quota(app, client, auth, upload_dir):
    import json
    from datetime import UTC, datetime, timedelta

    user = auth.as_role(RoleName.OPERATOR)
    first = upload(client, BAD).headers["Location"]
    folder = upload_dir / str(user.id) / first.rstrip("/").rsplit("/", 1)[1]
    meta = json.loads((folder / "meta.json").read_text())
    meta["uploaded_at"] = (datetime.now(UTC) - timedelta(hours=3)).isoformat()
    (folder / "meta.json").write_text(json.dumps(meta))
    upload(client, BAD)  # every upload cleans up what has timed out
    assert not folder.exists()
    assert client.get(first).status_code == 404

    previous = app.config["IMPORT_USER_QUOTA_BYTES"]
    app.config["IMPORT_USER_QUOTA_BYTES"] = 2 * len(BAD) + 3000
    try:
        for _ in range(4):
            last = upload(client, BAD).headers["Location"]
    finally:
        app.config["IMPORT_USER_QUOTA_BYTES"] = previous
    kept = list((upload_dir / str(user.id)).iterdir())
    assert 1 <= len(kept) < 5  # the oldest went first
    assert client.get(last).status_code == 200
