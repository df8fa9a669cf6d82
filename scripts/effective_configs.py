"""The effective config of every shipped YAML file (``configs/**``), as the trainer's one reader
resolves it (base files, relative restart thresholds at the row's own batch), before the values
are checked against this machine (an ImageNet folder need not exist here).

    python scripts/effective_configs.py                 # print the JSON
    python scripts/effective_configs.py --write         # rewrite tests/data/effective_configs.json

``tests/test_configs_effective.py`` compares every shipped config with that file, so a change of
layout (a base file, a row stating only what differs) can be checked to change no value.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from trainer.config import effective_dict

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"
SNAPSHOT = ROOT / "tests" / "data" / "effective_configs.json"


def shipped_rows() -> list[Path]:
    """Every runnable config file (base files, ``configs/base/``, are parts of rows, not rows)."""
    return sorted(p for p in CONFIGS.rglob("*.yaml") if "base" not in p.relative_to(CONFIGS).parts[:-1])


def effective_configs() -> dict[str, dict]:
    return {str(p.relative_to(ROOT)): effective_dict(p) for p in shipped_rows()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--write", action="store_true", help=f"rewrite {SNAPSHOT.relative_to(ROOT)}")
    args = parser.parse_args(argv)
    text = json.dumps(effective_configs(), indent=1, sort_keys=True) + "\n"
    if args.write:
        SNAPSHOT.parent.mkdir(parents=True, exist_ok=True)
        SNAPSHOT.write_text(text)
        print(f"wrote {SNAPSHOT.relative_to(ROOT)} ({len(json.loads(text))} configs)")
    else:
        print(text, end="")


if __name__ == "__main__":
    main()
