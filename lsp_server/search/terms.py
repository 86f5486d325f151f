"""Search terms: identifiers split the way people search for them (``parseConfig`` → ``parse``, ``config``).

The same terms go into the index and come out of a query, so ``parse config``, ``parseConfig`` and
``parse_config`` all meet.
"""

from __future__ import annotations

import re

MAX_QUERY_CHARS = 2_000
MAX_QUERY_TERMS = 32

STOPWORDS = frozenset(
    "a an and are as at be by do does did for from how i in is it its of on or that the this to we what when "
    "where which who why will with you your our my me can should would could there here into all any".split())


_WORD = re.compile(r"[^\W_]+(?:_+[^\W_]+)*|[^\W_]+", re.UNICODE)
_PART = re.compile(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+|[A-Z]+|[0-9]+|[^\W\d_A-Za-z]+", re.UNICODE)


def identifiers(text: str) -> list[str]:
    """The words of a text: runs of letters and digits, joined by inner underscores (``parse_config``)."""
    return _WORD.findall(text)


def split_identifier(word: str) -> list[str]:
    """``parseConfig`` / ``parse_config`` / ``HTTPServer2`` → lower-case parts (``parse``, ``config`` …)."""
    return [p.lower() for p in _PART.findall(word)]


def terms(text: str) -> list[str]:
    """Search terms: each identifier whole (lower case, underscores dropped) and its camel/snake parts."""
    out: list[str] = []
    for word in identifiers(text):
        parts = split_identifier(word)
        whole = "".join(parts)
        if whole:
            out.append(whole)
        if len(parts) > 1:
            out.extend(parts)
    return out


def normalize_name(name: str) -> str:
    """Case and separator-free form of a name, so ``parse config`` equals ``parseConfig`` and ``parse_config``."""
    return "".join(split_identifier(name))


def query_terms(query: str) -> list[str]:
    """The distinct, non-stopword terms of a query (at most MAX_QUERY_TERMS)."""
    seen: dict[str, None] = {}
    for term in terms(query[:MAX_QUERY_CHARS]):
        if term not in STOPWORDS and term not in seen:
            seen[term] = None
    return list(seen)[:MAX_QUERY_TERMS]
