"""The command lines' flags, parsed with one-line errors (`python -m bigbigan.<name>`).

absl and ml_collections report a bad flag with a traceback (an unknown config field raises
an AttributeError inside the parser, 55 lines) or with several lines of usage. Each entry
point hands `parser(program)` to `absl.app.run` instead, which prints one line
(`<program>: error: ...`, naming the fix) and exits with status 1 before anything runs:

- a config file or variant that does not load;
- a `--config.FIELD` (or `--config.A.B`) that the config does not have, with the closest
  field names ("did you mean");
- any other flag absl cannot parse (an unknown flag, a value of the wrong type).

It also lets a field named by a Python keyword be set as any other,
`--config.eval_every_steps_per_metric.is=50000` (the Inception Score's cadence): ml_collections
reads an override's path as a Python expression, where `.is` is a syntax error and `['is']`
is not, so such a part is handed to it in that form.
"""

import difflib
import keyword
import sys
from typing import Callable, Optional, Sequence

import ml_collections
from absl import flags

from bigbigan.config_files import load_config

CONFIG_FLAG = "--config"


def _config_spec(argv: Sequence[str]) -> Optional[str]:
  """The last `--config=SPEC` (or `--config SPEC`) of `argv`; None if there is none."""
  spec = None
  for i, arg in enumerate(argv):
    if arg.startswith(CONFIG_FLAG + "="):
      spec = arg.split("=", 1)[1]
    elif arg == CONFIG_FLAG and i + 1 < len(argv):
      spec = argv[i + 1]
  return spec


def _override_fields(argv: Sequence[str]) -> list[str]:
  """The dotted field names of every `--config.A.B[=value]` in `argv`."""
  prefix = CONFIG_FLAG + "."
  return [arg[len(prefix):].split("=", 1)[0] for arg in argv if arg.startswith(prefix)]


def missing_field(config: ml_collections.ConfigDict, field: str) -> Optional[str]:
  """Why `config` has no field `field` ("a.b.c"), with the closest names; None if it has."""
  node, path = config, []
  for name in field.split("."):
    if not isinstance(node, ml_collections.ConfigDict) or name not in node:
      where = f"config.{'.'.join(path)}" if path else "the config"
      if not isinstance(node, ml_collections.ConfigDict):
        return f"--config.{field}: {where} is a value, not a group of fields"
      prefix = "".join(f"{p}." for p in path)
      close = difflib.get_close_matches(name, list(node.keys()), n=3, cutoff=0.6)
      hint = (f"; did you mean {' or '.join(f'--config.{prefix}{c}' for c in close)}?"
              if close else f"; {where} has: {', '.join(sorted(node.keys()))}")
      return f"--config.{field}: {where} has no field {name!r}{hint}"
    node, path = node[name], path + [name]
  return None


def config_problem(argv: Sequence[str]) -> Optional[str]:
  """The first problem with `--config` and its `--config.*` overrides in `argv`, as one line
  naming the fix; None if the config loads and every overridden field exists."""
  spec = _config_spec(argv)
  if spec is None:
    return None  # absl reports a missing required flag; a tool without --config has none.
  try:
    config = load_config(spec)
  except (FileNotFoundError, ValueError) as error:
    return str(error)
  for field in _override_fields(argv):
    problem = missing_field(config, field)
    if problem:
      return problem
  return None


def subscript_keyword_fields(argv: Sequence[str]) -> list[str]:
  """`argv` with each `--config.A.B=V` whose part B is a Python keyword as `--config.A['B']=V`,
  the path ml_collections can parse; every other argument unchanged."""
  prefix = CONFIG_FLAG + "."
  rewritten = []
  for arg in argv:
    if arg.startswith(prefix):
      name, equals, value = arg[len(prefix):].partition("=")
      parts = name.split(".")
      if any(keyword.iskeyword(part) for part in parts):
        path = parts[0] + "".join(f"[{part!r}]" if keyword.iskeyword(part) else f".{part}"
                                  for part in parts[1:])
        arg = f"{prefix}{path}{equals}{value}"
    rewritten.append(arg)
  return rewritten


def _first_line(error: Exception) -> str:
  text = str(error).strip()
  return (text.splitlines() or [type(error).__name__])[0]


def parser(program: str) -> Callable[[list[str]], list[str]]:
  """A `flags_parser` for `absl.app.run` that reports bad flags in one line and exits 1."""

  def parse(argv: list[str]) -> list[str]:
    problem = config_problem(argv[1:])
    if problem is None:
      argv = subscript_keyword_fields(argv)
      sys.argv = argv  # ml_collections reads the overrides from sys.argv.
      try:
        return flags.FLAGS(argv)
      except (flags.Error, AttributeError, TypeError, ValueError) as error:
        # flags.Error: unknown flags, bad values, missing required flags; the others:
        # ml_collections' parsing of an override's value.
        problem = _first_line(error)
    print(f"{program}: error: {problem}", file=sys.stderr)
    sys.exit(1)

  return parse
