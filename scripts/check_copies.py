"""Keep the copies of `modeling/common/` in the family folders identical to their source (as transformers'
`utils/check_copies.py` does for its `# Copied from` blocks).

A family folder (e.g. `modeling/cman/`) must be self-contained: `save_pretrained` copies its files, and only its files,
next to the weights. So a family that uses a shared piece holds a sibling copy of the whole file, whose first line
is `# Copied from modeling.common.<name>: ...`. A copy is needed wherever a family file (or another copy) imports
`.<name>` and `<name>.py` exists in `modeling/common/`.

    python scripts/check_copies.py          # exit 1, listing every copy that is missing or differs from its source
    python scripts/check_copies.py --fix    # write the copies again from their sources
"""

from __future__ import annotations

import argparse
import difflib
import re
import sys
from pathlib import Path

MODELING = Path(__file__).resolve().parents[1] / "modeling"
COMMON = "common"
HEADER = "# Copied from modeling.common.{name}: edit modeling/common/{name}.py, then run `make fix-copies`.\n"
HEADER_PATTERN = re.compile(r"^# Copied from modeling\.common\.(\w+)\b")
RELATIVE_IMPORT = re.compile(r"^\s*from \.(\w+) import", re.MULTILINE)


def expected_copies(family: Path, common: Path) -> dict[str, Path]:
    """`{file name: source}` of every common file `family` needs: imported by its own files or by those copies."""
    shared = {path.stem for path in common.glob("*.py") if path.stem != "__init__"}
    needed: dict[str, Path] = {}
    pending = [path for path in family.glob("*.py") if not HEADER_PATTERN.match(_first_line(path))]
    while pending:
        text = pending.pop().read_text()
        for name in RELATIVE_IMPORT.findall(text):
            if name in shared and name not in needed:
                needed[name] = common / f"{name}.py"
                pending.append(needed[name])
    return needed


def check(modeling: Path = MODELING, fix: bool = False) -> list[str]:
    """Problems found (after fixing them, with `fix=True`): one line each, naming the copy and the fix."""
    common = modeling / COMMON
    problems = []
    for family in sorted(
        p for p in modeling.iterdir() if p.is_dir() and p.name not in (COMMON, "__pycache__")
    ):
        needed = expected_copies(family, common)
        for path in sorted(family.glob("*.py")):
            match = HEADER_PATTERN.match(_first_line(path))
            if match and match.group(1) not in needed:
                problems.append(
                    f"{_rel(path)} is a copy of modeling/common/{match.group(1)}.py that nothing imports"
                )
                if fix:
                    path.unlink()
        for name, source in sorted(needed.items()):
            copy = family / f"{name}.py"
            expected = HEADER.format(name=name) + source.read_text()
            if copy.exists() and copy.read_text() == expected:
                continue
            if not copy.exists():
                problems.append(
                    f"{_rel(copy)} is missing: {family.name} imports .{name} from modeling/common"
                )
            elif not HEADER_PATTERN.match(_first_line(copy)):
                problems.append(
                    f"{_rel(copy)} shadows modeling/common/{name}.py without a `# Copied from` header"
                )
            else:
                diff = difflib.unified_diff(
                    source.read_text().splitlines(), copy.read_text().splitlines()[1:], str(_rel(source)),
                    str(_rel(copy)), n=0, lineterm="",
                )  # fmt: skip
                problems.append(
                    f"{_rel(copy)} differs from modeling/common/{name}.py:\n  " + "\n  ".join(list(diff)[:12])
                )
            if fix:
                copy.write_text(expected)
    return problems


def _first_line(path: Path) -> str:
    with open(path) as handle:
        return handle.readline()


def _rel(path: Path) -> Path:
    try:
        return path.relative_to(MODELING.parent)
    except ValueError:
        return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--fix", action="store_true", help="rewrite every copy from its source")
    parser.add_argument("--modeling", type=Path, default=MODELING, help="the modeling package folder")
    args = parser.parse_args(argv)
    problems = check(args.modeling, fix=args.fix)
    for problem in problems:
        print(problem)
    if args.fix:
        print(
            f"Rewrote {len(problems)} cop{'y' if len(problems) == 1 else 'ies'}."
            if problems
            else "Every copy is up to date."
        )
        return 0
    if problems:
        print(f"\n{len(problems)} problem(s). Edit modeling/common/ only, then run `make fix-copies`.")
        return 1
    print("Every copy matches modeling/common/.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
