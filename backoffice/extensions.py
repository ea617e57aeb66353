"""Extension objects, created unbound and attached to an app in ``create_app``."""

from collections.abc import Callable
from typing import Any, ClassVar

from flask_babel import Babel
from flask_limiter import Limiter
from flask_login import LoginManager
from flask_migrate import Migrate
from flask_sqlalchemy import SQLAlchemy
from flask_sqlalchemy.session import Session as FlaskSQLAlchemySession
from flask_wtf.csrf import CSRFProtect
from sqlalchemy import MetaData
from sqlalchemy.orm import DeclarativeBase

# Named constraints make Alembic migrations deterministic on PostgreSQL and possible on SQLite
# (batch mode needs a name to drop or alter a constraint).
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    """Declarative base shared by every model."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Session(FlaskSQLAlchemySession):
    """The app's session: ``get`` answers a record from the identity map without SQL, where no
    query-level rule can see it, so registered checks (the record scope,
    backoffice/auth/scope.py) decide whether it may be returned."""

    get_checks: ClassVar[list[Callable[[Any, Any], bool]]] = []

    def get(self, entity: Any, ident: Any, **kwargs: Any) -> Any:
        obj = super().get(entity, ident, **kwargs)
        if obj is not None and not all(check(self, obj) for check in self.get_checks):
            return None
        return obj


db = SQLAlchemy(model_class=Base, session_options={"class_": Session})
migrate = Migrate()
login_manager = LoginManager()
babel = Babel()
csrf = CSRFProtect()


def _client_address() -> str:
    from flask import request

    return request.remote_addr or "unknown"


# Per-address limits; storage from RATELIMIT_STORAGE_URI (memory:// by default, Redis in
# production so that the limit is shared by every worker).
limiter = Limiter(key_func=_client_address, default_limits=[])
