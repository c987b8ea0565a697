"""`unimiss COMMAND --help` explains every option and states its default."""
from __future__ import annotations

import argparse

import pytest

from unimiss.cli import build_parser


def commands(parser=None, prefix=("unimiss",)):
    parser = parser or build_parser()
    yield prefix, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from commands(sub, (*prefix, name))


def test_every_option_has_a_sentence_and_its_default():
    for prefix, parser in commands():
        text = parser.format_help()
        for action in parser._actions:
            if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
                continue
            assert action.help and len(action.help) > 8, (prefix, action.dest)
            if action.option_strings and not any(action.default is none for none in (None, False, argparse.SUPPRESS)):
                assert "default" in parser._get_formatter()._get_help_string(action), (prefix, action.dest)
        assert "%(default)" not in text


@pytest.mark.parametrize("command, words", [
    ("segment", ["DICOM series folder", "named after", "--format", "preview"]),
    ("evaluate", ["matched by", "name", "labels.json", "dataset.json", "Dice"]),
    ("finetune", ["--validation", "model package", "--minutes"]),
])
def test_commands_explain_names_folders_and_outputs(command, words):
    parser = dict((prefix[-1], p) for prefix, p in commands())[command]
    text = parser.format_help()
    for word in words:
        assert word in text, (command, word)
