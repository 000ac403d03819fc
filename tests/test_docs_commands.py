"""Every command the docs show runs an entry point that exists, with flags it defines and
config fields its config has: the docs cannot drift from the code unnoticed.

What is read: the fenced shell blocks (info string bash, sh, shell, zsh, console or
shell-session) of README.md, every other top-level *.md, docs/**/*.md, launch/*.md and
benchmarks/*.md, and the whole of launch/*.sh (the commands the launch scripts build and
their usage comments). In console blocks only the lines after a `$ ` prompt (and their `\\`
continuations) are commands; untagged blocks count only for their lines that start like a
command (`python ...`, `VAR=x python ...`, `launch/...sh`), so output shown in a plain
block is not read. Blocks of other languages (python, text, ...) are skipped. Inline code
spans of the prose that start like a command (`python -m bigbigan.export --workdir=RUN`)
are read too, a span's lines as one command.

How a command is found: the text is split into words the way bash does (quotes, `\\` line
continuations, `#` comments, `$(...)`, `${...}`; `&&`, `||`, `;`, `|` and newlines end a
command). Comments are read as commands too (`# one row: python -m ...`), and so is a
quoted word holding a command (`gcloud ... --command "cd bigbigan && python -m ..."`). A
command is checked from its first `python`, `python3` (any words before it: `VAR=x`,
`env`, `taskset -c 0`, `srun ...`, are skipped) or `launch/*.sh` word: `python -m
bigbigan[.X]` and `python PATH.py` (PATH relative to the repo root) are checked, other
modules (pip, venv, pytest) are not. The docs' notation for optional arguments, `[--a=N|b]
[--c]`, reads as the words inside the brackets, and `--config=FILE[:variant]` as FILE.

What is checked, per command:
1. the module (bigbigan/X.py or bigbigan/X/__main__.py) or script exists;
2. every flag it names is defined for that entry point. The flags are read from the source
   with `ast`, no import (fast; several CLI modules cannot share one process's absl
   flags): absl's flags.DEFINE_*("name") and config_flags.DEFINE_config_*("name") anywhere
   in the entry point's file (under `if __name__ == "__main__":` or in a function it calls
   included), plus those defined on import of the project modules it imports at import
   time (bigbigan/distributed.py for bigbigan.main and bigbigan.evaluate), plus absl's own
   flags (--help, --helpfull, --flagfile, --logtostderr, -v, ...); a boolean flag also
   reads as --noNAME. A script with parser.add_argument("--name") calls is an argparse
   script: its options (per subcommand for add_subparsers) and -h/--help; names must be
   spelt out (argparse would accept an abbreviation, the docs should not use one). A
   launch script's flags are the patterns of its `case "$1" in` arms (`shift 2`: takes a
   value; an arm `--config.*=*` passes config overrides on, checked as below), and a
   lowercase positional word must be one of its non-flag patterns (a step).
   Values are not checked: N, PATH, DIR, ... placeholders are fine. The slow test below
   checks that these flag lists equal what each entry point's own --helpfull/--help prints;
3. the config: `--config=SPEC` (or `--config SPEC`) must load with
   bigbigan.config_files.load_config (path relative to the repo root) unless its path is a
   placeholder (holds `$`, `<` or `...`, or its file name is upper case like
   configs/NAME.py; a placeholder variant, configs/biggan.py:<variant>, loads the file's
   default), and every override names a field (nested fields too) of that config. Overrides are
   `--config.A.B=V` for entry points whose --config is a config_flags config file, and
   `--set A.B=V` for the scripts that take both --config and --set (they pass it on as
   --config.A.B=V: benchmarks/bigbigan_mnist.py, benchmarks/mnist_sweep.py run). Where the
   command gives no --config, the entry point's default --config (e.g.
   configs/bigbigan_base.py:mnist of bigbigan_mnist.py) is used; where it has none, or
   --config or its variant is a placeholder, a field must exist in at least one of
   configs/*.py's default configs. `--config.X` on an entry point without a config-file
   --config is an unknown flag (check 2).

A failure names the line of the offending word: `docs/x.md:40: --config.totl_steps:
configs/bigbigan_base.py:tiny has no field totl_steps (did you mean total_steps?)`. A
vacuity guard asserts that enough commands (and each kind of check) were found, and
synthetic snippets with misspelt flags and config fields prove the checker fails.
"""

import ast
import collections
import dataclasses
import difflib
import functools
import pathlib
import re
import subprocess
import sys

import pytest

from conftest import REPO
from bigbigan.config_files import load_config

# --- Where the commands are -----------------------------------------------------------------

SHELL_INFO = {"bash", "sh", "shell", "zsh", "console", "shell-session", "shellsession"}
PROMPT_INFO = {"console", "shell-session", "shellsession"}
_FENCE = re.compile(r"^( *)(`{3,}|~{3,})\s*([^\s`{]*)")
_PROMPT = re.compile(r"^(\s*)\$ ")
# A line of an untagged block that starts like a command.
_COMMAND_LINE = re.compile(
    r"^\s*(\$\s+)?(\w+=\S*\s+)*(python(3(\.\d+)?)?\s|(\./)?launch/\S+\.sh\b)")
# The docs' optional-argument notation: [--flag=N|word] [--flag] [STEP...]; bash's own
# brackets ([[ -n ... ]], [^a-z], ${a[@]}) start otherwise.
_OPTIONAL = re.compile(r"\[(?=[-A-Z])([^\[\]\n]*)\]")


def doc_sources():
  """The files whose commands are checked, as paths relative to the repo root."""
  paths = {REPO / "README.md", *REPO.glob("*.md"), *(REPO / "docs").rglob("*.md"),
           *(REPO / "launch").glob("*.md"), *(REPO / "benchmarks").glob("*.md"),
           *(REPO / "launch").glob("*.sh")}
  return sorted(str(p.relative_to(REPO)) for p in paths if p.is_file())


def shell_snippets(markdown: str) -> list[tuple[list[tuple[str, int]], str]]:
  """The shell text of `markdown`: ([(line, line number), ...], separator) per fenced block
  (separator "\\n"; non-command lines, such as output in console and untagged blocks, blanked
  and `$ ` prompts removed) and per inline code span that starts with a command (separator
  " ": a span's lines are one command)."""
  snippets, lines, prose = [], markdown.splitlines(), []
  i = 0
  while i < len(lines):
    fence = _FENCE.match(lines[i])
    if not fence:
      prose.append(lines[i])
      i += 1
      continue
    indent, marker, info = len(fence.group(1)), fence.group(2), fence.group(3).lower()
    body, i = [], i + 1
    while i < len(lines) and not re.fullmatch(
        rf" *{re.escape(marker[0])}{{{len(marker)},}}\s*", lines[i]):
      line = lines[i]
      body.append((line[indent:] if line[:indent].isspace() else line.lstrip(), i + 1))
      i += 1
    prose += [""] * (len(body) + 2)  # The block and its fences.
    i += 1
    if info in SHELL_INFO and info not in PROMPT_INFO:
      snippets.append(([(_PROMPT.sub(r"\1  ", line), n) for line, n in body], "\n"))
    elif info in PROMPT_INFO or info == "":
      is_command = _PROMPT.match if info in PROMPT_INFO else _COMMAND_LINE.match
      kept, continued = [], False
      for line, number in body:
        if is_command(line) or continued:
          kept.append((_PROMPT.sub(r"\1  ", line), number))
          continued = line.rstrip().endswith("\\")
        else:
          kept.append(("", number))
      snippets.append((kept, "\n"))
  text = "\n".join(prose)
  for span in re.finditer(r"(?<!`)`([^`]+)`(?!`)", text):
    if _COMMAND_LINE.match(span.group(1)) and not re.search(r"\n\s*\n", span.group(1)):
      first = text.count("\n", 0, span.start(1)) + 1
      snippets.append(([(line, first + k) for k, line in
                        enumerate(span.group(1).split("\n"))], " "))
  return snippets


def source_commands(text: str, source: str, markdown: bool = True) -> list["Command"]:
  """The python and launch-script commands of `text` (a markdown file, or a shell script
  with markdown=False) named `source` in messages."""
  if markdown:
    snippets = shell_snippets(text)
  else:
    snippets = [([(line, n) for n, line in enumerate(text.splitlines(), 1)], "\n")]
  commands = []
  for snippet, separator in snippets:
    chars = []
    for line, number in snippet:
      line = _OPTIONAL.sub(lambda m: " " + m.group(1).replace("|", " ") + " ", line)
      chars.extend((c, number) for c in line + separator)
    commands.extend(_commands(chars + [("\n", 0)], source))
  return sorted(commands, key=lambda c: c.line)


# --- Bash-like words ------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Word:
  """A shell word after quote removal, with each character's line (for nested commands)."""
  chars: tuple

  @property
  def text(self) -> str:
    return "".join(c for c, _ in self.chars)

  @property
  def line(self) -> int:
    return self.chars[0][1] if self.chars else 0


_OPERATORS = ("&&", "||", ";;", ";", "|", "&", "(", ")", "<", ">", "\n")


def _find(chars, i: int, target: str) -> int:
  while i < len(chars) and chars[i][0] != target:
    i += 1
  return i


def _double_quoted(chars, i: int):
  """(index after the closing quote, content) of the "..." whose content starts at i."""
  content = []
  while i < len(chars):
    c = chars[i][0]
    nxt = chars[i + 1][0] if i + 1 < len(chars) else ""
    if c == "\\" and nxt == "\n":
      i += 2
    elif c == "\\" and nxt in ('$', '`', '"', "\\"):
      content.append(chars[i + 1])
      i += 2
    elif c == '"':
      return i + 1, content
    elif c == "$" and nxt in ("(", "{"):
      j = _skip_group(chars, i + 2, nxt)
      content.extend(chars[i:j])
      i = j
    else:
      content.append(chars[i])
      i += 1
  return i, content


def _skip_group(chars, i: int, opener: str) -> int:
  """The index after the ")" or "}" that closes a $( or ${ whose content starts at i."""
  closer, depth = ")" if opener == "(" else "}", 1
  while i < len(chars):
    c = chars[i][0]
    nxt = chars[i + 1][0] if i + 1 < len(chars) else ""
    if c == "\\":
      i += 2
      continue
    if c == "'" and opener == "(":
      i = _find(chars, i + 1, "'") + 1
      continue
    if c == '"':
      i, _ = _double_quoted(chars, i + 1)
      continue
    if c == "$" and nxt in ("(", "{"):
      i = _skip_group(chars, i + 2, nxt)
      continue
    if c == opener:
      depth += 1
    elif c == closer:
      depth -= 1
      if not depth:
        return i + 1
    i += 1
  return i


def _tokens(chars):
  """Words, operators (str) and comments (a tuple of their characters) of `chars`."""
  tokens, word, i = [], None, 0  # word: None between words, else its characters so far.
  while i < len(chars):
    c = chars[i][0]
    nxt = chars[i + 1][0] if i + 1 < len(chars) else ""
    if c in " \t\r" or c in _OPERATORS or (c == "#" and word is None):
      if word is not None:
        tokens.append(Word(tuple(word)))
        word = None
      if c == "#":
        j = _find(chars, i, "\n")
        tokens.append(tuple(chars[i + 1:j]))
        i = j
      elif c in _OPERATORS:
        op = c + nxt if c + nxt in _OPERATORS else c
        tokens.append(op)
        i += len(op)
      else:
        i += 1
      continue
    word = [] if word is None else word
    if c == "\\":  # An escaped character, or a line continuation (nothing).
      word.extend(chars[i + 1:i + 2] if nxt != "\n" else [])
      i += 2
    elif c == "'":
      j = _find(chars, i + 1, "'")
      word.extend(chars[i + 1:j])
      i = j + 1
    elif c == '"':
      i, content = _double_quoted(chars, i + 1)
      word.extend(content)
    elif c == "$" and nxt in ("(", "{") or c == "`":
      j = _skip_group(chars, i + 2, nxt) if c == "$" else _find(chars, i + 1, "`") + 1
      word.extend(chars[i:j])
      i = j
    else:
      word.append(chars[i])
      i += 1
  if word is not None:
    tokens.append(Word(tuple(word)))
  return tokens


# --- Commands -------------------------------------------------------------------------------


@dataclasses.dataclass
class Command:
  """One command of the docs: `kind` "module" (python -m entry), "script" (python entry)
  or "launch" (entry a launch/*.sh), and the words after the entry point."""
  source: str
  line: int
  kind: str
  entry: str
  args: list

  @property
  def where(self) -> str:
    return f"{self.source}:{self.line}"

  @property
  def label(self) -> str:
    return {"module": "python -m ", "script": "python ", "launch": ""}[self.kind] + self.entry


# A ${VAR:+VAR=x } before python (as launch/tpu_pod.sh writes) expands to a prefix word.
_PYTHON = re.compile(r"(\$\{[^}]*\})*(\S*/)?python(3(\.\d+)?)?")
_LAUNCH = re.compile(r"(\./)?(launch/[\w.-]+\.sh)")


def _commands(chars, source: str, depth: int = 0) -> list[Command]:
  """The checked commands among the words of `chars`, of its comments and of its quoted
  words that hold commands (`depth`: how deep in such words this is)."""
  commands, simple, comments = [], [], []
  for token in _tokens(chars) + ["\n"]:
    if isinstance(token, Word):
      simple.append(token)
      if (depth < 4 and re.search(r"\s", token.text)
          and re.search(r"python|launch/", token.text)):
        commands.extend(
            _commands(list(token.chars) + [("\n", token.line)], source, depth + 1))
    elif isinstance(token, tuple):  # A comment: one with a `\` continuation goes on.
      if comments and "".join(c for c, _ in comments[-1]).rstrip().endswith("\\"):
        comments[-1] = comments[-1] + (("\n", 0),) + token
      else:
        comments.append(token)
    else:
      command = _entry_command(simple, source)
      if command:
        commands.append(command)
      simple = []
  for comment in comments:
    if re.search(r"python|launch/", "".join(c for c, _ in comment)):
      commands.extend(_commands(list(comment) + [("\n", 0)], source, depth + 1))
  return commands


def _entry_command(words, source: str):
  """The Command that `words` (one simple command) runs, or None (not a checked one)."""
  for k, word in enumerate(words):
    launch = _LAUNCH.fullmatch(word.text)
    if launch:
      return Command(source, word.line, "launch", launch.group(2), words[k + 1:])
    if not _PYTHON.fullmatch(word.text):
      continue
    i = k + 1
    while i < len(words):
      text = words[i].text
      if text == "-m" and i + 1 < len(words) or text.startswith("-m") and len(text) > 2:
        module = words[i + 1].text if text == "-m" else text[2:]
        if module != "bigbigan" and not module.startswith("bigbigan."):
          return None
        return Command(source, word.line, "module", module,
                       words[i + (2 if text == "-m" else 1):])
      if text.startswith("-c") or text == "-":
        return None
      if text in ("-X", "-W"):
        i += 2
      elif text.startswith("-"):
        i += 1
      elif text.endswith(".py") and not text.startswith("/") and "$" not in text:
        return Command(source, word.line, "script", text.removeprefix("./"), words[i + 1:])
      else:
        return None
    return None
  return None


# --- Entry points' flags --------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Flag:
  name: str
  boolean: bool = False      # absl: also --noNAME
  takes_value: bool = True   # `--name VALUE` reads the next word
  config_file: bool = False  # config_flags: --name.FIELD=VALUE overrides
  default: str = None


@dataclasses.dataclass
class EntryPoint:
  """Flags of an entry point: `parser` "absl" (keys: names without dashes), "argparse" or
  "shell" (keys: the option strings); argparse's subcommands and a shell script's words."""
  path: pathlib.Path
  parser: str
  flags: dict
  subcommands: dict = dataclasses.field(default_factory=dict)
  words: frozenset = frozenset()
  config_overrides: bool = False  # A shell script that passes --config.FIELD=VALUE on.

  def lookup(self, name: str, subcommand=None):
    """The Flag that option `name` (with its dashes, without `=value`) sets, or None."""
    if self.parser == "absl":
      bare = name.lstrip("-")
      flag = self.flags.get(bare) or absl_builtin_flags().get(bare)
      if flag is None and bare.startswith("no"):
        negated = self.flags.get(bare[2:]) or absl_builtin_flags().get(bare[2:])
        flag = negated if negated and negated.boolean else None
      return flag
    return self.flags.get(name) or self.subcommands.get(subcommand, {}).get(name)

  def names(self) -> str:
    """The entry point's own flags, for messages."""
    if self.parser == "absl":
      return ", ".join(f"--{name}" for name in sorted(self.flags)) + " and absl's own"
    names = sorted({*self.flags, *(n for sub in self.subcommands.values() for n in sub)})
    return ", ".join(names)


_MAIN_GUARD = "__name__ == '__main__'"


def _import_time_statements(body, is_main: bool):
  """The simple statements of `body` that run on import (not in functions; the
  `if __name__ == "__main__":` block only if `is_main`)."""
  for stmt in body:
    if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef)):
      continue
    if isinstance(stmt, ast.If) and ast.unparse(stmt.test).replace('"', "'") == _MAIN_GUARD:
      yield from _import_time_statements(stmt.body if is_main else stmt.orelse, is_main)
      continue
    blocks = [getattr(stmt, field) for field in ("body", "orelse", "finalbody")
              if isinstance(getattr(stmt, field, None), list)]
    blocks += [handler.body for handler in getattr(stmt, "handlers", [])]
    if blocks:
      for block in blocks:
        yield from _import_time_statements(block, is_main)
    else:
      yield stmt


def _resolve(dotted: str, search: list) -> pathlib.Path:
  """The project file that `import dotted` runs (module or package __init__), or None."""
  for directory in search:
    base = directory.joinpath(*dotted.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
      if path.is_file():
        return path
  return None


def _imported_files(stmt, path: pathlib.Path, search: list) -> list:
  """The project files that import statement `stmt` of `path` runs."""
  if isinstance(stmt, ast.Import):
    names = [alias.name for alias in stmt.names]
  elif isinstance(stmt, ast.ImportFrom):
    base = stmt.module or ""
    if stmt.level:
      package = list(path.relative_to(REPO).with_suffix("").parts)[:-stmt.level]
      base = ".".join(package + ([base] if base else []))
    names = [base] + [f"{base}.{alias.name}" for alias in stmt.names]
  else:
    return []
  files = []
  for name in names:
    parts = name.split(".")
    for k in range(1, len(parts) + 1):
      resolved = _resolve(".".join(parts[:k]), search)
      if resolved and resolved not in files:
        files.append(resolved)
  return files


_CONFIG_DEFINES = {"DEFINE_config_file", "DEFINE_config_dict", "DEFINE_config_dataclass"}
_NO_VALUE_ACTIONS = {"store_true", "store_false", "store_const", "append_const", "count",
                     "help", "version"}


def _call_name(call: ast.Call) -> str:
  func = call.func
  return func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")


def _string(node) -> str:
  return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


def _absl_flag(call: ast.Call):
  """The Flag that a flags.DEFINE_*(...) call defines, or None."""
  name = _call_name(call)
  keywords = {k.arg: k.value for k in call.keywords}
  flag_name = _string(call.args[0] if call.args else keywords.get("name"))
  if not name.startswith("DEFINE_") or flag_name is None or name == "DEFINE_flag":
    return None
  boolean = name in ("DEFINE_bool", "DEFINE_boolean")
  default = call.args[1] if len(call.args) > 1 else keywords.get("default")
  return Flag(flag_name, boolean=boolean, takes_value=not boolean,
              config_file=name in _CONFIG_DEFINES, default=_string(default))


def _absl_flags(path: pathlib.Path) -> dict:
  """The absl flags that running `path` defines before parsing: all DEFINE calls of the
  file itself, and those that the project modules it imports run on import."""
  search = [REPO] if path.is_relative_to(REPO / "bigbigan") else [path.parent, REPO]
  found, queue, seen = {}, [(path, True)], {path}
  while queue:
    current, is_main = queue.pop(0)
    tree = ast.parse(current.read_text())
    statements = list(_import_time_statements(tree.body, is_main))
    nodes = ast.walk(tree) if is_main else (n for s in statements for n in ast.walk(s))
    for node in nodes:
      flag = _absl_flag(node) if isinstance(node, ast.Call) else None
      if flag:
        found[flag.name] = flag
    for stmt in statements:
      for imported in _imported_files(stmt, current, search):
        if imported not in seen:
          seen.add(imported)
          queue.append((imported, False))
  return found


def _receiver(node):
  """The variable name whose method a call chain `x.a(...).b(...)` starts from."""
  while isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
    node = node.func.value
  return node.id if isinstance(node, ast.Name) else None


def _argparse_flags(tree) -> tuple:
  """({option: Flag} of the top-level parser, {subcommand: {option: Flag}})."""
  owner = {}  # variable -> subcommand (None: the top-level parser or one of its groups)
  for _ in range(3):  # Groups of subparsers of ... resolve in a few passes.
    for node in ast.walk(tree):
      if not (isinstance(node, ast.Assign) and isinstance(node.value, ast.Call)
              and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)):
        continue
      call, target = node.value, node.targets[0].id
      if _call_name(call) == "add_parser" and call.args and _string(call.args[0]):
        owner[target] = _string(call.args[0])
      elif _call_name(call) in ("add_argument_group", "add_mutually_exclusive_group"):
        owner[target] = owner.get(_receiver(call.func.value))
  help_flag = Flag("help", takes_value=False)
  top = {"-h": help_flag, "--help": help_flag}
  subcommands = {name: dict(top) for name in owner.values() if name}
  for node in ast.walk(tree):
    if not (isinstance(node, ast.Call) and _call_name(node) == "add_argument"
            and isinstance(node.func, ast.Attribute)):
      continue
    options = [s for s in map(_string, node.args) if s and s.startswith("-")]
    if not options:  # A positional argument.
      continue
    keywords = {k.arg: k.value for k in node.keywords}
    action = keywords.get("action")
    optional_bool = isinstance(action, ast.Attribute) and action.attr == "BooleanOptionalAction"
    flag = Flag(options[-1].lstrip("-").replace("-", "_"),
                takes_value=not (optional_bool or _string(action) in _NO_VALUE_ACTIONS),
                default=_string(keywords.get("default")))
    if optional_bool:
      options += [f"--no-{o[2:]}" for o in options if o.startswith("--")]
    subcommand = owner.get(_receiver(node.func.value))
    for option in options:
      (subcommands[subcommand] if subcommand else top)[option] = flag
  return top, subcommands


def _case_flags(text: str) -> tuple:
  """({option: Flag}, step words) of a launch script's `case "$1" in` arms."""
  block = re.search(r'case "\$1" in\n(.*?)\n\s*esac', text, re.S)
  flags, words, overrides = {}, set(), False
  for arm in re.finditer(r"^\s*([^\s()]+)\)(.*)$", block.group(1) if block else "", re.M):
    for pattern in arm.group(1).split("|"):
      if pattern == "--config.*=*":
        overrides = True
      elif pattern.endswith("=*"):  # --name=VALUE, the value in the same word.
        flags[pattern[:-2]] = Flag(pattern[:-2].lstrip("-"), takes_value=False)
      elif pattern.startswith("-"):
        flags[pattern] = Flag(pattern.lstrip("-"), takes_value="shift 2" in arm.group(2))
      elif pattern != "*":
        words.add(pattern)
  return flags, frozenset(words), overrides


def _entry_path(command: Command) -> pathlib.Path:
  """The file that runs (None if there is none)."""
  if command.kind == "module":
    base = REPO.joinpath(*command.entry.split("."))
    candidates = [base.with_suffix(".py"), base / "__main__.py"]
  else:
    candidates = [REPO / command.entry]
  return next((path for path in candidates if path.is_file()), None)


@functools.cache
def entry_point(path: pathlib.Path) -> EntryPoint:
  """The flags of the entry point at `path` (read, not imported)."""
  text = path.read_text()
  if path.suffix == ".sh":
    flags, words, overrides = _case_flags(text)
    return EntryPoint(path, "shell", flags, words=words, config_overrides=overrides)
  tree = ast.parse(text)
  if any(isinstance(n, ast.Call) and _call_name(n) == "add_argument" for n in ast.walk(tree)):
    top, subcommands = _argparse_flags(tree)
    return EntryPoint(path, "argparse", top, subcommands)
  return EntryPoint(path, "absl", _absl_flags(path))


@functools.cache
def absl_builtin_flags() -> dict:
  """absl's own flags (absl.app's, absl.logging's, --help*, --flagfile, --undefok), by name
  and short name."""
  from absl import app, flags, logging  # pylint: disable=g-import-not-at-top,unused-import
  builtins = {}
  for module, module_flags in flags.FLAGS.flags_by_module_dict().items():
    if module in ("absl.app", "absl.logging", "absl.flags"):
      for flag in module_flags:
        for key in filter(None, (flag.name, flag.short_name)):
          builtins[key] = Flag(flag.name, boolean=flag.boolean, takes_value=not flag.boolean)
  # Defined by app.run itself (app.define_help_flags), and read by FlagValues.
  for name in ("help", "helpshort", "helpfull", "helpxml", "only_check_flags"):
    builtins[name] = Flag(name, boolean=True, takes_value=False)
  builtins["?"] = builtins["help"]
  for name in ("flagfile", "undefok"):
    builtins[name] = Flag(name)
  return builtins


# --- Configs --------------------------------------------------------------------------------


@functools.cache
def config_or_error(spec: str):
  """load_config(spec) with the path relative to the repo root, or the error's message."""
  path, _, variant = spec.partition(":")
  try:
    return load_config(str(REPO / path) + (f":{variant}" if variant else ""))
  except Exception as error:  # pylint: disable=broad-except
    return f"{type(error).__name__}: {error}"


def _field_paths(node, prefix: str = "") -> set:
  """Every field of a config, nested ones as "a.b"."""
  paths = set()
  for key in (node.keys() if hasattr(node, "keys") else ()):
    paths.add(prefix + key)
    paths |= _field_paths(node[key], f"{prefix}{key}.")
  return paths


@functools.cache
def all_config_fields() -> frozenset:
  """The fields of at least one of configs/*.py's default configs."""
  fields = set()
  for path in sorted((REPO / "configs").glob("*.py")):
    config = config_or_error(str(path.relative_to(REPO)))
    if not isinstance(config, str):
      fields |= _field_paths(config)
  return frozenset(fields)


def _is_placeholder(part: str) -> bool:
  """Whether a config path or variant is a placeholder: $VAR, <name>, ..., NAME."""
  return bool(re.search(r"[$<]|\.\.\.", part)
              or re.fullmatch(r"[A-Z_]+", pathlib.Path(part).stem))


def _missing(fields, field: str) -> str:
  """None if dotted `field` is in `fields` (a config or a set of paths), else the first
  missing prefix with a suggestion."""
  paths = fields if isinstance(fields, (set, frozenset)) else _field_paths(fields)
  field = re.sub(r"\[[^\]]*\]", "", field)
  if field in paths:
    return None
  parts = field.split(".")
  k = next(k for k in range(1, len(parts) + 1) if ".".join(parts[:k]) not in paths)
  missing = ".".join(parts[:k])
  close = difflib.get_close_matches(missing, [p for p in paths if p.count(".") == k - 1], 1)
  return missing + (f" (did you mean {close[0]}?)" if close else "")


# --- The check ------------------------------------------------------------------------------


def check_command(command: Command) -> tuple:
  """(problems, Counter of the checks run) of one doc command; problems read like
  "README.md:12: python -m bigbigan.evaluate: no flag --stpe (flags: ...)"."""
  checks, problems = collections.Counter(), []

  def say(message, line=None):
    problems.append(f"{command.source}:{line or command.line}: {message}")

  path = _entry_path(command)
  checks["entry point"] += 1
  if path is None:
    what = "module" if command.kind == "module" else "file"
    say(f"{command.label}: no such {what}")
    return problems, checks
  entry = entry_point(path)
  args, lines = [w.text for w in command.args], [w.line for w in command.args]
  subcommand, spec, spec_line, overrides, sets, i = None, None, None, [], [], 0
  config_file = entry.flags.get("config") if entry.parser == "absl" else None
  config_file = config_file if config_file and config_file.config_file else None
  config_file = config_file or entry.config_overrides
  while i < len(args):
    arg, line = args[i], lines[i]
    i += 1
    if arg == "--":
      break
    if not arg.startswith("-") or re.fullmatch(r"-[\d.]+", arg) or arg == "-":
      if entry.subcommands and subcommand is None:
        subcommand = arg
        checks["subcommand"] += 1
        if arg not in entry.subcommands:
          say(f"{command.label}: no subcommand {arg!r} (subcommands: "
              f"{', '.join(sorted(entry.subcommands))})", line)
      elif entry.parser == "shell" and re.fullmatch(r"[a-z][a-z-]*", arg):
        checks["word"] += 1
        if arg not in entry.words:
          say(f"{command.label}: unknown argument {arg!r} (steps: "
              f"{', '.join(sorted(entry.words)) or 'none'})", line)
      continue
    name, has_value, value = arg.partition("=")
    if config_file and name.lstrip("-").startswith("config."):
      overrides.append((name, name.lstrip("-")[len("config."):], line))
      continue
    checks["flag"] += 1
    flag = entry.lookup(name, subcommand)
    if flag is None:
      dashes = "--" if entry.parser == "absl" else ""
      known = [*entry.flags, *entry.subcommands.get(subcommand, {})]
      close = difflib.get_close_matches(name.lstrip("-") if dashes else name, known, 1)
      hint = f" (did you mean {dashes}{close[0]}?)" if close else ""
      say(f"{command.label}: no flag {name}{hint} (flags: {entry.names()})", line)
      continue
    if flag.takes_value and not has_value and i < len(args):
      value, i = args[i], i + 1
    if flag.name == "config" and value:
      spec, spec_line = value, line
    if flag.name == "set" and "=" in value:
      field = value.partition("=")[0]
      sets.append((f"{name} {field}=", field, line))
  config_flag = entry.lookup("--config", subcommand)
  if config_flag is None:
    return problems, checks
  overrides += sets
  spec = spec or (config_flag.default if entry.parser != "shell" else None)
  fields, label = all_config_fields(), "no configs/*.py"
  path, _, variant = re.sub(r"\[[^\]]*\]", "", spec or "").partition(":")
  if path and not _is_placeholder(path):
    checks["config file"] += 1
    known_variant = variant and not _is_placeholder(variant)
    loaded = config_or_error(f"{path}:{variant}" if known_variant else path)
    if isinstance(loaded, str):
      say(f"--config={spec}: {loaded}", spec_line)
      return problems, checks
    if known_variant or not variant:
      fields, label = loaded, spec
  for written, field, line in overrides:
    if _is_placeholder(field):  # --config.FIELD=VALUE in a usage line.
      continue
    checks["config field"] += 1
    missing = _missing(fields, field)
    if missing:
      say(f"{written}: {label} has no field {missing}", line)
  return problems, checks


def check_text(text: str, source: str, markdown: bool = True) -> tuple:
  """(problems, Counter of checks, commands) of every command in `text`."""
  problems, checks = [], collections.Counter()
  commands = source_commands(text, source, markdown)
  for command in commands:
    found, ran = check_command(command)
    problems += found
    checks += ran
  return problems, checks, commands


def _read_commands():
  commands = []
  for source in doc_sources():
    commands += source_commands((REPO / source).read_text(), source,
                                markdown=source.endswith(".md"))
  return commands


COMMANDS = _read_commands()


def _ids(commands):
  seen = collections.Counter()
  ids = []
  for command in commands:
    seen[command.where] += 1
    ids.append(command.where + (f"#{seen[command.where]}" if seen[command.where] > 1 else ""))
  return ids


# --- Tests ----------------------------------------------------------------------------------


@pytest.mark.parametrize("command", COMMANDS, ids=_ids(COMMANDS))
def test_doc_command_runs_an_entry_point_with_its_flags_and_config_fields(command):
  """The command's module or script exists, every flag it names is one of the entry
  point's, its --config loads and every --config.FIELD/--set FIELD= is a field of it."""
  problems, _ = check_command(command)
  assert not problems, "\n".join(problems)


def test_docs_have_commands_and_every_check_runs():
  """Not vacuous: the docs hold many python commands (some in README.md), and flags,
  config files, config fields, absl, argparse and launch scripts are all checked."""
  python = [c for c in COMMANDS if c.kind != "launch"]
  assert len(python) >= 10, [c.where for c in COMMANDS]
  assert any(c.source == "README.md" for c in python), "no python command in README.md"
  assert any(c.kind == "launch" for c in COMMANDS), "no launch script command"
  checks = collections.Counter()
  for command in COMMANDS:
    checks += check_command(command)[1]
  assert checks["entry point"] == len(COMMANDS)
  for kind in ("flag", "config file", "config field"):
    assert checks[kind] >= 1, (kind, checks)
  parsers = {entry_point(_entry_path(c)).parser for c in COMMANDS if _entry_path(c)}
  assert {"absl", "argparse", "shell"} <= parsers, parsers


SYNTHETIC = """\
Prose: `python -m bigbigan.main --nosuch` (an inline command), python -m bigbigan.main
--not_code (not code: not read).

```bash
$ TFDS_DATA_DIR=/data taskset -c 0 python -m bigbigan.evaluate --workdir=DIR \\
    --metrics=knn [--stpe=N|best]   # a comment: python -m bigbigan.export --bundle=X
python -m bigbigan.main --config=configs/mixture.py:ali --workdir=W \\
    --config.totl_steps=5 --config.generator.hidden_sizes='(8, 8)'
python benchmarks/no_such_script.py --x
```

```console
$ python benchmarks/bigbigan_mnist.py --set batch_sise=4
output: python -m bigbigan.main --also_not_read
```

```
FAIL  python -m bigbigan.main --not_a_command_line
python -m bigbigan.benchmark --config=configs/quickstart_missing.py --steps=2
```

```python
import subprocess  # python -m bigbigan.main --not_shell
```
"""


def test_checker_reports_misspelt_flags_fields_and_missing_entry_points():
  """A snippet with misspelt flags (in a block, in a comment's command and in an inline
  command), a misspelt config field and --set field, a missing script and a missing config
  file gets all seven reported at their lines; prose outside code, output lines and python
  blocks are not read."""
  problems, checks, commands = check_text(SYNTHETIC, "synthetic.md")
  assert [(c.line, c.label) for c in commands] == [
      (1, "python -m bigbigan.main"), (5, "python -m bigbigan.evaluate"),
      (6, "python -m bigbigan.export"), (7, "python -m bigbigan.main"),
      (9, "python benchmarks/no_such_script.py"), (13, "python benchmarks/bigbigan_mnist.py"),
      (19, "python -m bigbigan.benchmark")]
  assert len(problems) == 7, "\n".join(problems)
  expected = [
      "synthetic.md:1: python -m bigbigan.main: no flag --nosuch",
      "synthetic.md:6: python -m bigbigan.evaluate: no flag --stpe (did you mean --step?)",
      "synthetic.md:6: python -m bigbigan.export: no flag --bundle",
      "synthetic.md:8: --config.totl_steps: configs/mixture.py:ali has no field totl_steps "
      "(did you mean total_steps?)",
      "synthetic.md:9: python benchmarks/no_such_script.py: no such file",
      "synthetic.md:13: --set batch_sise=: configs/bigbigan_base.py:mnist has no field "
      "batch_sise (did you mean batch_size?)",
      "synthetic.md:19: --config=configs/quickstart_missing.py: FileNotFoundError"]
  for problem, start in zip(problems, expected):
    assert problem.startswith(start), (problem, start)
  assert checks["config field"] == 3  # totl_steps, generator.hidden_sizes, batch_sise


def test_checker_accepts_the_forms_the_entry_points_accept():
  """absl's --noBOOL, -v, --helpfull and `--flag value`, nested config fields, argparse
  subcommands and multi-value options, env-var prefixes, chains, and commands in quoted
  strings and launch-script usage pass; a misspelt launch-script flag, step and config field
  (passed on to bigbigan.main) do not."""
  text = """\
```sh
python3 -m venv .venv && . .venv/bin/activate; python -m bigbigan.main --nodistributed \\
    -v=1 --helpfull --config configs/bigbigan_base.py:tiny --workdir /tmp/w \\
    --config.encoder.resolution=32 --config.generator.ch=8 && echo done
JAX_COMPILATION_CACHE_DIR=$(mktemp -d) env A=1 python benchmarks/mnist_sweep.py run \\
    --data x.npz --eval-every 5 --set discriminator.r1_weight=0.3
python benchmarks/d_steps_loop.py --config=configs/bigbigan_base.py:tiny --d_steps 1 2
ssh host --command "cd x && python -m bigbigan.export --workdir=W \\
    --out=\\$HOME/b [--with_discriminator]"
launch/tpu_pod.sh --name n --zone z --config configs/revnet4x.py --workdir W run delete \
    --config.remat=blocks --config.FIELD=VALUE
launch/slurm_gpu.sh --nodse 2 --config configs/resnet50.py --workdir W --config.remt=blocks
launch/tpu_pod.sh --name n --zone z crate
```
"""
  problems, checks, commands = check_text(text, "forms.md")
  assert [c.line for c in commands] == [2, 5, 7, 8, 10, 11, 12]
  assert problems == [
      "forms.md:11: launch/slurm_gpu.sh: no flag --nodse (did you mean --nodes?) (flags: "
      "--allow_cpu, --compilation_cache, --config, --dry-run, --gpus-per-node, --help, "
      "--nodes, --partition, "
      "--tfds_data_dir, --time, --venv, --workdir, -h)",
      "forms.md:11: --config.remt: configs/resnet50.py has no field remt (did you mean "
      "remat?)",
      "forms.md:12: launch/tpu_pod.sh: unknown argument 'crate' (steps: create, delete, "
      "install, run)"]
  assert checks["config field"] == 5 and checks["config file"] == 5


def _help_text(argv) -> str:
  """The output of `python ARGV` (an entry point's --helpfull or --help)."""
  out = subprocess.run([sys.executable, *argv], cwd=REPO, capture_output=True, text=True,
                       check=False, timeout=300)
  return out.stdout + out.stderr


@pytest.mark.slow
def test_static_flags_are_the_ones_each_entry_point_lists():
  """The flags read from the source equal those that each documented entry point's own
  --helpfull (absl: the project's modules' sections) or --help (argparse, per subcommand)
  lists, so the fast checks' flag lists are exact."""
  paths = {}
  for command in COMMANDS:
    path = _entry_path(command)
    if path and command.kind != "launch":
      paths[path] = ["-m", command.entry] if command.kind == "module" else [command.entry]
  for path, argv in sorted(paths.items()):
    entry = entry_point(path)
    if entry.parser == "absl":
      text = _help_text([*argv, "--helpfull"])
      sections = re.split(r"^(\S.*):$", text, flags=re.M)
      listed, absl_own = set(), set()
      for header, body in zip(sections[1::2], sections[2::2]):
        names = set(re.findall(r"^  (?:-(\S+),)?--(?:\[no\])?([\w.]+):", body, re.M))
        if header.startswith(("bigbigan.", str(REPO), "benchmarks/")):
          listed |= {name for _, name in names}
        elif header.startswith("absl."):
          absl_own |= {name for pair in names for name in pair if name}
      assert listed == set(entry.flags), (argv, text[-2000:])
      assert set(absl_builtin_flags()) <= absl_own, (argv, text[-2000:])
    else:
      for subcommand in [None, *entry.subcommands]:
        text = _help_text([*argv, *([subcommand] if subcommand else []), "--help"])
        listed = set()
        for line in re.findall(r"^  (-.*)$", text, re.M):
          listed |= set(re.findall(r"(?:^|, )(-{1,2}[\w-]+)", line.split("  ")[0]))
        static = entry.subcommands[subcommand] if subcommand else entry.flags
        assert listed == set(static), (argv, subcommand, text[-2000:])
