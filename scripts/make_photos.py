"""Re-create the shipped photo corpus (vqexplore/data/photos/) from Debian's wallpaper packages.

    python scripts/make_photos.py                    # apt-get download the packages into a temp dir
    python scripts/make_photos.py --debs DIR         # use .deb files already in DIR
    python scripts/make_photos.py --out OTHER_DIR    # write somewhere else (default: the package)

Needs `apt-get` (download only: no root) and `dpkg-deb` (Debian/Ubuntu). Each selected file is
decoded, resized with Lanczos so that its shorter side is ``SHORT_SIDE`` (512) px, and saved as a
JPEG (quality 90, no metadata); ``credits.csv`` is written beside the images from the packages'
own records: the Debian copyright file (DEP-5) for mate-backgrounds, each wallpaper's
``metadata.json`` (and the package copyright) for plasma-workspace-wallpapers. The same packages
and the same Pillow version give byte-identical files.

The selection was made by looking at every image of the three packages the issue allows
(mate-backgrounds, plasma-workspace-wallpapers, ukui-wallpapers): these are all the
photographs among them. Left out: abstract and rendered art (all of mate's abstract/ and
desktop/ folders, including the blurred-light ``Ubuntu-Mate-*-no-logo`` backgrounds, and
the ``Elephants`` painting), plasma's illustrations and renders (Altai, Autumn, Canopee,
Cascade, Cluster, Elarun, Flow, FlyingKonqui, Honeywave, IceCold, Kay, Kokkini, MilkyWay,
Opal, PastelHills, Patak, SafeLanding, Shell, Volna), and all twelve images of
ukui-wallpapers, which are illustrations. No other wallpaper package is used.
"""
from __future__ import annotations

import argparse
import csv
import fnmatch
import io
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from PIL import Image

SHORT_SIDE = 512
QUALITY = 90
OUT = Path(__file__).resolve().parent.parent / "vqexplore" / "data" / "photos"

# The versions the shipped files were made from (Debian 12 "bookworm").
PACKAGES = {
    "mate-backgrounds": "1.26.0-1",
    "plasma-workspace-wallpapers": "4:5.27.5-2",
}

_MATE = "usr/share/backgrounds/mate/nature"
_KDE = "usr/share/wallpapers"
# (shipped file, package, original file inside the package)
SELECTION = (
    ("mate-aqua.jpg", "mate-backgrounds", f"{_MATE}/Aqua.jpg"),
    ("mate-blinds.jpg", "mate-backgrounds", f"{_MATE}/Blinds.jpg"),
    ("mate-dune.jpg", "mate-backgrounds", f"{_MATE}/Dune.jpg"),
    ("mate-fresh-flower.jpg", "mate-backgrounds", f"{_MATE}/FreshFlower.jpg"),
    ("mate-garden.jpg", "mate-backgrounds", f"{_MATE}/Garden.jpg"),
    ("mate-green-meadow.jpg", "mate-backgrounds", f"{_MATE}/GreenMeadow.jpg"),
    ("mate-ladybird.jpg", "mate-backgrounds", f"{_MATE}/LadyBird.jpg"),
    ("mate-rain-drops.jpg", "mate-backgrounds", f"{_MATE}/RainDrops.jpg"),
    ("mate-storm.jpg", "mate-backgrounds", f"{_MATE}/Storm.jpg"),
    ("mate-two-wings.jpg", "mate-backgrounds", f"{_MATE}/TwoWings.jpg"),
    ("mate-wood.jpg", "mate-backgrounds", f"{_MATE}/Wood.jpg"),
    ("mate-yellow-flower.jpg", "mate-backgrounds", f"{_MATE}/YellowFlower.jpg"),
    ("kde-by-the-water.jpg", "plasma-workspace-wallpapers", f"{_KDE}/BytheWater/contents/images/2560x1600.jpg"),
    ("kde-cold-ripple.jpg", "plasma-workspace-wallpapers", f"{_KDE}/ColdRipple/contents/images/2560x1600.jpg"),
    ("kde-colorful-cups.jpg", "plasma-workspace-wallpapers", f"{_KDE}/ColorfulCups/contents/images/2560x1600.jpg"),
    ("kde-darkest-hour.jpg", "plasma-workspace-wallpapers", f"{_KDE}/DarkestHour/contents/images/2560x1600.jpg"),
    ("kde-evening-glow.jpg", "plasma-workspace-wallpapers", f"{_KDE}/EveningGlow/contents/images/2560x1600.jpg"),
    ("kde-fallen-leaf.jpg", "plasma-workspace-wallpapers", f"{_KDE}/FallenLeaf/contents/images/2560x1600.jpg"),
    ("kde-grey.jpg", "plasma-workspace-wallpapers", f"{_KDE}/Grey/contents/images/2560x1600.jpg"),
    ("kde-kite.jpg", "plasma-workspace-wallpapers", f"{_KDE}/Kite/contents/images/2560x1600.jpg"),
    ("kde-one-stands-out.jpg", "plasma-workspace-wallpapers", f"{_KDE}/OneStandsOut/contents/images/2560x1600.jpg"),
    ("kde-path.jpg", "plasma-workspace-wallpapers", f"{_KDE}/Path/contents/images/2560x1600.jpg"),
    ("kde-summer-1am.jpg", "plasma-workspace-wallpapers", f"{_KDE}/summer_1am/contents/images/2560x1600.jpg"),
)

CREDIT_FIELDS = ("file", "package", "version", "original", "title", "author", "licence")

_LICENCE_NAMES = {"LGPLv3": "LGPL-3.0", "GPL-2+": "GPL-2.0-or-later"}


def fail(msg: str) -> None:
    print(f"make_photos: {msg}", file=sys.stderr)
    sys.exit(1)


def download(packages: list[str], folder: Path) -> None:
    try:
        subprocess.run(["apt-get", "download", *packages], cwd=folder, check=True)
    except (OSError, subprocess.CalledProcessError) as e:
        fail(f"`apt-get download {' '.join(packages)}` failed ({e}); run `apt-get update` or pass --debs DIR")


def find_deb(folder: Path, package: str) -> Path:
    debs = sorted(folder.glob(f"{package}_*.deb"))
    if not debs:
        fail(f"no {package}_*.deb in {folder}; download it with `apt-get download {package}`")
    return debs[-1]


def extract(deb: Path, into: Path) -> str:
    """Unpack ``deb`` into ``into``; return its version."""
    subprocess.run(["dpkg-deb", "-x", str(deb), str(into)], check=True)
    return subprocess.run(["dpkg-deb", "-f", str(deb), "Version"], check=True, capture_output=True,
                          text=True).stdout.strip()


def dep5_paragraphs(text: str) -> list[dict[str, str]]:
    """The paragraphs of a machine-readable Debian copyright file (field -> value, continuation
    lines joined with newlines)."""
    out = []
    for block in re.split(r"\n\s*\n", text):
        fields: dict[str, str] = {}
        key = None
        for line in block.splitlines():
            if line[:1] in (" ", "\t") and key:
                fields[key] += "\n" + line.strip()
            elif ":" in line:
                key, value = line.split(":", 1)
                fields[key] = value.strip()
        if fields:
            out.append(fields)
    return out


def _people(copyright_field: str) -> str:
    """'2008, Jane Doe <jd@x.org>\\n2008, John Roe' -> 'Jane Doe, John Roe' (years, emails dropped)."""
    names = []
    for line in copyright_field.splitlines():
        line = re.sub(r"<[^>]*>", "", line)
        line = re.sub(r"^\s*[\d\-, ]+", "", line)
        line = line.strip(" ,´'\"")
        if line:
            names.append(line)
    return ", ".join(names)


def mate_credit(root: Path, original: str) -> tuple[str, str]:
    """(author, licence) of a mate-backgrounds file from the package's DEP-5 copyright file; the
    last matching paragraph wins, as the format specifies."""
    text = (root / "usr/share/doc/mate-backgrounds/copyright").read_text(encoding="utf-8")
    rel = original.split("usr/share/backgrounds/mate/", 1)[1]
    found = None
    for p in dep5_paragraphs(text):
        if "Files" in p and any(fnmatch.fnmatchcase(rel, pat) for pat in p["Files"].split()):
            found = p
    if found is None:
        fail(f"the mate-backgrounds copyright file does not cover {rel}")
    return _people(found["Copyright"]), _LICENCE_NAMES.get(found["License"], found["License"])


def plasma_credit(root: Path, original: str) -> tuple[str, str, str]:
    """(title, author, licence) of a Plasma wallpaper from its metadata.json."""
    wallpaper = Path(original).parts[3]  # usr/share/wallpapers/<Name>/contents/images/...
    meta = json.loads((root / "usr/share/wallpapers" / wallpaper / "metadata.json").read_text(encoding="utf-8"))
    plugin = meta["KPlugin"]
    author = ", ".join(a["Name"] for a in plugin.get("Authors", []))
    licence = _LICENCE_NAMES.get(plugin["License"], plugin["License"])
    return plugin.get("Name", wallpaper), author, licence


def convert(src: Path, dst: Path) -> tuple[int, int]:
    """Decode, resize (shorter side SHORT_SIDE, Lanczos), save a metadata-free JPEG atomically."""
    with Image.open(src) as im:
        im = im.convert("RGB")
    w, h = im.size
    scale = SHORT_SIDE / min(w, h)
    if scale < 1:
        im = im.resize((round(w * scale), round(h * scale)), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=QUALITY, optimize=True)
    tmp = dst.with_name(dst.name + ".tmp")
    tmp.write_bytes(buf.getvalue())
    os.replace(tmp, dst)
    return im.size


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--debs", type=Path, help="folder holding the .deb files (default: download them)")
    ap.add_argument("--out", type=Path, default=OUT, help=f"output folder (default: {OUT})")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        debs = args.debs
        if debs is None:
            debs = Path(tmp) / "debs"
            debs.mkdir()
            download(sorted(PACKAGES), debs)
        roots, versions = {}, {}
        for package, pinned in PACKAGES.items():
            roots[package] = Path(tmp) / package
            versions[package] = extract(find_deb(debs, package), roots[package])
            if versions[package] != pinned:
                print(f"make_photos: warning: {package} is {versions[package]}, the shipped set was made "
                      f"from {pinned}; files may differ", file=sys.stderr)
        args.out.mkdir(parents=True, exist_ok=True)
        rows = []
        for name, package, original in SELECTION:
            src = roots[package] / original
            if not src.is_file():
                fail(f"{original} is not in {package} {versions[package]}; update SELECTION")
            w, h = convert(src, args.out / name)
            if package == "mate-backgrounds":
                title = Path(original).stem
                author, licence = mate_credit(roots[package], original)
            else:
                title, author, licence = plasma_credit(roots[package], original)
            rows.append({"file": name, "package": package, "version": versions[package], "original": "/" + original,
                         "title": title, "author": author, "licence": licence})
            print(f"{name}: {w}x{h} from {package} /{original}")
    buf = io.StringIO()
    writer = csv.DictWriter(buf, CREDIT_FIELDS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(sorted(rows, key=lambda r: r["file"]))
    (args.out / "credits.csv").write_text(buf.getvalue(), encoding="utf-8")
    total = sum((args.out / n).stat().st_size for n, _, _ in SELECTION)
    print(f"{len(SELECTION)} photos, {total / 1e6:.2f} MB, credits in {args.out / 'credits.csv'}")


if __name__ == "__main__":
    main()
