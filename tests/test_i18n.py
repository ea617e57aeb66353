"""Translations: complete catalogs, nothing in the code missing from them, pages in es and fr.

The catalogs are read with Babel; the code is extracted with the project's own babel.cfg and the
keywords of `make translations-extract`, and every message must be in every catalog, translated
and not fuzzy. Pages are rendered in Spanish and French and their visible text is checked for the
expected words and for English left behind.
"""

from __future__ import annotations

import html
import io
import re
from datetime import date
from pathlib import Path

import pytest
from babel.dates import format_date
from babel.messages.extract import DEFAULT_KEYWORDS, extract_from_dir
from babel.messages.frontend import parse_mapping_cfg
from babel.messages.pofile import read_po
from babel.numbers import format_decimal
from flask_babel import force_locale

from backoffice.extensions import db
from backoffice.models import RoleName, User
from tests.conftest import csrf_token_from
from tests.factories import make_doctor, make_patient, make_study

ROOT = Path(__file__).resolve().parent.parent
TRANSLATIONS = ROOT / "backoffice" / "translations"
LANGUAGES = ("es", "fr")
# Our own catalog, and the additions to Flask-Admin's (domain "admin", see its header).
DOMAINS = ("messages", "admin")
NBSP = "\u00a0"  # French puts one before : ; ? !


def read_catalog(lang: str, domain: str = "messages"):  # noqa: ANN201
    with (TRANSLATIONS / lang / "LC_MESSAGES" / f"{domain}.po").open("rb") as fh:
        return read_po(fh, locale=lang, domain=domain)


def extraction_keywords() -> dict:
    """pybabel's default keywords plus the ``-k`` options of `make translations-extract`."""
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    keywords = dict(DEFAULT_KEYWORDS)
    for spec in re.findall(r"-k\s+(\S+)", makefile):
        name, _sep, args = spec.partition(":")
        keywords[name] = tuple(int(a) for a in args.split(",")) if args else None
    assert {"_", "_l", "gettext", "lazy_gettext", "ngettext"} <= keywords.keys()
    return keywords


def extracted_messages() -> set[str | tuple[str, ...]]:
    """Every message of the code, extracted as `make translations-extract` does."""
    with (ROOT / "babel.cfg").open(encoding="utf-8") as fh:
        method_map, options_map = parse_mapping_cfg(fh)
    assert method_map, "babel.cfg maps no files"
    found = set()
    for _file, _line, message, _comments, _context in extract_from_dir(
        str(ROOT), method_map=method_map, options_map=options_map, keywords=extraction_keywords()
    ):
        found.add(message if isinstance(message, str) else tuple(message))
    return found


def forms(message) -> tuple[tuple[str, ...], tuple[str, ...]]:  # noqa: ANN001
    ids = message.id if isinstance(message.id, tuple) else (message.id,)
    strings = message.string if isinstance(message.string, tuple) else (message.string,)
    return ids, strings


# --------------------------------------------------------------------------- the catalogs


@pytest.mark.parametrize("domain", DOMAINS)
@pytest.mark.parametrize("lang", LANGUAGES)
def test_catalog_is_complete_and_not_fuzzy(lang, domain):
    catalog = read_catalog(lang, domain)
    untranslated, fuzzy, messages = [], [], 0
    for message in catalog:
        if not message.id:
            continue
        messages += 1
        if message.fuzzy:
            fuzzy.append(message.id)
        ids, strings = forms(message)
        if len(strings) != len(ids) or not all(s.strip() for s in strings):
            untranslated.append(message.id)
    assert messages, f"{lang}/{domain}: an empty catalog"
    assert not untranslated, f"{lang}/{domain}: untranslated: {untranslated[:20]}"
    assert not fuzzy, f"{lang}/{domain}: fuzzy: {fuzzy[:20]}"


@pytest.mark.parametrize("lang", LANGUAGES)
def test_catalog_declares_its_plural_rule(lang):
    catalog = read_catalog(lang)
    # French: 0 and 1 are singular; Spanish: only 1.
    expected = "(n > 1)" if lang == "fr" else "(n != 1)"
    assert catalog.plural_forms.replace(" ", "") == f"nplurals=2;plural={expected};".replace(
        " ", ""
    )
    header = (TRANSLATIONS / lang / "LC_MESSAGES" / "messages.po").read_text(encoding="utf-8")
    assert f"Plural-Forms: nplurals=2; plural={expected};" in header


def test_the_code_has_messages_and_the_template_lists_them():
    extracted = extracted_messages()
    assert len(extracted) > 300
    assert "Log out" in extracted  # a template
    assert "Birth date" in extracted  # a lazy label of a view
    assert ("%(num)d study", "%(num)d studies") in extracted  # a plural
    with (TRANSLATIONS / "messages.pot").open("rb") as fh:
        template = {m.id if isinstance(m.id, str) else tuple(m.id) for m in read_po(fh) if m.id}
    missing = sorted(str(m) for m in extracted - template)
    assert not missing, f"run `make translations-update`: not in messages.pot: {missing[:30]}"


@pytest.mark.parametrize("lang", LANGUAGES)
def test_every_message_in_the_code_is_in_the_catalog(lang):
    catalog = read_catalog(lang)
    known = {m.id if isinstance(m.id, str) else tuple(m.id) for m in catalog if m.id}
    missing = sorted(str(m) for m in extracted_messages() - known)
    assert not missing, f"{lang}: in the code but not in the catalog: {missing[:30]}"


PLACEHOLDER = re.compile(r"%\((\w+)\)([sd])")


@pytest.mark.parametrize("domain", DOMAINS)
@pytest.mark.parametrize("lang", LANGUAGES)
def test_placeholders_survive_translation(lang, domain):
    for message in read_catalog(lang, domain):
        if not message.id:
            continue
        ids, strings = forms(message)
        wanted = set(PLACEHOLDER.findall(ids[-1])) | set(PLACEHOLDER.findall(ids[0]))
        values = {name: 7 for name, _conversion in wanted}
        for string in strings:
            assert set(PLACEHOLDER.findall(string)) == wanted, (lang, message.id, string)
            if message.python_format or wanted:
                string % values  # no stray '%' and every placeholder is well formed


# Codes and file formats stay as they are: they are what the files and the database hold.
CODE = re.compile(
    r"\b(?:HIGH|MID|LOW|XRAY|MAMMOGRAM|ULTRASOUND|CHEST|NECK|STOMACH|GENERAL_PRACTICE|CSV|"
    r"UTF-8|BOM|YYYY-MM-DD)\b|\b[a-z]+(?:_[a-z]+)+\b"
)


@pytest.mark.parametrize("lang", LANGUAGES)
def test_codes_column_names_and_formats_stay_untranslated(lang):
    checked = 0
    for message in read_catalog(lang):
        if not message.id:
            continue
        ids, strings = forms(message)
        codes = set(CODE.findall(PLACEHOLDER.sub("", ids[0])))
        for string in strings:
            assert codes <= set(CODE.findall(string)), (lang, message.id, string)
        checked += bool(codes)
    assert checked >= 10


def test_medical_terms_follow_the_glossary():
    """The words the clinics use (Mexican Spanish; French imaging terms)."""
    glossary = {
        "X-ray": ("Radiografía", "Radiographie"),
        "Mammogram": ("Mastografía", "Mammographie"),
        "CT scan": ("Tomografía (TC)", "Scanner (TDM)"),
        "MRI": ("Resonancia magnética", "IRM"),
        "Ultrasound": ("Ultrasonido", "Échographie"),
        "PET scan": ("PET", "TEP"),
        "High": ("Alta", "Haute"),
        "Medium": ("Media", "Moyenne"),
        "Low": ("Baja", "Basse"),
        "Email": ("Correo electrónico", "E-mail"),
        "Log out": ("Cerrar sesión", "Se déconnecter"),
        "Referring doctor": ("Médico que refiere", "Médecin référent"),
        "MRN": ("N.º de expediente", "N° de dossier"),
        "Studies": ("Estudios", "Examens"),
    }
    catalogs = {lang: read_catalog(lang) for lang in LANGUAGES}
    for msgid, expected in glossary.items():
        for lang, wanted in zip(LANGUAGES, expected, strict=True):
            assert catalogs[lang].get(msgid).string == wanted, (lang, msgid)


# --------------------------------------------------------------------------- the pages


def visible_text(page: str) -> str:
    """What a reader sees: no tags (so no attribute values, which may hold codes), no scripts."""
    page = re.sub(r"<(script|style)\b.*?</\1>", " ", page, flags=re.S | re.I)
    page = re.sub(r"<[^>]+>", " ", page)
    # ASCII white space only: French keeps its no-break spaces ("date\u00a0;").
    return re.sub(r"[ \t\r\n\f\v]+", " ", html.unescape(page))


def use_language(client, lang: str, page_url: str = "/admin/") -> None:  # noqa: ANN001
    """Choose a language with the switcher, as a user does."""
    page = client.get(page_url)
    assert 'id="language-select"' in page.text, page_url
    response = client.post(
        "/language",
        data={"lang": lang, "csrf_token": csrf_token_from(page.text), "next": page_url},
    )
    assert response.status_code == 302


@pytest.fixture
def world():  # noqa: ANN201
    doctor = make_doctor("Luisa", "Referente", specialty="RADIOLOGY", phones=["+525512345678"])
    patient = make_patient(
        "Ana", "Prueba", mrn="I18N-1", birth_date=date(1955, 4, 10), referring_doctor=doctor
    )
    make_study(patient, urgency="HIGH", study_type="MAMMOGRAM", body_part="CHEST")
    make_study(patient, urgency="LOW", study_type="XRAY", body_part="STOMACH")
    db.session.commit()
    return {"patient": patient, "doctor": doctor}


PAGES_WORDS = {
    "es": {
        "/admin/": [
            "Tablero",
            "Pacientes",
            "Estudios por tipo",
            "Estudios por semana, según urgencia",
            "Mastografía",
            "Carga masiva",
            "Bitácora de auditoría",
            "Cerrar sesión",
        ],
        "/admin/patient/": [
            "Apellidos",
            "Fecha de nacimiento",
            "Médico que refiere",
            "N.º de expediente",
            "Teléfonos",
            "Sexo",
            "10 abr 1955",
            "Listado",
        ],
        "/admin/study/": [
            "Urgencia",
            "Parte del cuerpo",
            "Alta",
            "Baja",
            "Mastografía",
            "Radiografía",
            "Médico solicitante",
            "Ana Prueba (expediente I18N-1)",
        ],
        "/admin/doctor/new/": ["Especialidad", "Teléfono", "Cédula profesional", "Radiología"],
        "/admin/patient-studies/": [
            "Buscar (nombre, correo electrónico o expediente)",
            "Pacientes sin estudios",
            "Mayor urgencia",
            "Alta",
            "Mastografía",
            "Médico que refiere",
        ],
        "/admin/bulk-upload/": [
            "Carga masiva",
            "El archivo contiene",
            "Cargar y ver vista previa",
            "Plantillas",
            "No se escribe nada hasta que confirme.",
        ],
    },
    "fr": {
        "/admin/": [
            "Tableau de bord",
            "Patients",
            "Examens par type",
            "Examens par semaine, selon l'urgence",
            "Mammographie",
            "Import en masse",
            "Journal d'audit",
            "Se déconnecter",
        ],
        "/admin/patient/": [
            "Nom",
            "Date de naissance",
            "Médecin référent",
            "N° de dossier",
            "Téléphones",
            "Sexe",
            "10 avr. 1955",
            "Liste",
        ],
        "/admin/study/": [
            "Urgence",
            "Partie du corps",
            "Haute",
            "Basse",
            "Mammographie",
            "Radiographie",
            "Médecin prescripteur",
            "Ana Prueba (dossier I18N-1)",
        ],
        "/admin/doctor/new/": ["Spécialité", "Téléphone", "N° de licence", "Radiologie"],
        "/admin/patient-studies/": [
            "Rechercher (nom, e-mail ou n° de dossier)",
            "Patients sans examen",
            "Urgence la plus haute",
            "Haute",
            "Mammographie",
            "Médecin référent",
        ],
        "/admin/bulk-upload/": [
            "Import en masse",
            "Le fichier contient",
            "Importer et prévisualiser",
            "Modèles",
            "Rien n'est écrit tant que vous n'avez pas confirmé.",
        ],
    },
}
# English that must be gone from every translated page (whole words: "Liste" is not "List").
ENGLISH_GONE = [
    "Log out",
    "Log in",
    "Dashboard",
    "Records",
    "Clinics",
    "Doctors",
    "Studies",
    "Studies by type",
    "Bulk upload",
    "Audit log",
    "Patients & studies",
    "Birth date",
    "Body part",
    "Referring doctor",
    "Ordering doctor",
    "Specialty",
    "Last name",
    "First name",
    "Email",
    "Phone",
    "Urgency",
    "High",
    "Medium",
    "Low",
    "X-ray",
    "Mammogram",
    "Radiology",
    "Search",
    "Add Filter",
    "With selected",
    "Apply",
    "List",
    "Create",
    "Delete",
    "Cancel",
    "Save",
    "Upload and preview",
    "Templates",
    "Access denied",
    "Password",
    "years",
    "items",
]
ENGLISH_RE = re.compile(r"\b(?:" + "|".join(re.escape(w) for w in ENGLISH_GONE) + r")\b")


def assert_translated(text: str, words: list[str], where: tuple) -> None:
    for word in words:
        assert word in text, (*where, word)
    left = sorted(set(ENGLISH_RE.findall(text)))
    assert not left, (*where, "English left:", left)


@pytest.mark.parametrize("lang", LANGUAGES)
def test_key_pages_are_translated(client, auth, world, lang):
    auth.as_role(RoleName.ADMIN)
    use_language(client, lang)
    for url, words in PAGES_WORDS[lang].items():
        response = client.get(url)
        assert response.status_code == 200, (lang, url)
        assert_translated(visible_text(response.text), words, (lang, url))
    # the patient's details: the birth date in the locale's format, with the age
    details = visible_text(client.get(f"/admin/patient/details/?id={world['patient'].id}").text)
    age = r"\d+ años · " if lang == "es" else r"\d+ ans · "
    assert re.search(age, details), (lang, "age", details[:600])
    chart_words = {
        "es": ["nació el 10 abr 1955", "Médico que refiere", "Datos de contacto", "Historial"],
        "fr": ["né le 10 avr. 1955", "Médecin référent", "Coordonnées", "Historique"],
    }
    assert_translated(details, chart_words[lang], (lang, "chart"))


def test_english_is_the_source_and_the_default(client, auth, world):
    auth.as_role(RoleName.ADMIN)
    text = visible_text(client.get("/admin/patient/").text)
    for word in ("Log out", "Birth date", "Referring doctor", "Apr 10, 1955"):
        assert word in text


@pytest.mark.parametrize(
    ("lang", "words"),
    [
        ("es", ["Iniciar sesión", "Correo electrónico", "Contraseña", "Idioma"]),
        ("fr", ["Se connecter", "E-mail", "Mot de passe", "Langue"]),
    ],
)
def test_the_login_page_is_translated_and_has_the_switcher(client, lang, words):
    page = client.get("/login")
    assert 'id="language-select"' in page.text and 'id="language-form"' in page.text
    use_language(client, lang, "/login")
    page = client.get("/login").text
    assert f'<html lang="{lang}">' in page
    assert re.search(rf'<option value="{lang}"\s+selected>', page)
    assert_translated(visible_text(page), words, (lang, "/login"))


@pytest.mark.parametrize(
    ("lang", "words"),
    [
        ("es", ["Acceso denegado", "Su rol no permite esta página", "Volver al tablero"]),
        (
            "fr",
            ["Accès refusé", "Votre rôle ne permet pas cette page", "Retour au tableau de bord"],
        ),
    ],
)
def test_the_403_page_is_translated(client, auth, lang, words):
    auth.as_role(RoleName.SUPPORT)
    use_language(client, lang)
    response = client.get("/admin/user/")  # administrators only
    assert response.status_code == 403
    assert_translated(visible_text(response.text), words, (lang, "403"))


FLASK_ADMIN_WORDS = {
    # Flask-Admin's own catalogs: list, buttons, filter operations
    "es": ["Listado", "Crear", "Añadir filtro", "Con seleccionados", "Buscar", "artículos"],
    "fr": ["Liste", "Créer", "Ajouter un filtre", "Avec la sélection", "Chercher", "articles"],
}
FILTER_OPERATIONS = {"es": ("contiene", "entre"), "fr": ("contient", "entre")}
FORM_ERRORS = {
    # our words for Flask-Admin's "Failed to create record." and WTForms' own message
    "es": (
        "No se guardó nada: corrija los campos señalados abajo y guarde de nuevo.",
        "Este campo es obligatorio.",
    ),
    "fr": (
        "Rien n'a été enregistré\u00a0: corrigez les champs signalés ci-dessous et enregistrez "
        "à nouveau.",
        "Ce champ est requis.",
    ),
}
SAVE_BUTTONS = {"es": "Guardar y agregar otro", "fr": "Enregistrer et en ajouter un autre"}


@pytest.mark.parametrize("lang", LANGUAGES)
def test_flask_admin_and_wtforms_strings_load(client, auth, lang):
    auth.as_role(RoleName.ADMIN)
    use_language(client, lang)
    page = client.get("/admin/clinic/").text
    for word in FLASK_ADMIN_WORDS[lang]:
        assert word in visible_text(page), (lang, word)
    for operation in FILTER_OPERATIONS[lang]:
        assert f'"operation": "{operation}"' in page, (lang, operation)  # the filters' menu
    form = client.get("/admin/clinic/new/").text
    assert SAVE_BUTTONS[lang] in html.unescape(form)
    response = client.post(
        "/admin/clinic/new/", data={"name": "", "csrf_token": csrf_token_from(form)}
    )
    assert response.status_code == 200
    text = visible_text(response.text)
    for message in FORM_ERRORS[lang]:
        assert message in text, (lang, message)
    assert not ENGLISH_RE.search(text), (lang, ENGLISH_RE.findall(text))


@pytest.mark.parametrize(
    ("lang", "required"),
    [("es", "Este campo es obligatorio."), ("fr", "Ce champ est requis.")],
)
def test_wtforms_messages_on_the_login_form(client, lang, required):
    use_language(client, lang, "/login")
    page = client.get("/login").text
    response = client.post(
        "/login", data={"email": "", "password": "", "csrf_token": csrf_token_from(page)}
    )
    assert response.status_code == 200
    assert visible_text(response.text).count(required) == 2


# --------------------------------------------------------------------------- the language


def page_language(html_text: str) -> str:
    text = visible_text(html_text)
    found = [
        lang
        for lang, word in (("en", "Log out"), ("es", "Cerrar sesión"), ("fr", "Se déconnecter"))
        if word in text
    ]
    assert len(found) == 1, found
    return found[0]


def test_language_order_saved_then_session_then_browser_then_english(client, auth):
    user = auth.as_role(RoleName.SUPPORT)
    # nothing saved, nothing chosen: the browser's Accept-Language, else English
    assert page_language(client.get("/admin/", headers={"Accept-Language": "fr-CA"}).text) == "fr"
    assert page_language(client.get("/admin/", headers={"Accept-Language": "es-MX"}).text) == "es"
    assert page_language(client.get("/admin/", headers={"Accept-Language": "de-DE"}).text) == "en"
    assert page_language(client.get("/admin/").text) == "en"

    # this session's choice (the switcher) beats the browser
    with client.session_transaction() as sess:
        sess["locale"] = "es"
    assert page_language(client.get("/admin/", headers={"Accept-Language": "fr"}).text) == "es"

    # the choice saved on the user beats this session's choice
    db.session.get(User, user.id).locale = "fr"
    db.session.commit()
    assert page_language(client.get("/admin/", headers={"Accept-Language": "es"}).text) == "fr"

    # the switcher saves the choice on the user, and it then wins over the browser
    html_text = client.get("/admin/").text
    client.post("/language", data={"lang": "en", "csrf_token": csrf_token_from(html_text)})
    db.session.expire_all()
    assert db.session.get(User, user.id).locale == "en"
    assert page_language(client.get("/admin/", headers={"Accept-Language": "es"}).text) == "en"


def test_the_login_pages_choice_is_kept_when_logging_in_and_out(client, auth):
    user = auth.as_role(RoleName.SUPPORT)
    auth.logout()
    use_language(client, "es", "/login")  # chosen before logging in, not saved anywhere yet
    response = auth.login(user.email)
    assert response.status_code == 302
    page = client.get("/admin/", headers={"Accept-Language": "fr"}).text
    assert page_language(page) == "es"
    # the user saves French; after logging out the login page is still in French
    client.post("/language", data={"lang": "fr", "csrf_token": csrf_token_from(page)})
    response = auth.logout()
    page = visible_text(client.get(response.headers["Location"]).text)
    assert "Vous avez été déconnecté." in page and "Se connecter" in page


def test_the_switcher_needs_the_csrf_token_and_a_known_language(client, csrf_app):
    page = client.get("/login").text
    assert client.post("/language", data={"lang": "es"}).status_code == 400
    token = csrf_token_from(page)
    assert client.post("/language", data={"lang": "de", "csrf_token": token}).status_code == 400
    with client.session_transaction() as sess:
        assert "locale" not in sess
    response = client.post("/language", data={"lang": "es", "csrf_token": token})
    assert response.status_code == 302


def test_the_switcher_goes_back_to_the_page_and_never_elsewhere(client):
    page = client.get("/login").text
    token = csrf_token_from(page)
    back = client.post("/language", data={"lang": "fr", "csrf_token": token, "next": "/login"})
    assert back.headers["Location"] == "/login"
    away = client.post(
        "/language", data={"lang": "fr", "csrf_token": token, "next": "https://evil.example/"}
    )
    assert away.headers["Location"] == "/admin/"


# --------------------------------------------------------------------------- formats


@pytest.mark.parametrize(
    ("lang", "babel_locale", "birth_date"),
    [("es", "es_MX", "10 abr 1955"), ("fr", "fr", "10 avr. 1955"), ("en", "en", "Apr 10, 1955")],
)
def test_dates_and_numbers_use_the_locales_formats(
    client, auth, world, lang, babel_locale, birth_date
):
    """Spanish with Mexico's formats (LOCALE_FORMATS): 100,000 and not Spain's 100.000."""
    assert format_date(date(1955, 4, 10), "medium", locale=babel_locale) == birth_date
    auth.as_role(RoleName.ADMIN)
    use_language(client, lang)
    patient = world["patient"]
    details = visible_text(client.get(f"/admin/patient/details/?id={patient.id}").text)
    assert birth_date in details and "1955-04-10" not in details
    listing = visible_text(client.get("/admin/patient/").text)
    assert birth_date in listing
    upload_page = visible_text(client.get("/admin/bulk-upload/").text)
    max_rows = client.application.config["IMPORT_MAX_ROWS"]
    assert format_decimal(max_rows, locale=babel_locale) in upload_page


def test_spanish_is_shown_with_mexicos_formats(app):
    from backoffice.locale import select_locale

    with app.test_request_context("/", headers={"Accept-Language": "es-ES,es;q=0.9"}):
        assert select_locale() == "es_MX"  # the catalog is es, the formats Mexico's
    with app.test_request_context("/", headers={"Accept-Language": "fr"}):
        assert select_locale() == "fr"
    assert format_decimal(1234567.5, locale="es_MX") == "1,234,567.5"


# --------------------------------------------------------------------------- imports

BAD_BIRTH_DATE = b"id,first_name,last_name,birth_date\nI18N-9,Ana,Fecha,1955-13-10\n"
BAD_DATE_MESSAGES = {
    "en": "'1955-13-10' is not a date; expected YYYY-MM-DD.",
    "es": "'1955-13-10' no es una fecha; se espera el formato YYYY-MM-DD.",
    "fr": f"'1955-13-10' n'est pas une date{NBSP}; format attendu{NBSP}: YYYY-MM-DD.",
}


@pytest.fixture
def upload_dir(app, tmp_path):  # noqa: ANN001, ANN201
    previous = app.config.get("IMPORT_UPLOAD_DIR")
    app.config["IMPORT_UPLOAD_DIR"] = str(tmp_path / "uploads")
    yield tmp_path / "uploads"
    app.config["IMPORT_UPLOAD_DIR"] = previous


@pytest.mark.parametrize("lang", LANGUAGES)
def test_an_import_error_comes_back_in_the_users_language(client, auth, upload_dir, lang):
    auth.as_role(RoleName.OPERATOR)
    use_language(client, lang)
    page = client.get("/admin/bulk-upload/").text
    token = re.search(r'name="token" value="([^"]+)"', page).group(1)
    response = client.post(
        "/admin/bulk-upload/upload",
        data={
            "csrf_token": csrf_token_from(page),
            "token": token,
            "kind": "patients",
            "file": (io.BytesIO(BAD_BIRTH_DATE), "pacientes.csv"),
        },
        content_type="multipart/form-data",
    )
    assert response.status_code == 302
    status = visible_text(client.get(response.headers["Location"]).text)
    assert BAD_DATE_MESSAGES[lang] in status
    assert "birth_date" in status  # the column keeps its file name
    assert BAD_DATE_MESSAGES["en"] not in status
    assert not ENGLISH_RE.search(status), ENGLISH_RE.findall(status)


@pytest.mark.parametrize("lang", ["en", *LANGUAGES])
def test_the_import_service_speaks_the_locale_it_runs_in(tmp_path, lang):
    from backoffice.services.imports import run_import

    path = tmp_path / "patients.csv"
    path.write_bytes(BAD_BIRTH_DATE)
    with force_locale(lang):
        report = run_import(path, "patients", dry_run=True)
    assert report.outcome == "previewed"
    assert [p["column"] for p in report.problems] == ["birth_date"]
    assert BAD_DATE_MESSAGES[lang] in report.problems[0]["message"]


def test_a_job_on_a_worker_reports_in_the_language_of_who_asked(app, upload_dir):
    """A worker has no request: the job carries the uploader's language (here: an English
    request context, as a worker's would be)."""
    from backoffice.services import imports as import_jobs

    user = User(email="worker-lang@test.example.com", display_name="w", active=True)
    user.set_password("correct horse battery staple")
    db.session.add(user)
    db.session.commit()
    upload = import_jobs.save_upload(user.id, io.BytesIO(BAD_BIRTH_DATE), "p.csv", "patients")
    actor = {"user_id": user.id, "label": user.email, "locale": "es_MX"}
    assert import_jobs.run_job(user.id, upload.token, "preview", False, actor) == "previewed"
    report = import_jobs.get_upload(user.id, upload.token).report
    assert BAD_DATE_MESSAGES["es"] in report.problems[0]["message"]
