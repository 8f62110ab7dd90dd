"""Pseudonymisation: keyed tokens, dropping and generalising personal columns."""

from lakestory.privacy.tokens import hmac_sha256, normalised, with_keyed_tokens

__all__ = ["hmac_sha256", "normalised", "with_keyed_tokens"]
