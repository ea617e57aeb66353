"""Translation helpers that work inside and outside a request (commands, services, tests)."""

from flask_babel import gettext, lazy_gettext, ngettext

_ = gettext
_l = lazy_gettext

__all__ = ["_", "_l", "gettext", "lazy_gettext", "ngettext"]
