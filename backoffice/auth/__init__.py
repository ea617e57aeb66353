"""Authentication: login, logout and the user loader."""

from backoffice.auth.views import bp, init_login

__all__ = ["bp", "init_login"]
