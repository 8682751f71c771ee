"""Command-line rewriting done before click parses: one flag, several values (``--train-sources a b``).

Kept apart from `segkit.cli._common` so that `segkit.cli.main` imports nothing but typer before parsing.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence


def _any(token: str) -> bool:
    return True


def _number(token: str) -> bool:
    try:
        float(token)
    except ValueError:
        return False
    return True


def _fold(token: str) -> bool:
    return token == "all" or token.isdigit()


MULTI_VALUE_OPTIONS: dict[str, Callable[[str], bool]] = {
    "--train-sources": _any,
    "--test-sources": _any,
    "--unlabelled-sources": _any,
    "--data-root": _any,
    "--input": _any,
    "-i": _any,
    "--configurations": _any,
    "--labels": _number,
    "--indices": _number,
    "--fold": _fold,
    "-f": _fold,
}
"""Options that take one or more values after one flag (``--train-sources a b``), as the seed scripts did,
with a test of what a value can look like.

Click options have a fixed number of values, so `expand_multi_value` rewrites ``--opt a b`` into
``--opt a --opt b`` before parsing. An option name listed here must take a list in every command.
Options of numbers (or folds) stop at the first token that is not one, so positional arguments after
them survive: ``segkit eval --labels 1 2 GT PRED``. Backends' list flags (``--class-weights``) are added
by the command that declares them (`value_test` of their item type).
"""


def value_test(item_type: type) -> Callable[[str], bool]:
    """What a value of a list option of `item_type` can look like (numbers stop at a non-number)."""
    return _number if item_type in (int, float) else _any


def expand_multi_value(argv: Sequence[str], extra: Mapping[str, Callable[[str], bool]] | None = None) -> list[str]:
    """Rewrite ``--opt a b c`` into ``--opt a --opt b --opt c`` for the options in `MULTI_VALUE_OPTIONS` (and `extra`).

    Values are taken until the next token that starts with ``-`` (negative numbers excepted), that the
    option's value test rejects, or the end; ``--`` stops the expansion.
    """
    tests = {**MULTI_VALUE_OPTIONS, **(extra or {})}
    out: list[str] = []
    i = 0
    while i < len(argv):
        token = argv[i]
        if token == "--":
            out.extend(argv[i:])
            break
        name, eq, inline = token.partition("=")
        accepts = tests.get(name)
        if accepts is not None:
            values = [inline] if eq else []
            j = i + 1
            while j < len(argv) and not _is_flag(argv[j]) and (accepts(argv[j]) or not values):
                values.append(argv[j])
                j += 1
            if not values:
                out.append(token)
            for value in values:
                out.extend([name, value])
            i = j
            continue
        out.append(token)
        i += 1
    return out


def _is_flag(token: str) -> bool:
    if not token.startswith("-") or token == "-":
        return False
    try:
        float(token)
    except ValueError:
        return True
    return False
