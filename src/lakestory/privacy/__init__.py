"""Pseudonymisation: keyed tokens, dropping and generalising personal columns."""

from lakestory.privacy.tokens import normalised, with_hmac, with_keyed_tokens

__all__ = ["normalised", "with_hmac", "with_keyed_tokens"]
