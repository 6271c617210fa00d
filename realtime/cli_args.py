"""Argument-parsing pieces every `lart-stream` command shares (run, export, bench): numbers checked
when the command line is parsed, one-line usage errors, defaults in --help, and old flag names kept
as hidden aliases that warn. Standard library only, so `--help` and bad flags answer at once."""

from __future__ import annotations

import argparse
import sys
from typing import Callable, NoReturn


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("lart-stream")
    except PackageNotFoundError:
        return "unknown (not installed)"


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line (exit 2), not the whole usage block."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")

    def add_version(self) -> None:
        self.add_argument("--version", action="version", version=f"%(prog)s {_version()}")


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Shows "(default: X)" for every option with a real default (not None/False), keeps descriptions as written."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if action.default is None or action.default is False or action.default == argparse.SUPPRESS \
                or "default" in text:
            return text
        return super()._get_help_string(action) or text


def add_defaults_to_help(parser: argparse.ArgumentParser, defaults: dict[str, object]) -> None:
    """Append "(default: X)" to the help of options whose default lives elsewhere (a config tree):
    ``defaults`` maps an option's dest to the value used when it is not given."""
    for action in parser._actions:
        if action.dest in defaults and action.help not in (None, argparse.SUPPRESS) and "default" not in action.help:
            value = defaults[action.dest]
            if value is not None and value is not False and value != "":
                action.help = f"{action.help} (default: {value})"


def _number(kind: type, low: float | None, high: float | None, what: str) -> Callable[[str], float]:
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if value != value or (low is not None and value < low) or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"expected {what}, got {text}")
        return value

    parse.__name__ = what  # argparse names the type in some messages
    return parse


positive_int = _number(int, 1, None, "an integer >= 1")
non_negative_int = _number(int, 0, None, "an integer >= 0")
positive_float = _number(float, 1e-9, None, "a number > 0")
non_negative_float = _number(float, 0.0, None, "a number >= 0")
probability = _number(float, 0.0, 1.0, "a number in [0, 1]")


class DeprecatedAlias(argparse.Action):
    """An old flag name: stores into the new flag's dest and warns once on stderr. Hidden from --help."""

    def __init__(self, option_strings, dest, new: str, **kwargs):
        kwargs["help"] = argparse.SUPPRESS
        super().__init__(option_strings, dest, **kwargs)
        self.new = new

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        print(f"{parser.prog}: {option_string} is deprecated, use {self.new}", file=sys.stderr)
        setattr(namespace, self.dest, values)


def add_alias(parser: argparse.ArgumentParser, old: str, new_action: argparse.Action) -> None:
    """Register ``old`` as a hidden deprecated alias of the option ``new_action`` (same dest, type, choices)."""
    parser.add_argument(old, dest=new_action.dest, action=DeprecatedAlias, new=new_action.option_strings[0],
                        type=new_action.type, choices=new_action.choices, metavar=new_action.metavar,
                        default=argparse.SUPPRESS)
