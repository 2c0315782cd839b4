"""The one exception type for mistakes a user can make (bad config, bad data, missing key).

The CLI prints its message as one line and exits with status 2; anything else is a bug and keeps
its traceback.
"""

from __future__ import annotations


class UserError(Exception):
    """A mistake in the user's config, data or environment; the message names the file, row or field."""
