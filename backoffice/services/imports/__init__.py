"""Bulk CSV import: the one entry that the bulk-upload page, ``flask import`` and the tests use.

One upload moves down the package: ``jobs`` keeps the uploaded file between preview and confirm
and runs the job (in-process or on RQ); ``run`` drives one import; ``reader`` reads the file as
people make it; ``kinds`` says what each kind's columns hold; ``plan`` is the SQL that stages,
matches and writes the rows.
"""

from backoffice.services.imports.jobs import (
    Upload,
    get_queue,
    get_upload,
    list_uploads,
    new_token,
    queue_configured,
    remove_upload,
    run_job,
    save_upload,
    start,
)
from backoffice.services.imports.kinds import KINDS, Kind, template_rows
from backoffice.services.imports.reader import read_dicts
from backoffice.services.imports.run import ImportReport, import_settings, run_import

__all__ = [
    "KINDS",
    "ImportReport",
    "Kind",
    "Upload",
    "get_queue",
    "get_upload",
    "import_settings",
    "list_uploads",
    "new_token",
    "queue_configured",
    "read_dicts",
    "remove_upload",
    "run_import",
    "run_job",
    "save_upload",
    "start",
    "template_rows",
]
