"""The example configs (examples/*.yaml) wherever atelier is installed: a wheel carries them in
atelier/_examples (setup.py copies them at build time); a source checkout or an editable install
reads the repository's examples/ folder. `atelier run shapes` runs one by name and `atelier init
shapes` writes it where a user can edit it."""

from __future__ import annotations

from pathlib import Path

_PACKAGED = Path(__file__).parent / "_examples"  # in a wheel
_SOURCE = Path(__file__).parent.parent / "examples"  # in a checkout


def examples_dir() -> Path | None:
    for folder in (_PACKAGED, _SOURCE):
        if folder.is_dir() and any(folder.glob("*.yaml")):
            return folder
    return None


def example_names() -> list[str]:
    folder = examples_dir()
    return sorted(p.stem for p in folder.glob("*.yaml")) if folder else []


def example_path(name: str) -> Path | None:
    """The example config called `name` ('shapes' or 'shapes.yaml'), or None."""
    folder = examples_dir()
    stem = name[:-5] if name.endswith(".yaml") else name
    path = folder / f"{stem}.yaml" if folder else None
    return path if path is not None and "/" not in stem and path.is_file() else None


def config_argument(arg: str) -> Path:
    """A config file named on the command line: the file when it exists, else the example of
    that name ('shapes'), else the path as given (whose absence load_config reports)."""
    path = Path(arg)
    if path.exists():
        return path
    return example_path(arg) or path


def write_example(name: str, out: Path) -> Path:
    """Copy example `name` to `out` (a file, or a folder to put NAME.yaml in); never overwrites.
    ValueError (one line) for an unknown name or an existing file."""
    source = example_path(name)
    if source is None:
        raise ValueError(f"no example config {name!r}; examples: {', '.join(example_names()) or 'none installed'}")
    target = out / source.name if out.is_dir() else out
    if target.exists():
        raise ValueError(f"{target} already exists; give another --out")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(source.read_text())
    return target
