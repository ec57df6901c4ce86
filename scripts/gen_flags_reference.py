"""docs/flags.md from the commands' own parsers (kvmount.cli.build_parser), never by hand.

    scripts/gen-flags-reference           rewrite docs/flags.md
    scripts/gen-flags-reference --stdout  print it instead

tests/test_flags_reference.py fails when docs/flags.md is not what this writes,
so a flag added to a parser without regenerating the reference is caught.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from kvmount import cli  # noqa: E402  (after the path, so the tree's own kvmount is read)
from kvmount.base.flags import go_bool, seconds  # noqa: E402
from kvmount.flexvolume import install  # noqa: E402

OUT = REPO / "docs" / "flags.md"
HEADER = """\
# Flags reference

Every flag of every `kvmount` command, generated from the commands' own parsers
by `scripts/gen-flags-reference` (a test fails when this file is not current).
What the flags do in context: [the provider](provider.md), [the driver](driver.md),
[rotation](rotation.md), [the sync controller](sync-controller.md), the caps in
[the security model](security.md), and upstream's flags in
[switching from upstream](switching-from-upstream.md).

The daemons (`provider`, `driver`, `sync-controller`, `registrar`,
`livenessprobe`) read flags as Go's flag package does: `-flag` or `--flag`,
`=value` or a separate value, and a boolean (`BOOL`) alone means true.
Durations are Go's: `2m`, `1m30s`, `500ms`.
"""


def _parsers() -> Iterator[tuple[str, str, argparse.ArgumentParser]]:
    """(command line, what it does, parser) of every command and sub-command, in the CLI's order."""
    for name, (_, description) in cli.COMMANDS.items():
        parser = cli.build_parser(name)
        yield f"kvmount {name}", description, parser
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                helps = {choice.dest: choice.help or "" for choice in action._choices_actions}
                for sub, subparser in action.choices.items():
                    yield f"kvmount {name} {sub}", helps[sub], subparser
        if name == "flexvolume":  # an operation kubelet never calls, with its own parser
            yield "kvmount flexvolume install", "put the driver on the node for kubelet", install.parser()


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def _flag(action: argparse.Action) -> str:
    if not action.option_strings:
        return f"`{action.metavar or action.dest}`"
    names = ", ".join(action.option_strings)
    if action.nargs == 0:
        return f"`{names}`"
    if action.type is go_bool:
        return f"`{names}[=BOOL]`"
    metavar = action.metavar or (
        "{" + ",".join(map(str, action.choices)) + "}" if action.choices else action.dest.upper()
    )
    return _cell(f"`{names} {metavar}`")


def _go_duration(seconds: float) -> str:
    """Seconds as Go prints a duration: 2m0s is written 2m, as upstream's help does."""
    if seconds and seconds < 1:
        return f"{seconds * 1000:g}ms"
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [f"{hours:g}h" if hours else "", f"{minutes:g}m" if minutes else "", f"{secs:g}s" if secs else ""]
    return "".join(parts) or "0s"


def _default(action: argparse.Action) -> str:
    value = action.default
    if value is None or value == "" or value == [] or value is argparse.SUPPRESS:
        return ""
    if action.nargs == 0 and value is False:
        return ""
    if isinstance(value, bool):
        return "`true`" if value else "`false`"
    if isinstance(value, float):  # the flags' only float-valued types besides seconds read Go durations
        return f"`{value:g}`" if action.type in (float, seconds) else f"`{_go_duration(value)}`"
    return f"`{value}`"


def _help(action: argparse.Action, prog: str) -> str:
    text = action.help or ""
    if "%" in text:
        text = text % {**vars(action), "prog": prog, "default": action.default}
    if action.required and action.option_strings:
        text = f"required; {text}"
    return _cell(text)


def _section(command: str, description: str, parser: argparse.ArgumentParser) -> list[str]:
    lines = [f"## `{command}`", ""]
    if description:
        lines += [_cell(description[0].upper() + description[1:]) + ".", ""]
    titled = False
    for group in parser._action_groups:
        actions = [
            a
            for a in group._group_actions
            if not isinstance(a, argparse._HelpAction | argparse._SubParsersAction)
        ]
        if not actions:
            continue
        positional = group.title == "positional arguments"
        title = {"positional arguments": "arguments", "options": "flags"}.get(group.title or "", group.title)
        if title != "flags" or titled:  # the plain flags need a title only after other tables
            lines += [f"**{_cell(title or '')}**", ""]
        titled = True
        lines += [f"| {'argument' if positional else 'flag'} | default | meaning |", "|---|---|---|"]
        for action in actions:
            hidden = action.help == argparse.SUPPRESS
            meaning = "(not shown by `--help`)" if hidden else _help(action, parser.prog)
            lines.append(f"| {_flag(action)} | {_default(action)} | {meaning} |")
        lines.append("")
    return lines


def render() -> str:
    lines = [HEADER]
    for command, description, parser in _parsers():
        lines += _section(command, description, parser)
    return "\n".join(lines).rstrip("\n") + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--stdout", action="store_true", help="print the reference instead of writing it")
    args = parser.parse_args()
    text = render()
    if args.stdout:
        sys.stdout.write(text)
    else:
        OUT.parent.mkdir(exist_ok=True)
        OUT.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
