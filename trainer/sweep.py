"""``python -m trainer sweep configs/cpu``: train every row, evaluate it, write the study's tables.

Every ``*.yaml`` in the folder is one row except ``default*.yaml``. Rows run one after another,
each in its own run folder; a row whose final checkpoint already exists is not trained again
(an interrupted sweep continues where it stopped, a half-trained row resumes).
Tables: VQ (code dim, codebook size, l2 norm, entropy reg), FSQ (levels), SimVQ, and VQ with EMA
k-means updates, in the layout of the reference study.
"""
from __future__ import annotations

import json
import shlex
import sys
import time
from pathlib import Path

from vqexplore.describe import describe_config, remedy
from vqexplore.errors import ConfigError
from vqexplore.hub import CHECKPOINTS_DIR, METRICS_NAME, WEIGHTS_NAME, checkpoint_dirname
from vqexplore.utils import write_atomic

from .checkpoint import STATE_JSON
from .config import Config, load_config


# Text below this line in the output file is kept when the sweep rewrites the tables.
NOTES_MARKER = "<!-- notes: kept by `python -m trainer sweep` -->"


def sweep_configs(folder: str | Path) -> list[Path]:
    folder = Path(folder)
    if not folder.is_dir():
        raise ConfigError(f"sweep: {folder} is not a folder of YAML configs (e.g. configs/cpu)")
    files = sorted(p for p in folder.glob("*.yaml") if not p.name.startswith("default"))
    if not files:
        raise ConfigError(f"sweep: {folder} holds no *.yaml configs (default*.yaml are skipped)")
    return files


REMEDY_QUANTIZERS = ("lfq", "bsq", "ibq")


def rows_file(out: str | Path) -> Path:
    """The sweep's rows as data (name, model config, image size, metrics, seconds per row), written
    beside its markdown ``out`` (``docs/cpu_sweep.md`` -> ``docs/cpu_sweep.json``)."""
    return Path(out).with_suffix(".json")


def read_rows(path: str | Path) -> list[dict]:
    """The rows of a sweep's rows file (or of the one beside its markdown); ValueError, one line, if it
    cannot be read."""
    path = rows_file(path)
    try:
        rows = json.loads(path.read_text(encoding="utf-8"))["rows"]
        if not all(isinstance(r, dict) and isinstance(r.get("config"), dict) and "name" in r for r in rows):
            raise TypeError("a row without name or config")
    except OSError as e:
        raise ValueError(f"{path} cannot be read ({e.strerror}); run `python -m trainer sweep configs/cpu`") from None
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{path} is not a sweep's rows file ({e}); rerun `python -m trainer sweep`") from None
    return rows


def remedy_rows(rows) -> dict[str, tuple[str, ...]]:
    """Remedy (``vqexplore.health.REMEDIES``) -> names of the sweep's rows whose config tried it."""
    from vqexplore.health import REMEDIES, remedies_of

    return {r: tuple(row["name"] for row in rows if r in remedies_of(row["config"])) for r in REMEDIES}


def table_of(cfg: Config) -> str:
    """The table a row belongs to: its quantizer's, with VQ's EMA rows apart (as in the study),
    the collapse remedies (VQ with a remedy, LFQ, BSQ, IBQ) in a table of their own, and the
    VQGAN stage's rows (VQGAN architecture or adversarial loss) in theirs."""
    if cfg.model.get("arch", "simplecnn") == "vqgan" or cfg.loss.gan:
        return "vqgan"
    if cfg.model.quantizer in REMEDY_QUANTIZERS or remedy(cfg.model):
        return "remedies"
    if cfg.model.quantizer == "vq":
        return "ema" if cfg.model.ema_update else "vq"
    return cfg.model.quantizer


def _is_remedy_baseline(cfg: Config) -> bool:
    """Plain VQ at 16,384 codes of dim 64 (with or without l2): the remedies table's baseline."""
    m = cfg.model
    return (table_of(cfg) == "vq" and m.codebook_size == 16384 and m.code_dim == 64
            and not m.entropy_reg)


# (k-means init, dead-code restart, rotation trick) -> place in the remedies table
_REMEDY_ORDER = {(True, False, False): 0, (False, True, False): 1, (True, True, False): 2}


def _row_order(cfg: Config):
    m = cfg.model
    if table_of(cfg) == "remedies":  # VQ remedies by l2 norm, then LFQ, BSQ, IBQ
        rank = _REMEDY_ORDER.get((bool(m.kmeans_init), bool(m.dead_code_threshold), bool(m.rotation_trick)), 3)
        return (m.quantizer != "vq", m.l2_norm, rank, REMEDY_QUANTIZERS.index(m.quantizer)
                if m.quantizer in REMEDY_QUANTIZERS else -1, cfg.name)
    if table_of(cfg) != "vq":
        return (m.codebook_size or 0, cfg.name)
    # The study's order: plain (code dim 64, then 8), l2, entropy; codebook size ascending.
    return (m.entropy_reg > 0, m.l2_norm, -(m.code_dim or 0), m.codebook_size or 0, cfg.name)


def run_sweep(folder: str | Path, *, out: str | Path | None = "docs/cpu_sweep.md", overrides: list[str] | None = None,
              command: str | None = None, eval_batch_size: int = 64, only: list[str] | None = None) -> str:
    """Train and evaluate every row; write (and return) the markdown tables.

    ``only``: rerun just these rows (file stems); every other row is taken from the rows file beside
    ``out`` as it was recorded, which must hold it with the same model config and image size (a
    changed row is refused: rerun it too). The tables then say which command made which rows."""
    from .evaluate import evaluate_checkpoint
    from .train import train

    overrides = list(overrides or [])
    files = sweep_configs(folder)
    configs = [(path, load_config(path, overrides)) for path in files]  # every row valid before any work
    recorded, history = _recorded_rows(configs, out, only) if only else ({}, [])
    results = []
    start = time.time()
    for i, (path, cfg) in enumerate(configs, 1):
        if path.stem in recorded:
            row = recorded[path.stem]
            results.append((path.stem, cfg, row["metrics"], row["seconds"], row.get("train_seconds")))
            continue
        final = cfg.run_dir / CHECKPOINTS_DIR / checkpoint_dirname(cfg.train.steps)
        t0 = time.time()
        print(f"[sweep {i}/{len(configs)}] {path}", file=sys.stderr, flush=True)
        if not final.is_dir():
            row_cmd = f"python -m trainer --cfg {path} " + " ".join(shlex.quote(o) for o in overrides)
            train(cfg, resume=True, command=(command or row_cmd).strip())
        metrics = _fresh_metrics(final)
        if metrics is None:  # evaluation is deterministic: a metrics.json newer than the weights is reused
            metrics, _ = evaluate_checkpoint(str(final), batch_size=eval_batch_size, quiet=True, views=False)
        seconds = time.time() - t0
        print(f"[sweep {i}/{len(configs)}] {cfg.name}: usage {metrics['usage']:.2%}, PSNR {metrics['psnr']:.2f}, "
              f"SSIM {metrics['ssim']:.4f} ({seconds:.0f} s)", file=sys.stderr, flush=True)
        results.append((path.stem, cfg, metrics, seconds, _train_seconds(cfg)))
    first_command = history[0]["command"] if history else command
    updates = history[1:]
    if only:
        update = {"command": command, "rows": list(only)}
        updates = [u for u in updates if u != update] + [update]  # the same rerun again: listed once
    # Training time by the trainer's clock, of the rows that recorded it (rows kept from a rows file
    # written before it recorded the clock have none).
    trained = sum(r[4] for r in results if r[4])
    text = render_tables([(cfg, metrics, seconds) for _, cfg, metrics, seconds, _ in results], command=first_command,
                         updates=updates, train_seconds=trained, unclocked=sum(not r[4] for r in results))
    print(f"sweep: {len(results) - len(recorded)} rows run in {(time.time() - start) / 60:.1f} min", file=sys.stderr)
    if out:
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        if out.is_file() and NOTES_MARKER in out.read_text():  # keep hand-written notes
            text = text.rstrip("\n") + "\n\n" + NOTES_MARKER + out.read_text().split(NOTES_MARKER, 1)[1]
        write_atomic(out, text)
        # The rows as data beside the tables, for programs (the dashboard's rate-distortion preset).
        rows = [{"name": name, "config": dict(cfg.model), "image_size": cfg.data.size,
                 "metrics": {k: v for k, v in metrics.items() if k != "code_counts"},
                 "seconds": round(seconds, 1), **({"train_seconds": round(trained, 1)} if trained else {})}
                for name, cfg, metrics, seconds, trained in results]
        write_atomic(rows_file(out), json.dumps({"command": first_command, "updates": updates, "rows": rows}, indent=1))
        print(f"wrote {out} and {rows_file(out)}", file=sys.stderr)
    return text


def _recorded_rows(configs, out, only: list[str]) -> tuple[dict[str, dict], list[dict]]:
    """For ``--only``: the rows not rerun, from the rows file beside ``out`` ({stem: row}), and the
    commands that made the file ([{"command": first}, *updates]). ConfigError, one line, when a row
    to keep is missing or was recorded with another config."""
    stems = [path.stem for path, _ in configs]
    unknown = [name for name in only if name not in stems]
    if unknown:
        raise ConfigError(f"sweep --only: no row {', '.join(unknown)} in the folder; its rows are {', '.join(stems)}")
    if not out:
        raise ConfigError("sweep --only keeps the other rows from the rows file beside --out; give --out")
    try:
        data = json.loads(rows_file(out).read_text(encoding="utf-8"))
        rows = {r["name"]: r for r in read_rows(out)}
    except (OSError, ValueError) as e:
        raise ConfigError(f"sweep --only needs the recorded rows of {rows_file(out)} ({e}); run the whole sweep "
                          f"once") from None
    kept = {}
    for path, cfg in configs:
        if path.stem in only:
            continue
        row = rows.get(path.stem)
        if row is None:
            raise ConfigError(f"sweep --only: {rows_file(out)} holds no result for row {path.stem}; add it to --only")
        if not _same_model(row["config"], dict(cfg.model)) or row.get("image_size") != cfg.data.size:
            raise ConfigError(f"sweep --only: row {path.stem} changed since {rows_file(out)} recorded it (model or "
                              f"image size); add it to --only")
        kept[path.stem] = row
    history = [{"command": data.get("command")}, *data.get("updates", [])]
    return kept, history


def _same_model(recorded: dict, model: dict) -> bool:
    """Whether a recorded row's model config is ``model``: the record read through today's checks
    (an argument added since takes its default) and, where the record holds no ``resolution`` (rows
    written before the tokenizer recorded its image size), that key left out."""
    from vqexplore.modelconfig import check_config

    try:
        then = dict(check_config(recorded))
    except ConfigError:
        return False
    now = json.loads(json.dumps(model))
    if recorded.get("resolution") is None:
        then.pop("resolution", None)
        now.pop("resolution", None)
    return json.loads(json.dumps(then)) == now


def _fresh_metrics(ckpt: Path) -> dict | None:
    metrics, weights = ckpt / METRICS_NAME, ckpt / WEIGHTS_NAME
    if metrics.is_file() and metrics.stat().st_mtime >= weights.stat().st_mtime:
        try:
            return json.loads(metrics.read_text())
        except json.JSONDecodeError:
            return None
    return None


def _train_seconds(cfg: Config) -> float:
    """Training time of a row by the trainer's own clock (validation and checkpoints excluded)."""
    state = cfg.run_dir / CHECKPOINTS_DIR / checkpoint_dirname(cfg.train.steps) / STATE_JSON
    try:
        return float(json.loads(state.read_text()).get("elapsed", 0.0))
    except (OSError, ValueError):
        return 0.0


def _pct(v) -> str:
    return f"{100 * v:.2f}%"


def _num(v, digits=4) -> str:
    return "n/a" if v is None else f"{v:.{digits}f}"


# table -> (title, its description columns: vqexplore.describe.describe_config keys), study order
TABLES = {
    "vq": ("VQ-VAE:", ("code dim", "codebook size", "l2 norm", "entropy reg")),
    "fsq": ("FSQ-VAE:", ("levels", "codebook size")),
    "simvq": ("SimVQ-VAE:", ("code dim", "codebook size")),
    "ema": ("VQ-VAE with EMA k-means codebook updates (decay 0.99; the study published no row):",
            ("code dim", "codebook size")),
    "remedies": ("Remedies at 16,384 codes (VQ of dim 64 with each remedy, and LFQ, BSQ, IBQ at 2^14 codes; "
                 "the plain VQ rows of the table above repeated as the baseline; \"x plain\" is the usage "
                 "over plain VQ's with the same l2 norm):",
                 ("quantizer", "remedy", "l2 norm", "code dim", "codebook size")),
    "vqgan": ("VQGAN stage (its own model and recipe, in the row's config: VQGAN encoder/decoder and a PatchGAN "
              "discriminator; the setup line above does not apply):",
              ("quantizer", "l2 norm", "code dim", "codebook size")),
}
METRIC_HEADER = "usage | perplexity | PSNR | SSIM | LPIPS | rFID |"
METRIC_ALIGN = "---:|---:|---:|---:|---:|---:|"


def render_tables(results: list[tuple[Config, dict, float]], *, command: str | None = None,
                  updates: list[dict] | None = None, train_seconds: float | None = None, unclocked: int = 0) -> str:
    """The study's tables (markdown) of (config, metrics, seconds) rows, with how they were made:
    ``command`` made them, each of ``updates`` ({"command", "rows"}) reran some rows since."""
    lines = ["Produced by:", "", "```", command, "```", ""] if command else []
    for update in updates or []:
        lines += [f"Rows {', '.join(update['rows'])} rerun by:", "", "```", update["command"], "```", ""]
    if results:
        lines += _setup_lines(results, train_seconds, unclocked)
    others = sorted({table_of(r[0]) for r in results} - set(TABLES))  # a quantizer the study lacks
    for table, (title, columns) in {**TABLES, **{q: (f"{q.upper()}-VAE:", ("code dim", "codebook size"))
                                                 for q in others}}.items():
        rows = sorted((r for r in results if table_of(r[0]) == table), key=lambda r: _row_order(r[0]))
        if not rows:
            continue
        header, align_tail, baseline = METRIC_HEADER, METRIC_ALIGN, {}
        if table == "remedies":
            plain = [r for r in results if _is_remedy_baseline(r[0])]
            baseline = {r[0].model.l2_norm: r[1]["usage"] for r in plain}
            rows = plain + rows
            header, align_tail = header + " x plain |", align_tail + "---:|"
        align = "".join(("---:" if c in ("code dim", "codebook size") else ":-:") + "|" for c in columns)
        if table == "vqgan":  # its rows are evaluated under their own data's protocol
            under = "; ".join(sorted({m.get("protocol_description") or "" for _, m, _ in rows} - {""}))
            title = title + (f" Metrics under: {under}." if under else "")
        lines += [title, "", f"| {' | '.join(columns)} | {header}", f"|{align}{align_tail}"]
        for cfg, m, _ in rows:
            described = describe_config(cfg.model)
            # Lists compact, as the study prints them: [8,5,5,5].
            cells = (str(described[c] or "none").replace(", ", ",") for c in columns)
            line = f"| {' | '.join(cells)} | {_metric_cells(m)}"
            if table == "remedies":
                base = baseline.get(cfg.model.l2_norm) if cfg.model.quantizer == "vq" else baseline.get(False)
                line += f" {m['usage'] / base:.0f}x |" if base else " n/a |"
            lines.append(line)
        lines.append("")
    return "\n".join(lines)


def _metric_cells(m: dict) -> str:
    return (f"{_pct(m['usage'])} | {m['perplexity']:.1f} | {_num(m['psnr'])} | {_num(m['ssim'])} | "
            f"{_num(m.get('lpips'))} | {_num(m.get('rfid'))} |")


def _setup_lines(results: list[tuple[Config, dict, float]], train_seconds: float | None = None,
                 unclocked: int = 0) -> list[str]:
    """What every SimpleCNN row shares (data, model body, optimiser, steps) and the total training
    time (``train_seconds``, else read from the rows' run folders)."""
    simple = [r for r in results if table_of(r[0]) != "vqgan"] or results
    first, notes = simple[0][0], simple[0][1]
    t, d, m = first.train, first.data, first.model
    protocol = notes.get("protocol_description") or f"the whole validation split ({notes.get('num_images')} images)"
    if train_seconds is None:
        train_seconds = sum(_train_seconds(c) for c, _, _ in results)
    which = "every row but the VQGAN stage's" if len(simple) < len(results) else "every row"
    lines = [f"Setup ({which}): data `{d.train}` at {d.size}x{d.size} "
             f"({notes.get('data_description', '')}), SimpleCNN hidden {m.hidden_dim}, "
             f"{m.n_resblocks} residual blocks, Adam lr {t.lr:g}, batch {t.batch_size}, {t.steps} steps, "
             f"seed {t.seed}. Metrics by `python -m trainer eval` under one protocol: {protocol}. "
             + ("Training time, all rows: " if not unclocked else
                f"Training time of the {len(results) - unclocked} rows rerun since the rows file keeps it: ")
             + f"{train_seconds / 60:.1f} min (the trainer's clock; startup, validation and evaluation excluded).",
             ""]
    skipped = sorted({n for _, metrics, _ in results for n in metrics.get("notes", [])})
    if skipped:
        lines += ["LPIPS and rFID are n/a: their pretrained weights are not on this machine.", ""]
        lines += [f"- {n}" for n in skipped] + [""]
    return lines
