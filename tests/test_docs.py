"""The README and docs/*.md against the code: every relative link leads to a file and a
heading that exist, every setting is documented with its default, and every command
and option the docs give exists."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "bench" / "README.md"]
LINK = re.compile(r"\]\(([^)\s]+)\)")


def _prose(text: str) -> list[tuple[int, str]]:
    """The lines outside fenced code blocks, numbered from 1."""
    lines, fenced = [], False
    for number, line in enumerate(text.splitlines(), 1):
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced:
            lines.append((number, line))
    return lines


def anchors(path: Path) -> set[str]:
    """The anchors GitHub gives the headings of a Markdown file: lower case, spaces
    as '-', punctuation but '-' and '_' dropped; a repeated heading gets '-1', '-2'."""
    found: set[str] = set()
    seen: dict[str, int] = {}
    for _, line in _prose(path.read_text(encoding="utf-8")):
        heading = re.match(r"#{1,6}\s+(.*)", line)
        if heading is None:
            continue
        text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading.group(1).strip())
        slug = re.sub(r"[^\w\- ]", "", text.lower()).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        found.add(slug if count == 0 else f"{slug}-{count}")
    return found


def broken_links(doc: Path, root: Path = ROOT) -> list[str]:
    """Each relative link of ``doc`` whose file or heading does not exist, as
    'file:line: target', the file named relative to ``root``."""
    broken = []
    for number, line in _prose(doc.read_text(encoding="utf-8")):
        for target in LINK.findall(line):
            if re.match(r"[a-z]+:", target):  # http:, https:, mailto:
                continue
            path, _, anchor = target.partition("#")
            linked = (doc.parent / path) if path else doc
            where = f"{doc.relative_to(root)}:{number}: {target}"
            if not linked.exists():
                broken.append(f"{where} (no such file)")
            elif anchor and linked.suffix == ".md" and anchor not in anchors(linked):
                broken.append(f"{where} (no such heading)")
    return broken


@pytest.mark.parametrize("doc", DOCS, ids=lambda doc: str(doc.relative_to(ROOT)))
def test_every_relative_link_leads_to_a_file_and_heading_that_exist(doc: Path) -> None:
    assert doc.exists()
    assert not broken_links(doc)


def test_a_link_to_a_missing_file_or_heading_is_found(tmp_path: Path) -> None:
    """The check itself: a heading's anchor is found as GitHub makes it, and a
    link to a heading or a file that is not there is reported with its line."""
    (tmp_path / "other.md").write_text("# Other\n\n## Promote and roll back\n", encoding="utf-8")
    doc = tmp_path / "doc.md"
    doc.write_text(
        "# Doc\n\n## Keys and roles\n\n"
        "[ok](#keys-and-roles), [ok](other.md#promote-and-roll-back), [ok](https://x.org/#y)\n"
        "```\n[in a code block](nowhere.md)\n```\n"
        "[gone](other.md#promote-and-rollback) and [gone](missing.md)\n",
        encoding="utf-8",
    )
    assert broken_links(doc, root=tmp_path) == [
        "doc.md:9: other.md#promote-and-rollback (no such heading)",
        "doc.md:9: missing.md (no such file)",
    ]


# The settings, as docs/operations.md ("Configuration") and the README list them.

SETTING_ROW = re.compile(r"\| (`(?:NEXTBEST|PROMETHEUS)_[^|]*?) \| ([^|]*?) \|")


def setting_rows(text: str) -> dict[str, tuple[str, str]]:
    """Each row of a settings table, by its variable: (its default cell, its whole
    line). A row naming several variables (`A` / `B`) is listed under each."""
    rows: dict[str, tuple[str, str]] = {}
    for line in text.splitlines():
        match = SETTING_ROW.match(line)
        if match is None:
            continue
        names = re.findall(r"`([A-Z_]+)`", match.group(1))
        defaults = match.group(2).split(" / ")
        for index, name in enumerate(names):
            default = defaults[index] if len(defaults) == len(names) else match.group(2)
            rows[name] = (default.strip(), line)
    return rows


def documented_default_mismatch(name: str, default: object, cell: str) -> str | None:
    """What is wrong with the default cell of setting ``name``, or None when it says
    ``default`` (numbers as numbers, true/false as words, a text or path quoted);
    a setting without a default (None) is described in words, not checked."""
    if default is None:
        return None
    if isinstance(default, bool):
        said = cell.split()[0] if cell else ""
        return None if said == str(default).lower() else f"{name}: {cell!r} is not {default}"
    if isinstance(default, int | float):
        try:
            return None if float(cell) == float(default) else f"{name}: {cell} != {default}"
        except ValueError:
            return f"{name}: {cell!r} is not the number {default}"
    return None if f"`{default}`" in cell else f"{name}: {cell!r} does not say `{default}`"


def test_operations_lists_every_setting_with_its_default() -> None:
    """Every field of Settings is a row of docs/operations.md's Configuration table,
    and its default there is the code's; so are the variables read outside Settings
    that an operator sets."""
    from nextbest.settings import ENV_PREFIX, Settings

    text = (ROOT / "docs" / "operations.md").read_text(encoding="utf-8")
    rows = setting_rows(text.split("## Configuration", 1)[1])
    wrong = []
    for field, info in Settings.model_fields.items():
        name = ENV_PREFIX + field.upper()
        if name not in rows:
            wrong.append(f"{name}: no row")
            continue
        said = documented_default_mismatch(name, info.default, rows[name][0])
        if said is not None:
            wrong.append(said)
    for name in ("NEXTBEST_API_KEYS", "NEXTBEST_DASK_SCHEDULER"):
        if name not in rows:
            wrong.append(f"{name}: no row")
    assert not wrong


def test_a_setting_left_out_or_with_another_default_is_found() -> None:
    rows = setting_rows(
        "| variable | default | meaning |\n|---|---|---|\n"
        "| `NEXTBEST_EPSILON` / `NEXTBEST_TEMPERATURE` | 0.05 / 0.1 | rates |\n"
        "| `NEXTBEST_GC_FREEZE` | false (`nextbest serve`: true) | gc |\n"
        "| `NEXTBEST_MODELS_DIR` | `models` | where |\n"
    )
    assert set(rows) == {
        "NEXTBEST_EPSILON",
        "NEXTBEST_TEMPERATURE",
        "NEXTBEST_GC_FREEZE",
        "NEXTBEST_MODELS_DIR",
    }
    assert documented_default_mismatch("E", 0.05, rows["NEXTBEST_EPSILON"][0]) is None
    assert (
        documented_default_mismatch("T", 0.01, rows["NEXTBEST_TEMPERATURE"][0]) == "T: 0.1 != 0.01"
    )
    assert documented_default_mismatch("G", False, rows["NEXTBEST_GC_FREEZE"][0]) is None
    assert documented_default_mismatch("G", True, rows["NEXTBEST_GC_FREEZE"][0]) is not None
    assert documented_default_mismatch("M", Path("models"), rows["NEXTBEST_MODELS_DIR"][0]) is None
    assert documented_default_mismatch("M", Path("store"), rows["NEXTBEST_MODELS_DIR"][0])


def test_the_readme_says_of_each_setting_what_operations_says() -> None:
    """The README lists the settings met first, operations.md every one in full: a
    row the README repeats has the same variables and default, and its meaning is
    the start of operations.md's (operations.md said `evaluate` and `promote` did not
    refuse a log file that does not exist, after they did and the README said so)."""
    readme = setting_rows((ROOT / "README.md").read_text(encoding="utf-8"))
    operations = setting_rows((ROOT / "docs" / "operations.md").read_text(encoding="utf-8"))
    assert readme
    differ = []
    for name, (default, line) in readme.items():
        if name not in operations:
            differ.append(f"{name}: not in operations.md")
            continue
        full_default, full_line = operations[name]
        variables, _, meaning = line.strip(" |").split(" | ", 2)
        full_variables, _, full_meaning = full_line.strip(" |").split(" | ", 2)
        if (variables, default) != (full_variables, full_default):
            differ.append(f"{name}: {variables} {default} != {full_variables} {full_default}")
        elif not full_meaning.startswith(meaning):
            differ.append(f"{name}: {meaning[:60]}... is not how operations.md's begins")
    assert not differ


def test_every_setting_says_what_it_is_when_refused() -> None:
    """A setting out of its bounds is refused with its description
    (`the setting: ...`); NEXTBEST_PORT=0 and NEXTBEST_WORKERS=0 said nothing of what
    the variable is."""
    from nextbest.settings import Settings

    assert [name for name, info in Settings.model_fields.items() if not info.description] == []


def test_every_variable_nextbest_reads_is_documented() -> None:
    """Each NEXTBEST_* variable read outside Settings is named in the README or a
    doc (the test suite's real-data files were named nowhere); but the one a
    server's supervisor sets for its own workers."""
    from nextbest.settings import OTHER_ENVIRONMENT

    said = " ".join(doc.read_text(encoding="utf-8") for doc in DOCS)
    internal = {"NEXTBEST_SUPERVISOR_PID"}
    assert sorted(name for name in OTHER_ENVIRONMENT - internal if name not in said) == []


# The commands and their options, as `nextbest --help` has them.


def command_options() -> dict[str, set[str]]:
    """Every command of `nextbest` ("keys add" for a group's), with its options'
    names, `--help` included."""
    import typer.main

    from nextbest.cli import app

    found: dict[str, set[str]] = {}

    def walk(command: Any, path: list[str]) -> None:
        if hasattr(command, "commands"):
            for name, sub in command.commands.items():
                walk(sub, [*path, name])
            return
        names = {"--help"}
        for param in command.params:
            if getattr(param, "param_type_name", "") == "option":
                names.update(param.opts + param.secondary_opts)
        found[" ".join(path)] = names

    walk(typer.main.get_command(app), [])
    return found


COMMAND_USE = re.compile(
    r"nextbest ((?:keys|db|rules) [a-z]+|[a-z][a-z-]+)((?: +(?:--?[a-z][a-z-]*|[^\s`|;)]+))*)"
)


def unknown_options(text: str, commands: dict[str, set[str]]) -> list[str]:
    """Each `nextbest COMMAND ... --option` of ``text`` whose command has no such
    option, as 'line: command --option'."""
    wrong = []
    for number, line in enumerate(text.splitlines(), 1):
        for use in COMMAND_USE.finditer(line):
            command = use.group(1)
            if command not in commands:
                continue
            for option in re.findall(r"(?<![\w-])(--[a-z][a-z-]*)", use.group(2)):
                if option not in commands[command]:
                    wrong.append(f"{number}: {command} {option}")
    return wrong


@pytest.mark.parametrize("doc", DOCS, ids=lambda doc: str(doc.relative_to(ROOT)))
def test_every_option_the_docs_give_a_command_is_one_it_has(doc: Path) -> None:
    assert not unknown_options(doc.read_text(encoding="utf-8"), command_options())


def test_an_option_a_command_does_not_have_is_found() -> None:
    commands = {"train": {"--data", "--help"}, "keys add": {"--role", "--help"}}
    text = (
        "run `nextbest train --data x --bogus`\n"
        "then nextbest keys add N --role rep --nope; nextbest other --any\n"
    )
    assert unknown_options(text, commands) == ["1: train --bogus", "2: keys add --nope"]


def test_the_readme_command_list_names_every_command_and_option() -> None:
    """README's "Command line" block names every command with each of its options
    (`picks --date`, the other name of `--as-of`, was left out)."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    block = readme.split("## Command line", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    lines: dict[str, str] = {}
    for line in block.splitlines():
        said = re.match(r"nextbest ((?:keys|db|rules) [a-z]+|[a-z-]+)(?: \| ([a-z]+))?", line)
        if said is None:
            continue
        first = said.group(1)
        for command in [first] + ([f"{first.split()[0]} {said.group(2)}"] if said.group(2) else []):
            lines[command] = lines.get(command, "") + " " + line
    missing = []
    for command, options in command_options().items():
        if command not in lines:
            missing.append(command)
            continue
        missing += [
            f"{command} {option}"
            for option in sorted(options - {"--help"})
            if not re.search(re.escape(option) + r"(?![\w-])", lines[command])
        ]
    assert not missing


# Names of the code the docs point at: `NAME` in `path.py`.

NAMED_IN_FILE = re.compile(r"`([A-Za-z_]\w{3,})` (?:in|of) `([\w/]+\.py)`")


def missing_code_names(text: str, root: Path = ROOT) -> list[str]:
    """Each `NAME` in `path.py` of ``text`` (the path under src/nextbest or the
    repository) whose file does not define NAME (a function, class or assignment)."""
    missing = []
    for name, path in sorted(set(NAMED_IN_FILE.findall(text))):
        file = next(
            (f for f in (root / "src" / "nextbest" / path, root / path) if f.is_file()), None
        )
        defined = file is not None and re.search(
            rf"^\s*(?:async def |def |class ){name}\b|^\s*{name}\s*(?::[^=\n]*)?=",
            file.read_text(encoding="utf-8"),
            re.MULTILINE,
        )
        if not defined:
            missing.append(f"{name} in {path}")
    return missing


@pytest.mark.parametrize("doc", DOCS, ids=lambda doc: str(doc.relative_to(ROOT)))
def test_every_name_the_docs_point_at_in_the_code_is_there(doc: Path) -> None:
    assert not missing_code_names(doc.read_text(encoding="utf-8"))


def test_a_name_gone_from_its_file_is_found(tmp_path: Path) -> None:
    (tmp_path / "src" / "nextbest" / "storage").mkdir(parents=True)
    (tmp_path / "src" / "nextbest" / "storage" / "repository.py").write_text(
        "OUTCOME_WINDOW = 7\nLIMIT: int = 3\n\ndef reason_problem(x):\n    pass\n", encoding="utf-8"
    )
    text = (
        "`OUTCOME_WINDOW` in `storage/repository.py`, `LIMIT` in `storage/repository.py`, "
        "`reason_problem` in `storage/repository.py`, `serving_history` in "
        "`storage/repository.py` and `anything` in `storage/gone.py`"
    )
    assert missing_code_names(text, root=tmp_path) == [
        "anything in storage/gone.py",
        "serving_history in storage/repository.py",
    ]


def test_every_test_the_docs_cite_exists() -> None:
    """A figure or claim the docs back with a test names it (`test_...`): that test
    is one of the suite's (a renamed test leaves the claim without its evidence)."""
    cited = set()
    for doc in DOCS:
        cited |= set(re.findall(r"`(test_\w+)`", doc.read_text(encoding="utf-8")))
    suite = " ".join(
        path.read_text(encoding="utf-8")
        for folder in (ROOT / "tests", ROOT / "bench")
        for path in folder.rglob("*.py")
    )
    assert cited
    assert sorted(name for name in cited if not re.search(rf"def {name}\(", suite)) == []


# The answers the docs show, against the API's response models.


def shown_answers(text: str) -> list[tuple[int, dict[str, Any]]]:
    """The JSON objects a doc shows as answers, with their line: each ```json
    block (a fragment of fields, `"left_out": [...]`, read as an object) and each
    object after `# ` on a line (`curl ...     # {"status": ...}`)."""
    import json

    found: list[tuple[int, dict[str, Any]]] = []
    block: list[str] | None = None
    start = 0
    for number, line in enumerate(text.splitlines(), 1):
        if block is None and line.strip() == "```json":
            block, start = [], number
        elif block is not None and line.startswith("```"):
            body = "\n".join(block).strip()
            found.append((start, json.loads(body if body.startswith("{") else "{" + body + "}")))
            block = None
        elif block is not None:
            block.append(line)
        elif (shown := re.search(r"# (\{.*\})\s*$", line)) is not None:
            found.append((number, json.loads(shown.group(1))))
    return found


def answer_mismatches(text: str) -> list[str]:
    """Each answer shown whose fields are not its response model's, as 'line: what'.
    An answer is known by its fields: a recommendation (`items`, `uplift_source`),
    a reload (`rules_changed`), `/readyz` (`status`) or a rep plan's `left_out`;
    health and `left_out` entries show some of their optional fields only."""
    from nextbest.api import schemas

    def fields(model: Any) -> set[str]:
        return set(model.model_fields)

    wrong = []
    for line, shown in shown_answers(text):
        keys = set(shown)
        if {"items", "uplift_source", "recommendation_id"} <= keys:
            if keys != fields(schemas.RecommendationPublic):
                wrong.append(f"{line}: recommendation {sorted(keys)}")
            for item in shown["items"]:
                if set(item) != fields(schemas.RecommendationItemPublic):
                    wrong.append(f"{line}: item {sorted(item)}")
        elif "rules_changed" in keys and keys != fields(schemas.ReloadPublic):
            wrong.append(f"{line}: reload {sorted(keys)}")
        elif "status" in keys and not keys <= fields(schemas.HealthPublic):
            wrong.append(f"{line}: readyz {sorted(keys - fields(schemas.HealthPublic))}")
        for entry in shown.get("left_out", []):
            if not set(entry) <= fields(schemas.LeftOutPublic):
                wrong.append(
                    f"{line}: left_out {sorted(set(entry) - fields(schemas.LeftOutPublic))}"
                )
    return wrong


@pytest.mark.parametrize("doc", DOCS, ids=lambda doc: str(doc.relative_to(ROOT)))
def test_every_answer_the_docs_show_has_the_fields_the_api_answers(doc: Path) -> None:
    assert not answer_mismatches(doc.read_text(encoding="utf-8"))


def test_an_answer_shown_with_a_field_gone_or_missing_is_found() -> None:
    item = {
        "rank": 1, "action_id": "A1", "channel": "email", "content_id": "C1", "topic": "t",
        "content_type": "promotional", "score": 0.1, "expected_uplift": 0.2, "p_engage": 0.3,
        "cost": 0.1, "propensity": 0.9, "explored": False, "reasons": [],
    }  # fmt: skip
    answer = {
        "recommendation_id": "r", "hcp_id": "H1", "created_at": "t", "model_version": "1",
        "uplift_source": "uplift_model", "holdout": False, "items": [item], "excluded": None,
    }  # fmt: skip
    import json

    def doc(shown: dict[str, Any]) -> str:
        return "text\n\n```json\n" + json.dumps(shown, indent=2) + "\n```\n"

    assert answer_mismatches(doc(answer)) == []
    assert answer_mismatches(doc({**answer, "score": 1})) != []
    assert answer_mismatches(doc({**answer, "items": [{**item, "why": "x"}]})) == [
        f"3: item {sorted([*item, 'why'])}"
    ]
    assert answer_mismatches('curl -s /readyz   # {"status": "ready", "model": "2"}') == [
        "1: readyz ['model']"
    ]
    assert answer_mismatches('```json\n"left_out": [{"hcp_id": "H1", "reason": "x"}]\n```') == [
        "1: left_out ['reason']"
    ]


# What the docs quote a command saying of an invalid setting.

SETTING_REFUSED = re.compile(
    r"`(?:error: invalid setting: )?(NEXTBEST_[A-Z_]+)='([^']*)': ([^`]+)`"
)


def test_every_refusal_of_a_setting_the_docs_quote_is_what_a_command_says(
    env_settings: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`NEXTBEST_EXPLORATION='soft': Input should be 'epsilon_greedy' or 'softmax'`
    was quoted after a near word got its own message (`one of ...`, with the word
    meant)."""
    from typer.testing import CliRunner

    from nextbest.cli import app
    from nextbest.settings import get_settings

    quoted = set()
    for doc in DOCS:
        quoted |= set(SETTING_REFUSED.findall(" ".join(doc.read_text(encoding="utf-8").split())))
    assert quoted
    wrong = []
    for name, value, said in sorted(quoted):
        monkeypatch.setenv(name, value)
        get_settings.cache_clear()
        result = CliRunner().invoke(app, ["db", "status"])
        monkeypatch.delenv(name)
        output = " ".join(result.output.split())
        if result.exit_code != 2 or f"{name}={value!r}: {said}" not in output:
            wrong.append(f"{name}={value!r}: {said} -- {output}")
    get_settings.cache_clear()
    assert not wrong


def test_the_readme_leads_to_every_doc() -> None:
    """The README's Documentation table is the way in: each docs/*.md is a row of it."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    table = readme.split("## Documentation", 1)[1].split("\n## ", 1)[0]
    linked = set(re.findall(r"^\| \[docs/([\w.]+\.md)\]\(docs/\1\)", table, re.MULTILINE))
    assert linked == {doc.name for doc in (ROOT / "docs").glob("*.md")}


def test_the_readme_rules_example_says_what_the_shipped_rules_file_does() -> None:
    """The README's rules example is the shipped training/rules.yaml shortened: each
    value it gives is the file's (a list, some of the file's), so a newcomer reading
    it knows the caps served."""
    import yaml

    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("### Rules before ranking", 1)[1]
    example = yaml.safe_load(section.split("```yaml", 1)[1].split("```", 1)[0])
    shipped = yaml.safe_load((ROOT / "training" / "rules.yaml").read_text(encoding="utf-8"))

    def differ(shown: Any, real: Any, where: str) -> list[str]:
        if isinstance(shown, dict) and isinstance(real, dict):
            return [
                problem
                for key, value in shown.items()
                for problem in (
                    differ(value, real[key], f"{where}.{key}")
                    if key in real
                    else [f"{where}.{key}: not in the file"]
                )
            ]
        if isinstance(shown, list) and isinstance(real, list):
            return [] if set(shown) <= set(real) else [f"{where}: {shown} not of {real}"]
        return [] if shown == real else [f"{where}: {shown!r} != {real!r}"]

    assert example
    assert differ(example, shipped, "rules") == []
