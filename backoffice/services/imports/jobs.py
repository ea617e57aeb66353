"""Uploaded import files between preview and confirm, and the job that previews or commits them.

A file waits in ``<instance>/imports/<user id>/<token>/`` with a ``meta.json`` beside it; the
folder is removed after the confirm, or after ``IMPORT_UPLOAD_TTL_MINUTES``, and a user's
folders are kept under ``IMPORT_USER_QUOTA_BYTES`` (oldest removed first). ``run_job`` is the one
job function: an RQ worker runs it when ``RQ_REDIS_URL`` is set, otherwise the request runs it.
Progress goes where every web process can read it: the RQ job's meta, or a file in the folder.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import secrets
import shutil
import time
import traceback
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, BinaryIO

from flask import Flask, current_app, has_app_context
from flask_babel import force_locale

from backoffice.i18n import _
from backoffice.services.imports.run import ImportReport, Progress, run_import

log = logging.getLogger("backoffice.import")

TOKEN_RE = re.compile(r"^[A-Za-z0-9_-]{16,64}$")
UPLOAD_NAME = "upload.csv"
REJECTED_NAME = "rejected.csv"
META_NAME = "meta.json"
PROGRESS_NAME = "progress.json"


def new_token() -> str:
    return secrets.token_urlsafe(18)


def uploads_root() -> Path:
    configured = current_app.config.get("IMPORT_UPLOAD_DIR")
    root = Path(configured) if configured else Path(current_app.instance_path) / "imports"
    root.mkdir(parents=True, exist_ok=True)
    return root


@dataclass
class Upload:
    """One uploaded file of one user, and what has been done with it."""

    folder: Path
    meta: dict[str, Any]

    @property
    def token(self) -> str:
        return self.folder.name

    @property
    def file(self) -> Path:
        return self.folder / UPLOAD_NAME

    @property
    def rejected_file(self) -> Path:
        return self.folder / REJECTED_NAME

    @property
    def report(self) -> ImportReport | None:
        data = self.meta.get("report")
        return ImportReport.from_dict(data) if data else None

    @property
    def state(self) -> str:
        return self.meta.get("state", "uploaded")

    def save(self) -> None:
        tmp = self.folder / (META_NAME + ".tmp")
        tmp.write_text(json.dumps(self.meta, default=str), encoding="utf-8")
        os.replace(tmp, self.folder / META_NAME)

    def reload(self) -> Upload:
        with contextlib.suppress(OSError, ValueError):
            self.meta = json.loads((self.folder / META_NAME).read_text(encoding="utf-8"))
        return self

    def progress(self) -> dict[str, Any]:
        """Where the job stands, read from wherever the job writes it."""
        job_id = self.meta.get("job_id")
        if job_id and self.state in ("queued", "running"):
            job = fetch_job(job_id)
            if job is not None:
                info = dict(job.meta.get("progress") or {})
                status = job.get_status(refresh=False)
                info.setdefault("phase", "queued" if status == "queued" else "running")
                if status in ("failed", "stopped", "canceled"):
                    # The worker died or the job was stopped before it could say so itself.
                    self.meta.update(state="failed", error=_("The job stopped unexpectedly."))
                    self.save()
                    info["phase"] = "failed"
                return info
        with contextlib.suppress(OSError, ValueError):
            return json.loads((self.folder / PROGRESS_NAME).read_text(encoding="utf-8"))
        return {}


def user_folder(user_id: int) -> Path:
    folder = uploads_root() / str(int(user_id))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def get_upload(user_id: int, token: str) -> Upload | None:
    """The user's own upload with this token, or None (another user's tokens are not found)."""
    if not TOKEN_RE.match(token or ""):
        return None
    folder = user_folder(user_id) / token
    meta_file = folder / META_NAME
    if not meta_file.is_file():
        return None
    try:
        meta = json.loads(meta_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return Upload(folder, meta)


def list_uploads(user_id: int) -> list[Upload]:
    out = []
    for folder in sorted(user_folder(user_id).iterdir()):
        upload = get_upload(user_id, folder.name)
        if upload is not None:
            out.append(upload)
    return sorted(out, key=lambda u: u.meta.get("uploaded_at", ""), reverse=True)


def save_upload(
    user_id: int, stream: BinaryIO, file_name: str, kind: str, token: str | None = None
) -> Upload:
    """Keep an uploaded file for the preview and the confirm; cleans up old uploads first."""
    cleanup()
    folder_root = user_folder(user_id)
    if not token or not TOKEN_RE.match(token) or (folder_root / token).exists():
        token = new_token()
    folder = folder_root / token
    folder.mkdir()
    size = 0
    with (folder / UPLOAD_NAME).open("wb") as out:
        while chunk := stream.read(1 << 20):
            out.write(chunk)
            size += len(chunk)
    upload = Upload(
        folder,
        {
            "kind": kind,
            "file_name": safe_file_name(file_name),
            "size": size,
            "user_id": user_id,
            "uploaded_at": datetime.now(UTC).isoformat(),
            "state": "uploaded",
        },
    )
    upload.save()
    _keep_within_quota(user_id, keep=token)
    return upload


def safe_file_name(name: str) -> str:
    """The name the user gave, for display only (never used as a path)."""
    name = (name or "upload.csv").replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(c for c in name if c.isprintable()).strip()
    return name[:200] or "upload.csv"


def remove_upload(upload: Upload) -> None:
    shutil.rmtree(upload.folder, ignore_errors=True)


def _folder_size(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.iterdir() if f.is_file())


def _keep_within_quota(user_id: int, keep: str) -> None:
    quota = int(current_app.config.get("IMPORT_USER_QUOTA_BYTES") or 0)
    if not quota:
        return
    uploads = list_uploads(user_id)  # newest first
    total = 0
    for upload in uploads:
        total += _folder_size(upload.folder)
        running = upload.state in ("queued", "running")
        if total > quota and upload.token != keep and not running:
            remove_upload(upload)


def cleanup(now: datetime | None = None) -> int:
    """Remove uploads older than the timeout (all users); returns how many were removed."""
    ttl = timedelta(minutes=int(current_app.config.get("IMPORT_UPLOAD_TTL_MINUTES") or 120))
    now = now or datetime.now(UTC)
    removed = 0
    for user_dir in uploads_root().iterdir():
        if not user_dir.is_dir():
            continue
        for folder in user_dir.iterdir():
            with contextlib.suppress(OSError, ValueError):
                meta = json.loads((folder / META_NAME).read_text(encoding="utf-8"))
                uploaded = datetime.fromisoformat(meta["uploaded_at"])
                # A running job keeps its file a while longer.
                limit = ttl * 2 if meta.get("state") in ("queued", "running") else ttl
                if now - uploaded > limit:
                    shutil.rmtree(folder, ignore_errors=True)
                    removed += 1
                continue
            # A folder without a readable meta file is left over from a failed upload.
            if time.time() - folder.stat().st_mtime > ttl.total_seconds():
                shutil.rmtree(folder, ignore_errors=True)
                removed += 1
    return removed


# --------------------------------------------------------------------------- the queue


def queue_configured() -> bool:
    return bool(has_app_context() and current_app.config.get("RQ_REDIS_URL"))


def _redis() -> Any:
    from redis import Redis

    return Redis.from_url(current_app.config["RQ_REDIS_URL"])


def get_queue() -> Any:
    from rq import Queue

    return Queue(current_app.config.get("RQ_IMPORT_QUEUE", "imports"), connection=_redis())


def fetch_job(job_id: str) -> Any:
    if not queue_configured():
        return None
    from rq.exceptions import NoSuchJobError
    from rq.job import Job

    try:
        return Job.fetch(job_id, connection=_redis())
    except NoSuchJobError:
        return None


def start(upload: Upload, action: str, actor: dict[str, Any], skip_invalid: bool = False) -> None:
    """Preview or commit an upload: as an RQ job when a queue is configured, else right now."""
    upload.meta.update(
        state="queued", action=action, skip_invalid=skip_invalid, job_id=None, error=None
    )
    (upload.folder / PROGRESS_NAME).unlink(missing_ok=True)
    args = (upload.meta["user_id"], upload.token, action, skip_invalid, actor)
    if queue_configured():
        job = get_queue().enqueue(
            run_job,
            *args,
            job_timeout=int(current_app.config.get("IMPORT_JOB_TIMEOUT") or 3600),
            result_ttl=3600,
            failure_ttl=3600,
            description=f"import {upload.meta['kind']} ({action})",
        )
        upload.meta["job_id"] = job.id
        upload.save()
        return
    upload.save()
    from backoffice.extensions import db

    # The job has a session of its own; the request's ends here so that nothing of it stays
    # open around the job (it holds no changes: this only closes its transaction).
    db.session.commit()
    run_job(*args)
    upload.reload()


class _Throttled:
    """Progress written at most a few times a second (every web process reads it)."""

    def __init__(self, upload: Upload, job: Any) -> None:
        self.upload = upload
        self.job = job
        self.last = 0.0

    def __call__(self, phase: str, done: int, total: int) -> None:
        now = time.monotonic()
        if now - self.last < 0.25 and done < total:
            return
        self.last = now
        info = {"phase": phase, "done": done, "total": total, "at": time.time()}
        if self.job is not None:
            self.job.meta["progress"] = info
            self.job.save_meta()
        else:
            tmp = self.upload.folder / (PROGRESS_NAME + ".tmp")
            with contextlib.suppress(OSError):
                tmp.write_text(json.dumps(info), encoding="utf-8")
                os.replace(tmp, self.upload.folder / PROGRESS_NAME)


def run_job(
    user_id: int, token: str, action: str, skip_invalid: bool, actor: dict[str, Any]
) -> str:
    """The job: preview or commit one upload, as the user who asked (RQ entry point)."""
    # A context of its own: its own database session, removed when the job ends, whether the
    # job runs in a worker (``flask worker``) or inside the request that asked for it.
    app = current_app._get_current_object() if has_app_context() else _worker_app()  # type: ignore[attr-defined]
    with app.app_context():
        # The report's messages in the language of the user who asked (a worker has no request
        # to choose one from).
        locale = actor.get("locale")
        with force_locale(locale) if locale else contextlib.nullcontext():
            return _run_job(user_id, token, action, skip_invalid, actor)


_APP: Flask | None = None


def _worker_app() -> Flask:
    """The app of a worker started without one (``rq worker`` rather than ``flask worker``)."""
    global _APP
    if _APP is None:
        from backoffice import create_app

        _APP = create_app()
    return _APP


def _run_job(
    user_id: int, token: str, action: str, skip_invalid: bool, actor: dict[str, Any]
) -> str:
    from backoffice.extensions import db
    from backoffice.services.audit import acting_as

    upload = get_upload(user_id, token)
    if upload is None:
        return "gone"
    job = None
    if queue_configured():
        from rq import get_current_job

        job = get_current_job()
    upload.meta["state"] = "running"
    upload.save()
    progress: Progress = _Throttled(upload, job)
    commit = action == "commit"
    previous = upload.report
    try:
        with acting_as(actor.get("label") or "unknown", actor.get("user_id")) as who:
            # The audit entries carry the request's address and id, as if written by it.
            who.ip = actor.get("ip")
            who.request_id = actor.get("request_id") or who.request_id
            upload.rejected_file.unlink(missing_ok=True)
            report = run_import(
                upload.file,
                upload.meta["kind"],
                file_name=upload.meta["file_name"],
                dry_run=not commit,
                skip_invalid=skip_invalid,
                since=_previewed_at(upload) if commit else None,
                expected=previous.counts if commit and previous else None,
                progress=progress,
                rejected_path=upload.rejected_file,
            )
    except Exception as exc:  # noqa: BLE001 - the page says it failed; the log has no values
        db.session.rollback()
        log.error(
            "import job failed: %s\n%s",
            type(exc).__name__,
            "".join(traceback.format_tb(exc.__traceback__)),
        )
        upload.meta.update(state="failed", error=_("The job failed unexpectedly."))
        upload.save()
        return "failed"
    upload.meta["report"] = report.to_dict()
    if report.outcome == "committed":
        upload.meta["state"] = "committed"
        # The file itself is not kept once imported; the report and skipped rows stay until
        # the timeout.
        upload.file.unlink(missing_ok=True)
    elif report.outcome in ("previewed", "changed"):
        upload.meta["state"] = "previewed"
        upload.meta["previewed_at"] = report.started_at
    else:
        upload.meta["state"] = report.outcome  # refused, rejected or failed
    progress("done", 1, 1)
    upload.save()
    return report.outcome


def _previewed_at(upload: Upload) -> datetime | None:
    raw = upload.meta.get("previewed_at")
    return datetime.fromisoformat(raw) if raw else None
