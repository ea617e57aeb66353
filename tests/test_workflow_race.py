"""A move happens once: two people press "Check in" on the same study at the same moment, against
a real server (threads, its own database, real commits): one is done, the other refused, and the
study has one check-in.

The app is served by Werkzeug's threaded server on 127.0.0.1 from a database of its own
(``tests/scratch.py``: a file for SQLite; on PostgreSQL a database beside the test one).
"""

from __future__ import annotations

import http.cookiejar
import re
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select
from werkzeug.serving import make_server

from backoffice import create_app
from backoffice.auth.scope import EVERYTHING, using_scope
from backoffice.extensions import db
from backoffice.models import Study, StudyEvent, StudyStatus
from tests.conftest import PASSWORD, make_user
from tests.factories import make_study


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, object, int]]:
    from tests.scratch import scratch_database

    with scratch_database(tmp_path, "race") as url:
        app = create_app({"ENV_NAME": "testing", "SQLALCHEMY_DATABASE_URI": url})
        with app.app_context(), using_scope(EVERYTHING):
            from flask_migrate import upgrade

            upgrade()
            for email in ("ana@race.example.com", "ben@race.example.com"):
                make_user(email, "OPERATOR")
            study_id = make_study(status=StudyStatus.SCHEDULED).id
            db.session.commit()
        server = make_server("127.0.0.1", 0, app, threaded=True)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield f"http://127.0.0.1:{server.server_port}", app, study_id
        finally:
            server.shutdown()
            thread.join(timeout=10)
            with app.app_context():
                db.engine.dispose()


class _Stay(urllib.request.HTTPRedirectHandler):
    """Redirects are not followed: the answer to the POST itself is what is raced."""

    def redirect_request(self, *args, **kwargs):  # noqa: ANN002, ANN003, ANN201
        return None


class Browser:
    """A person with a cookie jar, talking to the server over HTTP."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.jar = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.jar))
        self.staying = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(self.jar), _Stay()
        )

    def get(self, path: str) -> str:
        with self.opener.open(self.base + path, timeout=30) as response:  # noqa: S310
            return response.read().decode()

    def post(self, path: str, fields: dict[str, str]) -> str:
        data = urllib.parse.urlencode(fields).encode()
        with self.opener.open(self.base + path, data=data, timeout=30) as response:  # noqa: S310
            return response.read().decode()

    def post_status(self, path: str, fields: dict[str, str]) -> int:
        """POST without following the redirect; the status of the answer."""
        data = urllib.parse.urlencode(fields).encode()
        try:
            with self.staying.open(self.base + path, data=data, timeout=30) as response:  # noqa: S310
                return response.status
        except urllib.error.HTTPError as exc:
            return exc.code

    def login(self, email: str) -> None:
        page = self.get("/login")
        token = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', page).group(1)
        self.post("/login", {"email": email, "password": PASSWORD, "csrf_token": token})


def hidden_fields(page: str, code: str) -> dict[str, str]:
    form = re.search(
        rf'<form[^>]*action="/admin/study/transition/"[^>]*>(?:(?!</form>).)*?'
        rf'name="transition" value="{code}".*?</form>',
        page,
        re.S,
    ).group(0)
    return dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', form))


def test_two_simultaneous_check_ins_make_one(served):
    base, app, study_id = served
    people = [Browser(base), Browser(base)]
    forms = []
    for person, email in zip(people, ("ana@race.example.com", "ben@race.example.com"), strict=True):
        person.login(email)
        forms.append(hidden_fields(person.get(f"/admin/study/details/?id={study_id}"), "check_in"))
    assert forms[0]["version"] == forms[1]["version"]

    start = threading.Barrier(2)
    statuses: list[int] = [0, 0]

    def press(i: int) -> None:
        start.wait()
        statuses[i] = people[i].post_status("/admin/study/transition/", forms[i])

    threads = [threading.Thread(target=press, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert statuses == [302, 302]  # both answered, neither with an error

    # Each person then opens the page they are sent back to, and reads what it says.
    pages = [person.get(f"/admin/study/details/?id={study_id}") for person in people]
    done = [p for p in pages if "Checked in." in p and "alert-success" in p]
    # The loser is told the study changed and that nothing was done: naming who and when
    # ("changed by ana@... at 12:02 since you opened it") when the winner's entry was committed
    # before its check read it, "at the same moment" when the check at the flush caught it.
    refused = [p for p in pages if "was changed by" in p and "nothing was done" in p]
    assert len(done) == 1, [re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", p))[:800] for p in pages]
    assert len(refused) == 1, [
        " | ".join(
            re.sub(r"\s+", " ", re.sub(r"<[^>]+>", "", a))
            for a in re.findall(r"alert-[a-z]+[^>]*>(.*?)</div>", p, re.S)
        )
        for p in pages
    ]
    with app.app_context(), using_scope(EVERYTHING):
        study = db.session.get(Study, study_id)
        assert study.status == StudyStatus.ARRIVED
        events = db.session.scalars(select(StudyEvent).where(StudyEvent.study_id == study_id))
        assert [e.transition for e in events] == ["check_in"]
