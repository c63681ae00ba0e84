"""Hashed match keys for ad platforms: SHA-256 of the normalised e-mail address and
phone number, the form Google Customer Match, Meta custom audiences and the Chinese
DMPs (Tencent, Ocean Engine) accept, so the platform can match its own users without
receiving the address or number. Decrypted from the vault only for customers whose
``sharing_ads`` consent holds (the caller has already selected them with
``consent.select``); the clear values never leave this function."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from shoplens.errors import ConfigError
from shoplens.privacy import Keys

MATCH_COLUMNS = ("email_sha256", "phone_sha256")


def normalise_email(value: str) -> str:
    """Trimmed and lower-cased, as the platforms require before hashing.

    >>> normalise_email("  Li.Na@Example.COM ")
    'li.na@example.com'
    """
    return value.strip().lower()


def normalise_phone(value: str, country_code: str = "86") -> str:
    """E.164 digits with the country code (a mainland number without one gets +86).

    >>> normalise_phone("138-0013-8000"), normalise_phone("+1 (206) 555-0100")
    ('+8613800138000', '+12065550100')
    """
    digits = re.sub(r"\D", "", value)
    if value.strip().startswith("+"):
        return "+" + digits
    if digits.startswith("00"):
        return "+" + digits[2:]
    return f"+{country_code}{digits.lstrip('0')}"


def _sha(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8")).hexdigest()


def match_keys(store_path: Path, keys: Keys | None, customer_ids: list[str]) -> dict[str, dict[str, str | None]]:
    """Per customer, the hashed e-mail and phone (None where the vault has none)."""
    if keys is None:
        raise ConfigError("match keys need the shop's secret key (the e-mail and phone are encrypted in the vault)")
    from shoplens.store import Store

    out: dict[str, dict[str, str | None]] = {cid: dict.fromkeys(MATCH_COLUMNS) for cid in customer_ids}
    with Store.open(store_path, read_only=True) as store:
        for start in range(0, len(customer_ids), 1000):
            chunk = customer_ids[start:start + 1000]
            rows = store.con.execute(
                "SELECT customer_id, field, ciphertext FROM vault_customer_pii WHERE field IN ('email', 'phone') "
                "AND list_contains(?, customer_id)", [chunk]).fetchall()
            for cid, fld, token in rows:
                clear = keys.decrypt(token)
                out[cid][f"{fld}_sha256"] = _sha(normalise_email(clear) if fld == "email" else normalise_phone(clear))
    return out
