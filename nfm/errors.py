"""User-error types and messages of the library.  :mod:`nfm.cli` formats them (one line, exit status 2) and
re-exports them; library code raises them from here, so nothing in ``nfm/`` needs the command-line module for
an error.  Nothing here imports anything heavy."""
from __future__ import annotations

import difflib
import re
from typing import Iterable


class UsageError(ValueError):
    """A user error on the command line; the message names the argument (``field``) and the value."""

    def __init__(self, field: str, message: str):
        self.field = field
        super().__init__(f"{field}: {message}" if field else message)


def did_you_mean(value: str, choices: Iterable[str], what: str = "") -> str:
    """``"did you mean 'co_smoothing'?"`` for the closest of ``choices``, else the list of choices."""
    choices = [str(c) for c in choices]
    same = [c for c in choices if _normalised(c) == _normalised(value)]  # synth-4-00 -> synth-04-00
    if len(same) == 1:
        return f"did you mean {same[0]!r}?"
    close = difflib.get_close_matches(str(value), choices, n=3, cutoff=0.6)
    if close:
        best = difflib.SequenceMatcher(None, str(value), close[0]).ratio()
        tied = [c for c in close if difflib.SequenceMatcher(None, str(value), c).ratio() >= best - 1e-12]
        return "did you mean " + " or ".join(repr(c) for c in tied) + "?"
    shown = ", ".join(choices[:12]) + (" ..." if len(choices) > 12 else "")
    return f"available{(' ' + what) if what else ''}: {shown}"


def _normalised(value) -> str:
    """Lower case, numbers without leading zeros: ``Synth-04-00`` and ``synth-4-0`` read alike."""
    return re.sub(r"\d+", lambda m: str(int(m.group())), str(value).lower())


__all__ = ["UsageError", "did_you_mean"]
