"""The README's numbers against the files that ship: the demo table against docs/demo_set.md and
each checkpoint's metrics.json / training.json, the CPU sweep's tables against docs/cpu_sweep.json
(the sweep's own data) and docs/cpu_sweep.md. Checked row by row from what the README's tables
hold, so a row another change adds is checked too, and a number edited in one place only fails.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"


# -- markdown ---------------------------------------------------------------------------------

def section(text: str, title: str) -> str:
    """The body of the heading that starts with ``title`` (any level), up to the next heading of
    the same or a higher level."""
    lines = text.splitlines()
    for i, line in enumerate(lines):
        m = re.match(r"(#+) (.*)", line)
        if m and m.group(2).startswith(title):
            level, body = len(m.group(1)), []
            for rest in lines[i + 1:]:
                h = re.match(r"(#+) ", rest)
                if h and len(h.group(1)) <= level:
                    break
                body.append(rest)
            return "\n".join(body)
    raise AssertionError(f"README.md has no heading starting with {title!r}")


def tables(text: str) -> list[list[dict[str, str]]]:
    """Every markdown table in ``text`` as a list of {header: cell} rows (``**`` and backticks
    removed from the cells)."""
    out, block = [], []
    for line in text.splitlines() + [""]:
        if line.lstrip().startswith("|"):
            block.append(line.strip())
            continue
        if len(block) >= 2:
            cells = [[c.strip().replace("**", "").replace("`", "") for c in row.strip("|").split("|")]
                     for row in block]
            header, rows = cells[0], [r for r in cells[2:]]
            out.append([dict(zip(header, r)) for r in rows])
        block = []
    return out


def table_with(text: str, first_header: str) -> list[dict[str, str]]:
    found = [t for t in tables(text) if t and next(iter(t[0])) == first_header]
    assert found, f"no table whose first column is {first_header!r}"
    return found[0]


def number(text: str) -> float:
    return float(text.replace(",", "").replace("%", "").replace("dB", "").strip())


# -- the demo checkpoints ---------------------------------------------------------------------

def demo_set_rows() -> dict[str, dict[str, str]]:
    rows = table_with((DOCS / "demo_set.md").read_text(), "checkpoint")
    return {r["checkpoint"]: r for r in rows}


def readme_demo_rows() -> list[dict[str, str]]:
    return table_with(section(README.read_text(), "Demo checkpoints"), "checkpoint")


def test_demo_set_md_agrees_with_the_shipped_checkpoints():
    """docs/demo_set.md (written by scripts/demo_report.py) against each checkpoint's own files."""
    rows = demo_set_rows()
    assert rows
    for name, row in rows.items():
        folder = ROOT / "checkpoints" / name
        assert folder.is_dir(), f"docs/demo_set.md lists {name}, which checkpoints/ does not hold"
        metrics = json.loads((folder / "metrics.json").read_text())
        facts = json.loads((folder / "training.json").read_text())
        assert row["PSNR (64 mode)"] == f"{metrics['psnr']:.2f} dB", (name, row, metrics["psnr"])
        assert row["SSIM"] == f"{metrics['ssim']:.4f}", (name, row, metrics["ssim"])
        # "6,000", or "750 after simvq-4096" for a demo fine-tuned from another
        assert number(row["steps trained"].split(" after ")[0]) == facts["step"] == metrics["step"], name
        used, of = re.match(r"([\d,]+) of ([\d,]+)", row["codes used on the held-out photos"]).groups()
        assert number(of) == metrics["codebook_size"], name
        assert row["usage"] == f"{100 * number(used) / number(of):.1f}%", (name, row)


def test_readme_demo_table_matches_the_demo_set_row_by_row():
    rows = demo_set_rows()
    readme = readme_demo_rows()
    assert readme
    for row in readme:
        name = row["checkpoint"]
        assert name in rows, f"the README's demo table has {name}, docs/demo_set.md does not"
        shipped = rows[name]
        assert row["PSNR (64 mode)"] == shipped["PSNR (64 mode)"], (name, row, shipped)
        assert number(row["SSIM"]) == round(number(shipped["SSIM"]), len(row["SSIM"].split(".")[1])), name
        m = re.fullmatch(r"([\d,]+) of ([\d,]+) \(([\d.]+%)\)", row["codes used on the held-out photos"])
        assert m, row
        assert shipped["codes used on the held-out photos"].startswith(f"{m.group(1)} of {m.group(2)} "), name
        assert m.group(3) == shipped["usage"], name


def test_readme_demo_prose_quotes_the_demo_set():
    """Sentences under the table: "N of K codes" with K a demo's codebook size names a demo's
    N, a percentage right after it that demo's usage, and "the best demo reaches X dB" the best."""
    text = section(README.read_text(), "Demo checkpoints")
    prose = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("|"))
    rows = demo_set_rows()
    used = {}
    for r in rows.values():
        n, k = re.match(r"([\d,]+) of ([\d,]+)", r["codes used on the held-out photos"]).groups()
        used.setdefault(k, {})[n] = r["usage"]
    quoted = 0
    found = [(m, m.groups()) for m in re.finditer(r"([\d,]+) of ([\d,]+)(?: codes)?(?: in use)? \(([\d.]+%)", prose)]
    found += [(m, (m.group(2), m.group(3), m.group(1)))
              for m in re.finditer(r"([\d.]+%) \(([\d,]+) of ([\d,]+) codes\)", prose)]
    for m, (n, k, share) in found:
        if k in used:
            assert n in used[k], f"README: {m.group(0)!r} is no demo's count of {k} codes ({used[k]})"
            assert used[k][n] == share, f"README: {m.group(0)!r}: that demo's usage is {used[k][n]}"
            quoted += 1
    assert quoted >= 2
    best = max(number(r["PSNR (64 mode)"]) for r in rows.values())
    for m in re.finditer(r"best demo reaches ([\d.]+) dB", prose):
        assert number(m.group(1)) == best, m.group(0)


# -- the CPU sweep ------------------------------------------------------------------------------

def sweep_rows() -> list[dict]:
    return json.loads((DOCS / "cpu_sweep.json").read_text())["rows"]


def decimals(text: str) -> int:
    return len(text.rstrip("%").split(".")[1]) if "." in text else 0


def matches(row: dict, usage: str, psnr: str) -> bool:
    """Whether the row's usage and PSNR, printed with as many decimals as the text, are the text."""
    m = row["metrics"]
    return (f"{100 * m['usage']:.{decimals(usage)}f}%" == usage
            and f"{m['psnr']:.{decimals(psnr)}f}" == psnr)


def kind(label: str) -> dict:
    """What a row label of the README says about the config (only what it names)."""
    want: dict = {}
    for q in ("FSQ", "SimVQ", "LFQ", "BSQ", "IBQ"):
        if q in label:
            want["quantizer"] = q.lower()
    want.setdefault("quantizer", "vq")
    if want["quantizer"] == "vq":
        want["ema_update"] = "EMA" in label
        want["entropy_reg"] = "entropy" in label
        want["kmeans_init"] = "k-means init" in label
        want["dead_code"] = "restart" in label
        want["rotation_trick"] = "rotation" in label
        if "code dim 8" in label:
            want["code_dim"] = 8
    return want


def fits(row: dict, want: dict, l2: bool | None = None) -> bool:
    c = row["config"]
    have = {"quantizer": c["quantizer"], "ema_update": c["ema_update"], "entropy_reg": c["entropy_reg"] > 0,
            "kmeans_init": c["kmeans_init"], "dead_code": c["dead_code_threshold"] > 0,
            "rotation_trick": c["rotation_trick"], "code_dim": c["code_dim"]}
    if l2 is not None and c["l2_norm"] != l2:
        return False
    return all(have[k] == v for k, v in want.items())


def test_readme_sweep_table_matches_the_sweep_rows():
    """"VQ + l2 norm | | 0.59% (18.57) | ...": each cell is one row of docs/cpu_sweep.json of that
    column's codebook size and of the kind the label names, with that usage and PSNR."""
    rows = sweep_rows()
    table = table_with(section(README.read_text(), "The CPU sweep"), "row")
    checked = 0
    for line in table:
        label = line["row"]
        want, l2 = kind(label), ("l2" in label) or None
        for column, cell in list(line.items())[1:]:
            for part in [p.strip() for p in cell.split("/")] if "/" in cell else [cell]:
                if not part:
                    continue
                m = re.fullmatch(r"([\d.]+%)(?: of (\d+))? \(([\d.]+)\)", part)
                assert m, (label, column, part)
                k = int(m.group(2) or re.match(r"\d+", column).group(0))
                found = [r for r in rows if r["config"]["codebook_size"] == k and fits(r, want, l2)
                         and matches(r, m.group(1), m.group(3))]
                assert found, f"README sweep table, {label!r} at {k} codes: {part} is in no row of cpu_sweep.json"
                checked += 1
    assert checked >= 15


def test_readme_remedies_table_matches_the_sweep_rows():
    """"+ k-means init / + l2 | 0.31% / 0.24% | 18.83 / 18.10 | 8x / 3x": the i-th of each cell's
    "/"-separated values is one row at 16,384 codes (the 2nd with l2 norm), and "x plain" is its
    usage over plain VQ's with the same l2 norm."""
    rows = [r for r in sweep_rows() if r["config"]["codebook_size"] == 16384]
    plain = {r["config"]["l2_norm"]: r["metrics"]["usage"] for r in rows
             if fits(r, kind("VQ")) and r["config"]["code_dim"] == 64}
    table = table_with(section(README.read_text(), "The CPU sweep"), "row")  # the first: the study's rows
    remedies = [t for t in tables(section(README.read_text(), "The CPU sweep")) if t and "x plain" in t[0]]
    assert remedies and remedies[0] is not table
    checked = 0
    for line in remedies[0]:
        label = line["row"].replace("(plain)", "")
        usages, psnrs = line["usage"].split(" / "), line["PSNR"].split(" / ")
        ratios = line["x plain"].split(" / ")
        assert len(usages) == len(psnrs), line
        for i, (usage, psnr) in enumerate(zip(usages, psnrs)):
            want = kind(label.split(" / ")[0])
            found = [r for r in rows if fits(r, want, bool(i) if len(usages) == 2 else None)
                     and matches(r, usage.strip(), psnr.strip())]
            assert found, f"README remedies table, {line['row']!r}: {usage} ({psnr}) is in no row of cpu_sweep.json"
            ratio = ratios[min(i, len(ratios) - 1)].strip()
            expected = found[0]["metrics"]["usage"] / plain[found[0]["config"]["l2_norm"]]
            assert number(ratio.rstrip("x")) == round(expected), (line["row"], ratio, expected)
            checked += 1
    assert checked >= 10


def test_readme_and_sweep_md_count_the_sweep_rows():
    n = len(sweep_rows())
    for path in (README, DOCS / "cpu_sweep.md"):
        for m in re.finditer(r"all (\d+) rows|sweep's (\d+) rows|same (\d+) rows", path.read_text()):
            assert int(next(g for g in m.groups() if g)) == n, f"{path.name}: {m.group(0)!r}, the sweep has {n}"


@pytest.mark.parametrize("title", ["VQ-VAE:", "FSQ-VAE:", "SimVQ-VAE:", "VQ-VAE with EMA", "Remedies at"])
def test_sweep_md_tables_match_the_sweep_rows(title):
    """docs/cpu_sweep.md's generated tables against its .json twin: every row's usage, PSNR and
    SSIM is one row of the same codebook size."""
    text = (DOCS / "cpu_sweep.md").read_text()
    start = text.index(title)
    table = tables(text[start:])[0]
    rows = sweep_rows()
    for line in table:
        k = int(line["codebook size"])
        found = [r for r in rows if r["config"]["codebook_size"] == k and matches(r, line["usage"], line["PSNR"])
                 and f"{r['metrics']['ssim']:.4f}" == line["SSIM"]]
        assert found, f"cpu_sweep.md {title} {line}"
