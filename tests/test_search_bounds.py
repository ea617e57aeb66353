"""What one search may cost is bounded wherever a search is typed (every list, the
patient-study listing, the look-up boxes), and the page says what was searched."""

from __future__ import annotations

import json
import re

import pytest
from sqlalchemy import event

from backoffice.extensions import db
from backoffice.models import RoleName
from backoffice.services.search import MAX_SEARCH_CHARS, MAX_SEARCH_WORDS, bounded_search
from tests.conftest import AuthActions
from tests.factories import make_doctor, make_patient

THOUSAND = " ".join(["a"] * 1000)


def test_a_search_keeps_its_first_ten_words_and_two_hundred_characters():
    assert bounded_search(" pepe   Villalobos ") == bounded_search("pepe Villalobos")
    assert not bounded_search("pepe Villalobos").cut
    many = bounded_search(THOUSAND)
    assert many.cut and many.text.split() == ["a"] * MAX_SEARCH_WORDS
    long = bounded_search("x" * 5000)
    assert long.cut and len(long.text) == MAX_SEARCH_CHARS


@pytest.fixture
def searcher(client):  # noqa: ANN001, ANN201
    make_patient("Pepe", "Villalobos", mrn="SB-1")
    make_doctor("Ana", "Villalobos")
    db.session.commit()
    AuthActions(client).as_role(RoleName.OPERATOR, email="search-bounds@test.example.com")
    return client


@pytest.fixture
def statements(app):  # noqa: ANN001, ANN201
    seen: list[str] = []
    engine = db.engine

    def record(conn, cursor, statement, parameters, context, many):  # noqa: ANN001, ANN202
        seen.append(statement)

    event.listen(engine, "before_cursor_execute", record)
    yield seen
    event.remove(engine, "before_cursor_execute", record)


def _likes(seen: list[str]) -> int:
    return max((s.upper().count(" LIKE ") for s in seen), default=0)


@pytest.mark.parametrize("view", ["patient", "study", "doctor", "clinic", "user", "audit"])
def test_every_list_says_that_a_long_search_was_cut(app, client, view, statements):
    AuthActions(client).as_role(RoleName.ADMIN, email=f"cut-{view}@test.example.com")
    statements.clear()
    response = client.get(f"/admin/{view}/?search=Villalobos+{THOUSAND.replace(' ', '+')}")
    assert response.status_code == 200
    html = response.get_data(as_text=True)
    assert "A search uses at most 10 words and 200 characters: only" in html
    searched = re.search(r'name="search" maxlength="200" value="([^"]*)"', html).group(1)
    assert searched.split() == ["Villalobos"] + ["a"] * 9
    assert _likes(statements) <= 20 * MAX_SEARCH_WORDS  # not a thousand conditions


def test_the_listing_says_so_too(searcher, statements):
    statements.clear()
    response = searcher.get(f"/admin/patient-studies/?search=Villalobos+{THOUSAND}")
    assert response.status_code == 200
    html = response.get_data(as_text=True)
    assert 'id="search-cut"' in html and "only “Villalobos a a a a a a a a a” was searched" in html
    assert _likes(statements) <= 4 * MAX_SEARCH_WORDS


def test_a_short_search_says_nothing(searcher):
    html = searcher.get("/admin/patient/?search=Villalobos").get_data(as_text=True)
    assert "A search uses at most" not in html
    assert "SB-1" in html


def test_the_look_up_boxes_search_ten_words_at_most(searcher, statements):
    statements.clear()
    response = searcher.get(
        f"/admin/study/ajax/lookup/?name=patient&query=Villalobos+{THOUSAND}&limit=100000"
    )
    assert response.status_code == 200
    found = json.loads(response.get_data(as_text=True))  # "Villalobos" and nine "a" match
    assert [label for _id, label in found] == ["Pepe Villalobos (MRN SB-1)"]
    assert _likes(statements) <= 4 * MAX_SEARCH_WORDS
    nothing = searcher.get("/admin/study/ajax/lookup/?name=patient&query=Villalobos+zzz")
    assert json.loads(nothing.get_data()) == []


def test_a_filter_value_that_cannot_be_used_is_named_and_left_out(searcher):
    response = searcher.get("/admin/study/?flt0_0=abc")
    assert response.status_code == 200
    html = response.get_data(as_text=True)
    assert "The filter “Urgency” cannot use the value “abc”: it was left out." in html


def test_page_minus_one_is_the_first_page(searcher):
    first = searcher.get("/admin/patient/").get_data(as_text=True)
    assert "SB-1" in searcher.get("/admin/patient/?page=-1").get_data(as_text=True)
    assert "SB-1" in first
