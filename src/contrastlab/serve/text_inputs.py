"""The texts of a request, checked before any reaches the model.

Every refusal is an :class:`~contrastlab.serve.request_parsing.ApiError` naming the field and
item (``texts[3]``) and, for a limit, the limit and the ``serve`` option that sets it:

* more than ``max_texts`` texts in one request: 422 ``too_many_texts``;
* a text that is not a string: 422 ``invalid_request``;
* an empty text (or only white space): 422 ``empty_text``;
* a text that cannot be written as UTF-8 (a lone surrogate, e.g. JSON ``"\\ud800"``, which the
  tokenizer cannot read): 422 ``invalid_text``;
* a text longer than ``max_chars`` characters (Unicode code points): 413
  ``text_too_long``. The tokenizer keeps only a run's first ``max_length`` tokens anyway; the
  limit bounds the work of tokenising.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from contrastlab.serve.request_parsing import ApiError, shown

DEFAULT_MAX_TEXTS = 256
DEFAULT_MAX_TEXT_CHARS = 2000


def check_texts(named: Sequence[tuple[str, Any]], max_texts: int = DEFAULT_MAX_TEXTS,
                max_chars: int = DEFAULT_MAX_TEXT_CHARS) -> list[str]:
    """The texts of ``(field label, value)`` pairs, in order, once each passes every check.

    Raises:
        ApiError: the first refusal (see the module doc), naming the item's label.
    """
    if len(named) > max_texts:
        raise ApiError(422, "too_many_texts",
                       f"{len(named)} texts in one request; at most {max_texts} "
                       "(the server's --max-texts)")
    texts = []
    for label, value in named:
        if not isinstance(value, str):
            raise ApiError(422, "invalid_request",
                           f"{label}: must be a string, got {shown(value)}")
        if not value.strip():
            raise ApiError(422, "empty_text", f"{label} is empty (or only white space); send "
                           "some text")
        if len(value) > max_chars:
            raise ApiError(413, "text_too_long",
                           f"{label}: {len(value):,} characters; at most "
                           f"{max_chars:,} (the server's --max-text-chars)")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as error:
            raise ApiError(422, "invalid_text",
                           f"{label}: not valid Unicode (character {error.start} is a lone "
                           "surrogate)") from None
        texts.append(value)
    return texts


__all__ = ["DEFAULT_MAX_TEXTS", "DEFAULT_MAX_TEXT_CHARS", "check_texts"]
