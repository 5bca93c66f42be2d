"""Query bytes that are not UTF-8, read as quart reads them (werkzeug's `request.args`): the
offending bytes percent-encoded again, so `%FF` stays the text `%FF` rather than failing the
request. The lean path decodes queries itself and must not need werkzeug (which registers its own
handler when imported) to do it the same way."""

from __future__ import annotations

import codecs
from urllib.parse import quote

QUOTE_UNDECODABLE = "queen.quote_undecodable"


def _quote_undecodable(error: UnicodeError) -> tuple[str, int]:
    if not isinstance(error, UnicodeDecodeError):
        raise error
    return quote(error.object[error.start : error.end], safe=""), error.end


codecs.register_error(QUOTE_UNDECODABLE, _quote_undecodable)
