"""Errors of the Key Vault path, each with a category that maps to a gRPC status.

Messages name the object and the field, and what to do; they never carry a
secret value, token or key material.
"""

from __future__ import annotations

from enum import Enum


class Category(Enum):
    INVALID = "invalid"  # the mount's parameters are wrong
    NOT_FOUND = "not_found"  # the vault or object does not exist
    FORBIDDEN = "forbidden"  # the identity may not read it, or it is disabled
    UNAUTHENTICATED = "unauthenticated"  # no token could be had for the identity
    UNAVAILABLE = "unavailable"  # Key Vault or the token endpoint cannot be reached
    INTERNAL = "internal"  # content Key Vault returned that cannot be converted


class KeyVaultError(Exception):
    category = Category.INTERNAL

    def __init__(self, message: str, category: Category | None = None) -> None:
        super().__init__(message)
        if category is not None:
            self.category = category


class InvalidSpec(KeyVaultError):
    """A parameter of the mount is invalid; raised before any network call."""

    category = Category.INVALID

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field


class AnswerTooLarge(KeyVaultError):
    """A Key Vault answer grew past a byte cap while it arrived; the fetch names the object."""

    category = Category.INVALID


class TokenAnswerTooLarge(KeyVaultError):
    """An identity endpoint's answer grew past --max-token-answer-bytes while it arrived:
    no token could be had (the credential's wrapping is seen through, keyvault/failures.py)."""

    category = Category.UNAUTHENTICATED


class ListingForbidden(KeyVaultError):
    """Key Vault refused to list a type's objects: a selection needs the list permission."""

    category = Category.FORBIDDEN
