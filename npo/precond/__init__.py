"""Preconditioner registry: ``get(name, **options)`` and ``available()``."""

from npo.precond.base import Preconditioner, available, get, register

__all__ = ["Preconditioner", "available", "get", "register"]
