"""De-identification: keyed pseudonyms, encryption of direct PII, masking of PII in text.

One secret (32 random bytes, urlsafe base64) comes from an environment variable or a key
file outside the data store; keys are derived from it for HMAC-SHA256 pseudonyms,
Fernet encryption and the suppression list. The secret is never written into the store;
the store keeps only a keyed fingerprint of it (``check_key``), so another key is
refused. ``keys_for`` / ``optional_keys`` load a shop's keys for every door and stage.

Text masking patterns are written once, in a syntax both Python's ``re`` and DuckDB's
RE2 accept, so the same masking runs set-based inside DuckDB at ingest and in Python
for single texts.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.compute as pc
from cryptography.fernet import Fernet

from shoplens.errors import ConfigError

if TYPE_CHECKING:
    from shoplens.config import Config
    from shoplens.store import Store

PSEUDONYM_PREFIX = "c_"
PSEUDONYM_HEX = 20

# (label, pattern, replacement). Group 1 is the character before the match (kept); the
# last group the character after it (kept). Order matters: longer digit runs first.
_D = "[0-9]"
MASK_RULES: tuple[tuple[str, str, str], ...] = (
    ("EMAIL", r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}", "[EMAIL]"),
    (
        "ID",
        rf"(^|[^0-9A-Za-z])[1-9]{_D}{{5}}(18|19|20){_D}{{2}}(0[1-9]|1[0-2])(0[1-9]|[12]{_D}|3[01]){_D}{{3}}[0-9Xx]([^0-9A-Za-z]|$)",
        r"\1[ID]\5",
    ),
    ("CARD", r"(^|[^0-9])[0-9]{4}([ -]?[0-9]{4}){3}([ -]?[0-9]{1,3})?([^0-9]|$)", r"\1[CARD]\4"),
    ("PHONE", rf"(^|[^0-9])(\+?86[ -]?)?1[3-9]{_D}([ -]?{_D}{{4}}){{2}}([^0-9]|$)", r"\1[PHONE]\4"),
    ("PHONE", rf"(^|[^0-9])0{_D}{{2,3}}-{_D}{{7,8}}([^0-9]|$)", r"\1[PHONE]\2"),
    ("PHONE", rf"(^|[^0-9])\+[1-9]{_D}{{0,2}}[ -]?(\(?{_D}{{2,4}}\)?[ -]?){{2,3}}{_D}{{3,4}}([^0-9]|$)", r"\1[PHONE]\3"),
    ("PHONE", rf"(^|[^0-9])\(?{_D}{{3}}\)?[ .-]{_D}{{3}}[ .-]{_D}{{4}}([^0-9]|$)", r"\1[PHONE]\2"),
)
_COMPILED = tuple((label, re.compile(p), r) for label, p, r in MASK_RULES)
# full-width ASCII variants (Ａ１＠．) and the ideographic space, common in Chinese text,
# are folded to ASCII first, or "ＡＢＣ＠ＳＯＨＵ．ＣＯＭ" would slip past the patterns
FULL_WIDTH = "".join(chr(c) for c in range(0xFF01, 0xFF5F)) + "\u3000"
HALF_WIDTH = "".join(chr(c - 0xFEE0) for c in range(0xFF01, 0xFF5F)) + " "
_FOLD = str.maketrans(FULL_WIDTH, HALF_WIDTH)


def mask_text(text: str) -> str:
    """Replace phones, e-mails, Chinese ID-card and bank-card numbers with placeholders.

    >>> mask_text("电话13812345678，邮箱 a.b@shop.cn")
    '电话[PHONE],邮箱 [EMAIL]'
    """
    text = text.translate(_FOLD)
    for _label, rx, repl in _COMPILED:
        # twice: adjacent matches share the boundary character the first pass consumed
        text = rx.sub(repl, rx.sub(repl, text))
    return text


def link_sql(kind: str, expr: str) -> str:
    """SQL normalising identifier ``expr`` of ``kind`` before its link hash, so spellings
    of one phone or address agree: a phone keeps its last 11 digits (a mainland number
    with or without +86), an e-mail is trimmed and lower-cased, an address loses case,
    spaces and punctuation; NULL when nothing is left."""
    if kind == "phone":
        norm = f"right(regexp_replace({expr}, '[^0-9]', '', 'g'), 11)"
    elif kind == "email":
        norm = f"lower(trim({expr}))"
    else:
        norm = f"lower(regexp_replace({expr}, '[\\s\\p{{P}}]', '', 'g'))"
    return f"CASE WHEN length({norm}) >= 4 THEN '{kind}:' || {norm} END"


def mask_sql(expr: str) -> str:
    """The same masking as a DuckDB SQL expression over ``expr``."""
    fw, hw = FULL_WIDTH.replace("'", "''"), HALF_WIDTH.replace("'", "''")
    out = f"translate({expr}, '{fw}', '{hw}')"
    for _label, pattern, repl in MASK_RULES:
        sql_pat = pattern.replace("'", "''")
        sql_repl = repl.replace("'", "''")
        for _ in range(2):
            out = f"regexp_replace({out}, '{sql_pat}', '{sql_repl}', 'g')"
    return out


@dataclass(frozen=True)
class Keys:
    """Keys derived from the one secret."""

    hmac_key: bytes
    fernet: Fernet
    subject_key: bytes = b""
    link_key: bytes = b""

    @classmethod
    def from_secret(cls, secret: bytes) -> Keys:
        hk = hmac.new(secret, b"shoplens/pseudonym/v1", hashlib.sha256).digest()
        fk = hmac.new(secret, b"shoplens/fernet/v1", hashlib.sha256).digest()
        sk = hmac.new(secret, b"shoplens/suppression/v1", hashlib.sha256).digest()
        lk = hmac.new(secret, b"shoplens/link/v1", hashlib.sha256).digest()
        return cls(hmac_key=hk, fernet=Fernet(base64.urlsafe_b64encode(fk)), subject_key=sk, link_key=lk)

    def link_hash(self, value: str) -> str:
        """Keyed hash of a normalised identifier (``kind:value``, see ``link_sql``) for
        linking accounts that share a phone, address, device or payment token. A key of
        its own: equal inputs give equal hashes, and nothing else stored (pseudonyms,
        the suppression list) matches them; without the secret they reveal nothing.

        >>> k = Keys.from_secret(b"x" * 32)
        >>> k.link_hash("phone:13800138000") == k.link_hash("phone:13800138000") != k.pseudonym("phone:13800138000")
        True
        """
        return "l_" + hmac.new(self.link_key, value.encode("utf-8"), hashlib.sha256).hexdigest()[:24]

    def link_hash_array(self, arr: pa.Array | pa.ChunkedArray) -> pa.Array:
        """``link_hash`` over a column, hashing each distinct value once."""
        return _each_distinct(arr, self.link_hash)

    def fingerprint(self) -> str:
        """A short keyed value that identifies the secret without revealing it, recorded in
        the store so a different key is refused instead of silently making new pseudonyms."""
        return hmac.new(self.hmac_key, b"shoplens/fingerprint/v1", hashlib.sha256).hexdigest()[:16]

    def subject_hash(self, pseudonym: str) -> str:
        """Keyed hash of a customer's pseudonym for the suppression list of erased customers.

        Taken over the pseudonym (``c_...``), so erasure by pseudonym or by the shop's id
        lands on the same entry, and ingest checks ``subject_hash(pseudonym(raw_id))``.
        A key of its own: the hash matches neither the pseudonym nor anything else
        stored, so the list reveals nothing beyond "some erased customer".

        >>> k = Keys.from_secret(b"x" * 32)
        >>> k.subject_hash(k.pseudonym("C001")) == k.subject_hash(k.pseudonym("C001")) != k.pseudonym("C001")
        True
        """
        return "s_" + hmac.new(self.subject_key, pseudonym.encode("utf-8"), hashlib.sha256).hexdigest()[:32]

    def subject_hash_array(self, arr: pa.Array | pa.ChunkedArray) -> pa.Array:
        """``subject_hash`` over a column of pseudonyms, hashing each distinct value once."""
        return _each_distinct(arr, self.subject_hash)

    def pseudonym(self, value: str) -> str:
        """Keyed, stable pseudonym of an identifier.

        >>> k = Keys.from_secret(b"x" * 32)
        >>> k.pseudonym("C001") == k.pseudonym("C001") != k.pseudonym("C002")
        True
        """
        digest = hmac.new(self.hmac_key, value.encode("utf-8"), hashlib.sha256).hexdigest()
        return PSEUDONYM_PREFIX + digest[:PSEUDONYM_HEX]

    def pseudonymise_array(self, arr: pa.Array | pa.ChunkedArray) -> pa.Array:
        """Pseudonymise a string column, hashing each distinct value once."""
        return _each_distinct(arr, self.pseudonym)

    def encrypt_array(self, arr: pa.Array | pa.ChunkedArray) -> pa.Array:
        values = arr.to_pylist()
        return pa.array(
            [None if v is None else self.fernet.encrypt(v.encode("utf-8")).decode() for v in values],
            pa.string(),
        )

    def decrypt(self, token: str) -> str:
        return self.fernet.decrypt(token.encode()).decode("utf-8")


def _each_distinct(arr: pa.Array | pa.ChunkedArray, fn: Callable[[str], str]) -> pa.Array:
    """``fn`` over a string column, called once per distinct value (NULL stays NULL)."""
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    uniq = pc.unique(arr)
    mapped = pa.array([None if v is None else fn(v) for v in uniq.to_pylist()], pa.string())
    return pc.take(mapped, pc.index_in(arr, value_set=uniq))


def load_keys(key_env: str, key_file: Path, create: bool = False) -> Keys:
    """Read the secret from ``$key_env`` or ``key_file``; optionally create the file.

    The file is created with mode 600. A missing secret is a clear error, because data
    pseudonymised under one key cannot be joined with data under another.
    """
    raw = os.environ.get(key_env)
    if raw is None and key_file.exists():
        raw = key_file.read_text(encoding="utf-8").strip()
    if raw is None:
        if not create:
            raise ConfigError(
                f"no secret key: set ${key_env} or create {key_file} "
                "(run 'shoplens init' to generate one; if the shop folder moved, set [privacy] key_file "
                "to the key file it used before)"
            )
        raw = base64.urlsafe_b64encode(secrets.token_bytes(32)).decode()
        key_file.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(raw + "\n")
    try:
        secret = base64.urlsafe_b64decode(raw.encode())
    except ValueError:
        raise ConfigError(f"secret key from ${key_env} / {key_file} is not urlsafe base64") from None
    if len(secret) < 16:
        raise ConfigError(f"secret key from ${key_env} / {key_file} is shorter than 16 bytes")
    return Keys.from_secret(secret)


def candidate_pseudonyms(ref: str, keys: Keys | None) -> list[str]:
    """The pseudonyms a customer reference may stand for: itself when it is one (``c_...``),
    and, with the key, the pseudonym of the shop's own id.

    >>> candidate_pseudonyms("c_1", None)
    ['c_1']
    """
    out = [ref] if ref.startswith(PSEUDONYM_PREFIX) else []
    if keys is not None:
        out.append(keys.pseudonym(ref))
    return out


def keys_for(cfg: Config, create: bool = False) -> Keys:
    """The keys of the shop ``cfg`` describes (``$key_env`` or ``Config.key_path``)."""
    return load_keys(cfg.privacy.key_env, cfg.key_path, create=create)


def optional_keys(cfg: Config) -> Keys | None:
    """The keys if the secret is available; readers can work with pseudonyms without it."""
    try:
        return keys_for(cfg)
    except ConfigError:
        return None


def check_key(cfg: Config, store: Store, keys: Keys) -> None:
    """Refuse a secret key other than the one the store was built with (pseudonyms, the
    vault and the suppression list all depend on it); record it for a store that has none."""
    recorded = store.scalar("SELECT value FROM store_meta WHERE key = 'key_fingerprint'")
    if recorded is None:
        store.con.execute("INSERT OR REPLACE INTO store_meta VALUES ('key_fingerprint', ?)", [keys.fingerprint()])
    elif recorded != keys.fingerprint():
        raise ConfigError(
            f"the secret key (${cfg.privacy.key_env} or {cfg.key_path}) is not the one this store was built with: "
            "its pseudonyms would not match the stored ones. If the shop folder moved, set [privacy] key_file "
            "to the key file it used before"
        )
