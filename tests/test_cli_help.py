"""Every command, and every option and argument of every command, says in `--help` what it is for."""

from __future__ import annotations

import argparse
from collections.abc import Iterator

from infercloud.cli import build_parser


def parsers(parser: argparse.ArgumentParser, path: str) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    """(command path, parser) of `parser` and of every sub-command under it, depth first."""
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from parsers(sub, f"{path} {name}")


def test_every_option_and_argument_has_help() -> None:
    missing = [f"{path} {'/'.join(action.option_strings) or action.dest}"
               for path, parser in parsers(build_parser(), "infercloud")
               for action in parser._actions
               if not isinstance(action, (argparse._HelpAction, argparse._SubParsersAction))
               and not (action.help or "").strip()]
    assert missing == []


def test_every_command_has_help() -> None:
    missing = [f"{path} {choice.dest}"
               for path, parser in parsers(build_parser(), "infercloud")
               for action in parser._actions if isinstance(action, argparse._SubParsersAction)
               for choice in action._choices_actions if not (choice.help or "").strip()]
    assert missing == []
