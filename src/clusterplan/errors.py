"""The one exception type the interface layer turns into a one-line refusal (exit code 2)."""

from __future__ import annotations


class SpecError(ValueError):
    """Bad input: names the field, the value and the rule it breaks.

    The message is a single line, ready to print to a user without a traceback.
    """

    def __init__(self, field: str, value: object, rule: str) -> None:
        self.field = field
        self.value = value
        self.rule = rule
        super().__init__(f"{field}={value!r}: {rule}")
