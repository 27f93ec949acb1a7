"""The README stays a short guide that tells the truth: its layer table names exactly the
layers ``cnnc layers`` lists, it stays under 20 KB, and its layout section names only paths
that exist (and every role folder of ``cnnc/``).

The README is read as text: the layer table is the Markdown table headed ``| layer | meaning |``,
whose first column holds the layers as written (`conv3`, `maxpool3(stride=2)`, `pool`); the
layout is the fenced block that starts with ``cnnc/`` in the "## Layout" section, one name
per line, indented two spaces per folder level.
"""
from __future__ import annotations

import re

from conftest import ROOT

README = ROOT / "README.md"
MAX_BYTES = 20_000  # "under 20 KB", whichever KB is meant
LAYER_TABLE_HEADER = "| layer | meaning |"
NAME_RE = re.compile(r"([A-Za-z_]+?)(\d+(?:x\d+)?)?(?=\(|$)")


def readme() -> str:
    return README.read_text(encoding="utf-8")


def section(text: str, heading: str) -> str:
    """The text under a ``## heading`` up to the next ``## `` heading."""
    lines = text.splitlines()
    start = lines.index(heading)
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
    return "\n".join(lines[start + 1:end])


def table_rows(text: str, header: str) -> list[list[str]]:
    """The cells of each body row of the Markdown table whose header line is ``header``."""
    lines = text.splitlines()
    start = lines.index(header)
    rows = []
    for line in lines[start + 2:]:  # skip the header and the |---| line
        if not line.startswith("|"):
            break
        cells = re.split(r"(?<!\\)\|", line.strip())[1:-1]
        rows.append([c.strip() for c in cells])
    return rows


def written_layers(text: str) -> list[str]:
    """Every code span of the layer table's first column: one layer as written."""
    rows = table_rows(text, LAYER_TABLE_HEADER)
    assert rows, f"the README has no rows under {LAYER_TABLE_HEADER!r}"
    return [span for row in rows for span in re.findall(r"`([^`]+)`", row[0])]


def resolve(written: str, layers: list[dict]) -> str | None:
    """The layer type a written layer names (``conv3(64)`` -> conv, ``pool`` -> maxpool),
    by the name, an alias, and a size suffix where the layer takes one; None if none."""
    m = NAME_RE.fullmatch(written.split("(", 1)[0])
    if m is None:
        return None
    name, suffix = m.group(1), m.group(2)
    whole = written.split("(", 1)[0]
    for layer in layers:  # a name that ends in a digit (relu6) before a size suffix (conv3)
        if whole in (layer["name"], *layer["aliases"]):
            return layer["name"]
    for layer in layers:
        if name in (layer["name"], *layer["aliases"]) and (suffix is None or layer["size_suffix"]):
            return layer["name"]
    return None


def test_layer_table_lists_exactly_the_layers_of_cnnc_layers(cli):
    r = cli("layers", "--json")
    assert r.code == 0, r
    layers = r.json()
    assert {"conv", "maxpool", "fc", "relu"} <= {t["name"] for t in layers}  # the listing is real

    written = written_layers(readme())
    named = {w: resolve(w, layers) for w in written}
    not_layers = sorted(w for w, t in named.items() if t is None)
    assert not not_layers, f"the README's layer table shows what `cnnc layers` does not list: {not_layers}"
    missing = sorted({t["name"] for t in layers} - set(named.values()))
    assert not missing, f"`cnnc layers` lists layers the README's layer table leaves out: {missing}"


def test_resolve_tells_layers_from_other_names():
    """The check above can fail: names that are no layer, or a suffix a layer does not take."""
    layers = [{"name": "conv", "aliases": [], "size_suffix": True},
              {"name": "maxpool", "aliases": ["pool"], "size_suffix": True},
              {"name": "relu", "aliases": [], "size_suffix": False}]
    assert resolve("conv1x7(32)", layers) == "conv"
    assert resolve("pool", layers) == resolve("maxpool3(stride=2)", layers) == "maxpool"
    assert resolve("relu", layers) == "relu"
    for other in ("relu2", "input 1x100", "block(64)?", "[conv3-relu]*N", "let N = 2", "convolution"):
        assert resolve(other, layers) is None, other


def test_readme_is_under_20_kb():
    size = len(README.read_bytes())
    assert size < MAX_BYTES, (f"README.md is {size:,} bytes; keep it a guide under {MAX_BYTES:,} "
                              "and move reference material to docs/")


def layout_tree(text: str) -> list[str]:
    """The paths the layout's tree names, each rebuilt from its indentation."""
    layout = section(text, "## Layout")
    blocks = re.findall(r"```\n(.*?)```", layout, re.S)
    tree = next((b for b in blocks if b.startswith("cnnc/")), None)
    assert tree is not None, "the README's layout section has no tree starting with cnnc/"
    paths, parents = [], []
    for line in tree.splitlines():
        if not line.strip():
            continue
        indent = len(line) - len(line.lstrip(" "))
        assert indent % 2 == 0 and indent // 2 <= len(parents), f"bad indentation: {line!r}"
        depth = indent // 2
        name = line.split()[0]
        parents = parents[:depth]
        path = "".join(parents) + name
        paths.append(path)
        if name.endswith("/"):
            parents.append(name)
    return paths


def test_layout_names_only_paths_that_exist():
    paths = layout_tree(readme())
    assert "cnnc/compiler.py" in paths and "cnnc/lang/syntax.py" in paths, paths  # the parse works
    missing = [p for p in paths if not (ROOT / p).exists()]
    assert not missing, f"the README's layout names paths that do not exist: {missing}"

    # paths written in the section's prose: from the repository root, or inside cnnc/
    prose = re.sub(r"```.*?```", "", section(readme(), "## Layout"), flags=re.S)
    spans = [s for s in re.findall(r"`([^`\s]+)`", prose)
             if "/" in s or re.search(r"\.(py|md|lark|cnn|toml)$", s)]
    missing = [s for s in spans if not ((ROOT / s).exists() or (ROOT / "cnnc" / s).exists())]
    assert not missing, f"the README's layout section names paths that do not exist: {missing}"


def test_layout_names_every_folder_of_the_package():
    paths = set(layout_tree(readme()))
    folders = sorted(f"cnnc/{p.name}/" for p in (ROOT / "cnnc").iterdir()
                     if p.is_dir() and (p / "__init__.py").exists())
    assert folders, "no package folders found under cnnc/"
    missing = [f for f in folders if f not in paths]
    assert not missing, f"the README's layout leaves out these folders of cnnc/: {missing}"
