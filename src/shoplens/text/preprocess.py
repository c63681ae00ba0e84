"""Preprocessing shared by every analyser: mask, normalise, detect language, split, tokenise.

Order matters: PII is masked first (``privacy.mask_text``), so no model, cache or log
downstream ever sees a phone number or an e-mail, even when the caller passes raw text
(the CLI's ``analyze``). Normalisation then folds full-width characters (NFKC), collapses
runs of repeated punctuation and emoji, and caps the length.

Language detection is a character-class count (Han vs Latin letters), written by hand
because the two languages this system must tell apart are distinguishable by script
alone, and the common detectors (langdetect, fastText lid) are either non-deterministic
or ship models we cannot fetch.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Literal

from shoplens.errors import TextInputError
from shoplens.privacy import mask_text

Language = Literal["zh", "en", "mixed", "und"]
MAX_CHARS = 2000  # longer texts are cut (and flagged): reviews beyond this are rare and slow to embed

_HAN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_LATIN_WORD = re.compile(r"[A-Za-z]{2,}")
# emoji and pictographs; variation selectors and zero-width joiners glue sequences together
_EMOJI = re.compile(r"[\U0001F000-\U0001FAFF\u2600-\u27BF\u2B00-\u2BFF\uFE0F\u200D]")
_REPEAT_PUNCT = re.compile(r"([!?.,~。！？，、…~\-=*])\1+")
_REPEAT_EMOJI = re.compile(r"([\U0001F000-\U0001FAFF\u2600-\u27BF])(?:\uFE0F?\1)+")
_SPACES = re.compile(r"\s+")
# a clause ends at punctuation; a contrast word starts a new clause ("物流太慢了，但是质量很好")
_CLAUSE_END = re.compile(r"[。！？!?；;，,\n]+|(?<=[a-z])\.(?:\s+|$)")
_CONTRAST = re.compile(r"(?=(?:但是|但|不过|可是|然而|就是|\bbut\b|\bhowever\b|\bthough\b|\balthough\b))", re.I)
_EN_TOKEN = re.compile(r"[a-z][a-z'-]*[a-z]|[a-z]")
PLACEHOLDER = re.compile(r"\[(PHONE|EMAIL|ID|CARD)\]")  # what privacy.mask_text leaves


@dataclass(frozen=True)
class Clause:
    """One clause of a normalised text, with its character offsets in that text."""

    text: str
    start: int
    end: int


@dataclass(frozen=True)
class Prepared:
    """A text ready for the analysers. ``text`` is masked and normalised."""

    text: str
    language: Language
    clauses: tuple[Clause, ...]
    truncated: bool = False
    emoji: tuple[str, ...] = field(default=())

    @property
    def empty(self) -> bool:
        return not self.clauses


def normalise(text: str) -> str:
    """Fold width (NFKC), collapse repeated punctuation/emoji and whitespace.

    >>> normalise("质量很好！！！！ＧＯＯＤ👍👍👍")
    '质量很好!GOOD👍'
    """
    text = unicodedata.normalize("NFKC", text)
    text = _REPEAT_PUNCT.sub(r"\1", text)
    text = _REPEAT_EMOJI.sub(r"\1", text)
    return _SPACES.sub(" ", text).strip()


def detect_language(text: str) -> Language:
    """``zh``, ``en``, ``mixed`` (both scripts carry weight) or ``und`` (neither).

    >>> detect_language("物流很快"), detect_language("fast shipping"), detect_language("👍 123")
    ('zh', 'en', 'und')
    """
    han = len(_HAN.findall(text))
    latin = sum(len(w) for w in _LATIN_WORD.findall(PLACEHOLDER.sub(" ", text)))
    if han == 0 and latin == 0:
        return "und"
    # a Latin letter carries about a third of the information of a Han character
    han_w, latin_w = han, latin / 3
    if han_w and latin_w and min(han_w, latin_w) / max(han_w, latin_w) >= 0.5:
        return "mixed"
    return "zh" if han_w >= latin_w else "en"


def split_clauses(text: str) -> tuple[Clause, ...]:
    """Clauses with offsets: split at punctuation and before contrast words.

    >>> [c.text for c in split_clauses("物流太慢了,但是质量很好")]
    ['物流太慢了', '但是质量很好']
    """
    out: list[Clause] = []
    pos = 0
    for m in [*_CLAUSE_END.finditer(text), None]:
        end = m.start() if m else len(text)
        piece_start = pos
        cuts = [c.start() for c in _CONTRAST.finditer(text, pos, end) if c.start() > pos]
        for cut in [*cuts, end]:
            seg = text[piece_start:cut]
            stripped = seg.strip()
            if stripped and (_HAN.search(stripped) or re.search(r"\w", stripped) or _EMOJI.search(stripped)):
                lead = len(seg) - len(seg.lstrip())
                out.append(Clause(stripped, piece_start + lead, piece_start + lead + len(stripped)))
            piece_start = cut
        pos = m.end() if m else len(text)
    return tuple(out)


def prepare(text: object, max_chars: int = MAX_CHARS) -> Prepared:
    """Mask PII, normalise, detect language and split into clauses.

    Empty or emoji-only input gives a defined result (no clauses, language ``und``);
    anything that is not a string is a ``TextInputError``.

    >>> p = prepare("物流太慢了，但是质量很好。电话13812345678")
    >>> p.language, [c.text for c in p.clauses]
    ('zh', ['物流太慢了', '但是质量很好', '电话[PHONE]'])
    """
    if not isinstance(text, str):
        raise TextInputError(f"expected text (a string), found {type(text).__name__}: {str(text)[:60]!r}")
    clean = normalise(mask_text(text))
    truncated = len(clean) > max_chars
    if truncated:
        clean = clean[:max_chars]
    emoji = tuple(e for e in dict.fromkeys(_EMOJI.findall(clean)) if e not in "\ufe0f\u200d")
    words_only = _EMOJI.sub("", clean).strip()
    if not words_only:
        return Prepared(clean, "und", (), truncated, emoji)
    return Prepared(clean, detect_language(clean), split_clauses(clean), truncated, emoji)


@lru_cache(maxsize=1)
def _jieba():  # type: ignore[no-untyped-def]
    import logging

    import jieba

    jieba.setLogLevel(logging.WARNING)
    jieba.initialize()
    return jieba


def tokens(text: str) -> list[str]:
    """Words for counting: jieba for Chinese runs, lower-cased words for Latin runs.

    >>> tokens("质量很好 fast shipping")
    ['质量', '很', '好', 'fast', 'shipping']
    """
    out: list[str] = []
    for run in re.findall(r"[\u3400-\u9fff\uf900-\ufaff]+|[A-Za-z][A-Za-z'-]*", PLACEHOLDER.sub(" ", text)):
        if _HAN.match(run):
            out.extend(w for w in _jieba().lcut(run) if w.strip())
        else:
            out.extend(_EN_TOKEN.findall(run.lower()))
    return out
