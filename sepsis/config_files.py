"""Reading run-config files safely: YAML without alias bombs, `extends` chains, and the
checks that keep a run folder away from the user's data and home.

`sepsis.config` builds the typed configuration on top of these; `ConfigError` lives here so
both modules can raise it (it is re-exported as `sepsis.config.ConfigError`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import IO, Any

import yaml

# A run config has a few hundred values; anything that expands (through &anchor / *alias
# references) beyond this is refused before it is constructed or walked.
MAX_YAML_NODES = 100_000

REPO_ROOT = Path(__file__).resolve().parents[1]


class ConfigError(ValueError):
    """A configuration problem, with the file and key it concerns."""


class _AliasBomb(yaml.YAMLError):
    pass


def _expanded_size(root: yaml.Node, limit: int) -> int:
    """Number of nodes once aliases are expanded, counted without expanding them."""
    sizes: dict[int, int] = {}
    open_nodes: set[int] = set()

    def size(node: yaml.Node) -> int:
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in open_nodes:
            raise _AliasBomb("an alias refers to a node that contains it (a recursive value)")
        open_nodes.add(key)
        if isinstance(node, yaml.SequenceNode):
            children = node.value
        elif isinstance(node, yaml.MappingNode):
            children = [part for pair in node.value for part in pair]
        else:
            children = []
        total = 1
        for child in children:
            total += size(child)
            if total > limit:
                raise _AliasBomb(
                    f"the document expands to more than {limit} values through &anchor/*alias "
                    "references (an alias bomb?); write the values out instead"
                )
        open_nodes.discard(key)
        sizes[key] = total
        return total

    return size(root)


class ConfigLoader(yaml.SafeLoader):
    """SafeLoader (no object tags) that refuses documents whose aliases expand too far."""

    def compose_document(self) -> yaml.Node:
        node = super().compose_document()
        if node is not None:
            _expanded_size(node, MAX_YAML_NODES)
        return node


def safe_load(stream: str | IO[str], where: str) -> Any:
    """Parse one YAML document with `ConfigLoader`; errors become ConfigError naming `where`."""
    loader = ConfigLoader(stream)
    try:
        return loader.get_single_data()
    except _AliasBomb as err:
        raise ConfigError(f"{where}: {err}") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{where}: not valid YAML: {err}") from None
    except RecursionError:
        raise ConfigError(f"{where}: YAML nested too deeply") from None
    finally:
        loader.dispose()


def read_yaml(path: Path) -> dict[str, Any]:
    """One config file as a mapping (no `extends` resolution)."""
    try:
        with open(path, encoding="utf-8") as fh:
            data = safe_load(fh, str(path))
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from None
    except OSError as err:
        raise ConfigError(f"{path}: cannot read the config file: {err.strerror or err}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of keys at the top level")
    return data


def merge(base: dict, extra: dict) -> dict:
    """`extra` over `base`, mapping by mapping: the child wins at every level."""
    out = dict(base)
    for k, v in extra.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = merge(out[k], v)
        else:
            out[k] = v
    return out


def read_with_parents(path: Path) -> dict[str, Any]:
    """A config file merged over its `extends` chain (each parent relative to its child).

    `name` and `output_dir` come from the file itself only (default: its file name and
    runs/<name>): a child that inherited them would replace its parent's run folder."""
    chain: list[Path] = []
    seen: list[Path] = []
    layers: list[dict[str, Any]] = []
    current: Path | None = path
    while current is not None:
        real = Path(os.path.realpath(current))
        chain.append(current)
        if real in seen:
            shown = " -> ".join(str(p) for p in chain)
            raise ConfigError(f"{chain[0]}: extends: the chain is a cycle: {shown}")
        seen.append(real)
        raw = read_yaml(current)
        parent = raw.pop("extends", None)
        if layers:  # a parent's run identity is not inherited: each config has its own folder
            raw.pop("name", None)
            raw.pop("output_dir", None)
        layers.append(raw)
        if parent is None:
            current = None
            continue
        if not isinstance(parent, str) or not parent.strip():
            raise ConfigError(
                f"{current}: extends: expected a config file name relative to this file, "
                f"got {parent!r}"
            )
        nxt = current.parent / parent
        if not nxt.is_file():
            raise ConfigError(
                f"{current}: extends: parent config {nxt} does not exist"
                + (f" (chain: {' -> '.join(str(p) for p in chain)})" if len(chain) > 1 else "")
            )
        current = nxt
    out: dict[str, Any] = {}
    for layer in reversed(layers):  # grandparent first, the file itself last
        out = merge(out, layer)
    return out


def _real(p: Path) -> Path:
    return Path(os.path.realpath(p))


def _is_within(inner: Path, outer: Path) -> bool:
    return inner == outer or outer in inner.parents


def check_run_paths(generated: bool, data_dir: Path, output_dir: Path) -> None:
    """Refuse an output_dir (or a generated data_dir) that could hold the user's files.

    Each stage replaces its folder under output_dir (and `generate` replaces data_dir), so
    neither may be `/`, the home folder, the current folder or repository root, or above
    them; output_dir may not be, hold or sit inside data_dir.
    """
    out, data = _real(output_dir), _real(data_dir)
    protected = [
        (_real(Path.home()), "the home directory"),
        (_real(Path.cwd()), "the current directory"),
        (REPO_ROOT, "the repository root"),
    ]
    targets = [("output_dir", output_dir, out)]
    if generated:  # the source writes its data_dir (the synthetic one)
        targets.append(("data_dir", data_dir, data))
    for key, given, real in targets:
        if real == Path(real.anchor):
            raise ConfigError(
                f"{key}: {given} is the filesystem root; expected a folder of its own"
            )
        for place, what in protected:
            if _is_within(place, real):
                how = "is" if place == real else "contains"
                raise ConfigError(
                    f"{key}: {given} {how} {what} ({place}); expected a folder of its own, "
                    "e.g. runs/<name> (its stage folders are replaced and deleted)"
                )
    if out == data:
        raise ConfigError(f"output_dir: {output_dir} is data_dir; expected a separate folder")
    if _is_within(out, data):
        raise ConfigError(
            f"output_dir: {output_dir} is inside data_dir {data_dir}; the run folder must not "
            "be in the data folder (its stage folders are replaced and deleted)"
        )
    if _is_within(data, out):
        raise ConfigError(
            f"output_dir: {output_dir} contains data_dir {data_dir}; the run folder must not "
            "hold the data (its stage folders are replaced and deleted)"
        )
