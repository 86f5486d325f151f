"""Prompt-lookup drafting: guess the next tokens by copying the text that followed the last few tokens
the previous time they appeared.

Code repeats itself (names, argument lists, the shape of the line above), so the tokens after the latest
earlier occurrence of the current n-gram are often exactly what the model is about to write. The engine
feeds such a draft with the token it just chose, in one forward pass, and keeps the drafted tokens the
model's own logits agree with. The output is the greedy output unchanged; only the number of passes drops
— and a pass over five tokens costs little more than a pass over one, because decoding on a CPU is
bound by reading the weights, not by arithmetic.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MAX_NGRAM = 3  # the longest tail matched; longer matches are preferred, later ones break ties
MAX_CANDIDATES = 64  # earlier occurrences of the last token examined (the most recent ones)


def draft(context: np.ndarray, k: int, max_ngram: int = MAX_NGRAM) -> list[int]:
    """Up to `k` tokens that followed the best earlier match of the end of `context` (1-D int array).

    The match is the most recent earlier position whose preceding tokens agree with the end of the
    context for the longest stretch (up to `max_ngram` tokens). No match, no draft.
    """
    n = len(context)
    if k <= 0 or n < 2:
        return []
    last = context[-1]
    hits = np.flatnonzero(context[:-1] == last)[::-1][:MAX_CANDIDATES]
    best, best_len = -1, 0
    for pos in hits:
        length = 1
        while length < max_ngram and pos - length >= 0 and context[pos - length] == context[n - 1 - length]:
            length += 1
        if length > best_len:
            best, best_len = int(pos), length
            if length == max_ngram:
                break
    if best < 0:
        return []
    return [int(t) for t in context[best + 1:best + 1 + k]]


@dataclass
class DraftLength:
    """How many tokens to draft next: more after a draft that was kept whole, fewer after a miss, so text
    that does not repeat costs little more than plain decoding."""

    current: int = 4
    maximum: int = 4

    def update(self, drafted: int, accepted: int) -> None:
        if drafted == 0:
            return
        if accepted == drafted:
            self.current = min(self.maximum, self.current * 2)
        else:
            self.current = max(1, accepted + 1)
