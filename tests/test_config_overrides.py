"""Every field of every shipped config can be set on the command line, `--config.FIELD=VALUE`,
as `bigbigan.main` parses it: a field whose default is a bare None has no type that
ml_collections could parse a value into ("Type NoneType of field ... is not supported for
overriding"), so a user could not set it; nor could they set a field named by a Python
keyword (`eval_every_steps_per_metric.is`) without command_line's rewriting of its path."""

import glob
import sys

import ml_collections
import pytest
from absl import flags
from ml_collections import config_flags

from bigbigan import command_line
from bigbigan.config_files import load_config
from conftest import REPO

CONFIGS = sorted(glob.glob(str(REPO / "configs" / "*.py"))) + [
    f"{REPO}/configs/bigbigan_base.py:mnist", f"{REPO}/configs/bigbigan_base.py:tiny",
    f"{REPO}/configs/mnist_bigan.py:conditional"]
# A value to set for each type of field that a placeholder (a typed None) may have.
PLACEHOLDER_VALUES = {int: 3, float: 0.5, str: "x", bool: True}


def _leaves(config: ml_collections.ConfigDict, prefix: str = ""):
  """(dotted name, value, type) of each leaf field; type None for a bare None."""
  for name in config.keys():
    field = config._fields[name]  # pylint: disable=protected-access
    if isinstance(field, ml_collections.ConfigDict):
      yield from _leaves(field, f"{prefix}{name}.")
    elif isinstance(field, ml_collections.FieldReference):
      yield f"{prefix}{name}", field.get(), field.get_type()
    else:
      yield f"{prefix}{name}", field, None if field is None else type(field)


def _a_new_value(value, kind):
  """A value of the field's type, different from `value` where that is easy."""
  if value is None:
    return PLACEHOLDER_VALUES[kind]
  if kind is bool:
    return not value
  if kind in (int, float):
    return value + 1
  if kind is str:
    return value + "_x"
  return value  # Tuples: their own value, as text.


def _as_flag_text(value) -> str:
  return str(value).lower() if isinstance(value, bool) else str(value)


@pytest.mark.parametrize("spec", CONFIGS, ids=lambda s: s.split("/configs/")[1])
def test_every_field_can_be_set_on_the_command_line(spec, monkeypatch):
  fields = list(_leaves(load_config(spec)))
  untyped = [name for name, _, kind in fields if kind is None]
  assert not untyped, f"{spec}: bare None defaults cannot be overridden: {untyped}"
  wanted = {name: _a_new_value(value, kind) for name, value, kind in fields}
  flag_values = flags.FlagValues()
  config_flags.DEFINE_config_file("config", None, "", flag_values=flag_values)
  # As the entry points parse them (command_line.parser).
  argv = command_line.subscript_keyword_fields(
      ["prog", f"--config={spec}",
       *(f"--config.{name}={_as_flag_text(value)}" for name, value in wanted.items())])
  monkeypatch.setattr(sys, "argv", argv)  # ml_collections reads the overrides from sys.argv.
  flag_values(argv)
  config = flag_values.config
  for name, value in wanted.items():
    got = config
    for part in name.split("."):
      got = got[part]
    assert got == value, f"--config.{name}={_as_flag_text(value)} gave {got!r}"
