"""Shared column types and mixins: UTC timestamps, optimistic version numbers, labelled enums."""

from __future__ import annotations

import enum
from datetime import UTC, datetime

from sqlalchemy import DateTime, Enum, Index, Integer, Table, TypeDecorator, func
from sqlalchemy.orm import Mapped, declared_attr, mapped_column


def utcnow() -> datetime:
    """Current time, timezone-aware in UTC (a callable default, never a value computed once)."""
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator):
    """Timezone-aware UTC datetimes on every backend (SQLite stores them naive)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect):  # noqa: ANN201
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect):  # noqa: ANN201
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class TimestampMixin:
    """``created_at`` / ``updated_at`` maintained by the ORM, in UTC."""

    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, nullable=False)
    updated_at: Mapped[datetime] = mapped_column(
        UTCDateTime(), default=utcnow, onupdate=utcnow, nullable=False
    )


class VersionedMixin:
    """A version number bumped on every UPDATE; a stale save raises instead of overwriting."""

    version: Mapped[int] = mapped_column(Integer, nullable=False, default=1)

    @declared_attr.directive
    def __mapper_args__(cls) -> dict:  # noqa: N805
        return {"version_id_col": cls.__table__.c.version}


class LabeledEnum(str, enum.Enum):
    """A code stored as its name, shown through a (translatable) label.

    Members compare equal to their code string (``Urgency.HIGH == "HIGH"``), so codes stay
    codes in the database, in CSV files and in URLs.
    """

    def __str__(self) -> str:
        return self.value

    @property
    def label(self) -> str:
        labels = type(self).labels()
        return str(labels.get(self, self.value))

    @classmethod
    def labels(cls) -> dict:
        """Map member -> human label; subclasses override with lazy strings."""
        return {}

    @classmethod
    def codes(cls) -> list[str]:
        return [m.value for m in cls]

    @classmethod
    def choices(cls) -> list[tuple[str, object]]:
        """(code, label) pairs; the labels stay lazy, so a list built once (a form's select box,
        a filter's options) is shown in each request's language."""
        labels = cls.labels()
        return [(m.value, labels.get(m, m.value)) for m in cls]

    @classmethod
    def parse(cls, raw: object) -> LabeledEnum:
        """Case-insensitive lookup by code; ValueError names the allowed codes."""
        from backoffice.validation import parse_code

        return parse_code(cls, raw)


def enum_column(enum_cls: type[LabeledEnum], **kwargs: object) -> Enum:
    """A VARCHAR + CHECK enum column storing the code (portable, no native PG enum to migrate)."""
    return Enum(
        enum_cls,
        native_enum=False,
        create_constraint=True,
        validate_strings=True,
        length=32,
        values_callable=lambda e: [m.value for m in e],
        name=kwargs.pop("name", enum_cls.__name__.lower()),
    )


def trigram_index(table: str, column: str) -> Index:
    """Substring search (``ILIKE '%term%'``) on ``column``: a pg_trgm GIN index, PostgreSQL only
    (SQLite has no such index and is not used at sizes where it matters)."""
    return Index(
        f"ix_{table}_{column}_trgm",
        column,
        postgresql_using="gin",
        postgresql_ops={column: "gin_trgm_ops"},
    ).ddl_if(dialect="postgresql")


def prefix_index(table: Table, column: str, name: str) -> Index:
    """Search from the start of a key (``lower(column) LIKE 'term%'``, and equality): a b-tree
    in pattern order, which serves it whatever the database's collation. PostgreSQL only."""
    label = f"{column}_lower"
    return Index(
        name,
        func.lower(table.c[column]).label(label),
        postgresql_ops={label: "text_pattern_ops"},
    ).ddl_if(dialect="postgresql")
