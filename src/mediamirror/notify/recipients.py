"""A dataset's own recipient: the address in its metadata's ``notify`` key.

A feed record can name someone to tell about it (``notify: owner.email`` in the ``feeds:``
block; the sync copies the address into the dataset's metadata). Its ``dataset.ready`` and
``job.failed`` messages then go to that address too, in the same email as ``to_addrs``
(one message, not two). A digest, which lists other datasets too, goes to ``to_addrs``
only. Anything that is not one plain address (a list, a display name, a line break that
could smuggle in a header, more than 254 characters) is ignored: the address comes from
a CMS, not from the person who configured the email block.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

#: Key of dataset metadata (and of notification facts) holding the address.
META_KEY = "notify"
_ADDRESS = re.compile(r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?")


def address(value: Any) -> str | None:
    """``value`` as one plain email address, or None when it is not one."""
    if not isinstance(value, str):
        return None
    text = value.strip()
    if len(text) > 254 or not _ADDRESS.fullmatch(text) or ".." in text:
        return None
    return text


def dataset_recipient(meta: Mapping[str, Any] | None) -> str | None:
    """The valid ``notify`` address of a dataset's metadata, if any."""
    return address((meta or {}).get(META_KEY))


def merged(to_addrs: Iterable[str], extra: Iterable[str]) -> list[str]:
    """``to_addrs`` followed by the extra addresses not already among them (case aside)."""
    out = list(to_addrs)
    seen = {a.lower() for a in out}
    for item in extra:
        if item.lower() not in seen:
            seen.add(item.lower())
            out.append(item)
    return out
