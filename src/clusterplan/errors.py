"""The exceptions the interface layer turns into one line and an exit code.

* :class:`SpecError`: bad input (exit code 2). It names the field, the value and the rule.
* :class:`NoAnswerError`: a valid question without a good answer, such as a plan that does not fit
  in memory or no plan that meets a deadline (exit code 1). It names the same three things.

Both print as ``field=value: rule`` on one line; the value is shortened to about
:data:`MAX_VALUE_CHARS` characters, so a refusal never echoes a whole file or a huge argument.
"""

from __future__ import annotations

from typing import ClassVar

#: Most characters of a value a one-line message shows (the rest is elided, its size stated).
MAX_VALUE_CHARS = 200


def shorten(text: str, limit: int = MAX_VALUE_CHARS) -> str:
    """``text`` cut to about ``limit`` characters, on one line, saying how much was left out."""
    text = text.replace("\r", "\\r").replace("\n", "\\n")
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text):,} characters)"


def show(value: object) -> str:
    """A value as a refusal line shows it: its ``repr``, shortened."""
    try:
        text = repr(value)
    except Exception:  # a value whose repr fails is still named by its type
        text = f"<{type(value).__name__}>"
    return shorten(text)


class SpecError(ValueError):
    """Bad input: names the field, the value and the rule it breaks (exit code 2).

    The message is a single line, ready to print to a user without a traceback.
    """

    #: The process exit code the command line ends with.
    exit_code: ClassVar[int] = 2

    def __init__(self, field: str, value: object, rule: str) -> None:
        self.field = field
        self.value = value
        self.rule = rule
        super().__init__(f"{shorten(str(field))}={show(value)}: {rule}")

    def renamed(self, field: str) -> SpecError:
        """The same error (same class, value and rule) under the name the user typed."""
        return type(self)(field, self.value, self.rule)


class NoAnswerError(SpecError):
    """A valid question whose answer is 'no' (exit code 1): the plan does not fit in memory,
    no plan fits, no deployment meets the SLO. Names the field, the value and the reason."""

    exit_code: ClassVar[int] = 1
