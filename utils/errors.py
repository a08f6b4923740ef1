"""The one base class of errors a user can fix.

Every stage raises a subclass of `UserError` for a problem with its inputs (config, data, model,
experts, a saved set, the file system) with a message that says what was wrong and what to do.
`utils.runtime.guarded_stage` turns exactly these into one log line and exit code 2; any other
exception is a bug and keeps its traceback.
"""
from __future__ import annotations


class UserError(ValueError):
    """A problem with the user's inputs; the message names it and the fix."""
