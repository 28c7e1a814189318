"""Deferred transformers Auto-class registration (see :mod:`nfm`).

Registering the nfm models needs ``transformers.modeling_utils`` and torch (seconds of imports); a user who
only reads a dataset or asks a recipe for ``--help`` should not pay that, and transformers' own modules import
its Auto modules half-way through their import (``modeling_layers`` imports ``AutoModel``), so importing nfm's
model classes from inside that import would be circular.  So ``import nfm`` adds a meta-path hook:

* when ``transformers.models.auto.configuration_auto`` has been imported: ``AutoConfig.register("nfm",
  NfmConfig)`` (the config class is light);
* when ``transformers.models.auto.modeling_auto`` has been imported: each Auto class gets a
  :class:`_LazyModelClass` for ``NfmConfig``, a stand-in that imports the real nfm class on first use
  (``AutoModel.from_pretrained`` -> ``stand_in.from_pretrained`` -> ``NfmModel.from_pretrained``);
* when ``nfm.models.modeling_nfm_generation`` (the last nfm modeling module) has been imported: the stand-ins
  are replaced by the real classes.

Every step is idempotent; Auto modules already imported when nfm is imported are handled at once.
"""
from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys

CONFIG_MODULE = "transformers.models.auto.configuration_auto"
MODELING_MODULE = "transformers.models.auto.modeling_auto"
NFM_MODELING_MODULE = "nfm.models.modeling_nfm_generation"
_WATCHED = (CONFIG_MODULE, MODELING_MODULE, NFM_MODELING_MODULE)


class _LazyModelClass:
    """Stand-in for an nfm model class in a transformers Auto mapping; attribute access and calls import and
    use the real class (``nfm.models.<name>``)."""

    def __init__(self, name: str):
        self.__name__ = self.__qualname__ = name

    @property
    def config_class(self):
        from .models import NfmConfig

        return NfmConfig

    def resolve(self):
        from . import models

        return getattr(models, self.__name__)

    def __getattr__(self, attr):
        if attr.startswith("__"):
            raise AttributeError(attr)
        return getattr(self.resolve(), attr)

    def __call__(self, *args, **kwargs):
        return self.resolve()(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<nfm.models.{self.__name__} (imported on first use)>"


def register_config() -> None:
    from .models import register_config as register

    register()


_registered = {"real": False}


def register_models(lazy: bool) -> None:
    """Register the nfm models with every Auto class: stand-ins (``lazy``) or the real classes."""
    import transformers

    from . import models

    if lazy and _registered["real"]:
        return
    register_config()
    for auto_name, cls_name in models.AUTO_CLASS_NAMES.items():
        model = _LazyModelClass(cls_name) if lazy else getattr(models, cls_name)
        getattr(transformers, auto_name).register(models.NfmConfig, model, exist_ok=True)
    _registered["real"] = not lazy


def _loaded(name: str) -> bool:
    """The module is imported and not half-way through its own import."""
    module = sys.modules.get(name)
    return module is not None and not getattr(getattr(module, "__spec__", None), "_initializing", False)


def _on_import(name: str) -> None:
    if name == CONFIG_MODULE:
        register_config()
    elif name == MODELING_MODULE:
        register_models(lazy=not _loaded(NFM_MODELING_MODULE))
    elif MODELING_MODULE in sys.modules:  # nfm's classes are all defined now: replace the stand-ins
        register_models(lazy=False)


class _Loader(importlib.abc.Loader):
    """Wraps the real loader of a watched module and runs :func:`_on_import` after the module's code ran."""

    def __init__(self, loader):
        self.loader = loader

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module):
        self.loader.exec_module(module)
        _on_import(module.__name__)


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path, target=None):
        if fullname not in _WATCHED:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path, target)
        if spec is None or spec.loader is None:
            return None
        spec.loader = _Loader(spec.loader)
        return spec


def install() -> None:
    """Add the hook once; handle watched modules that are already imported."""
    if not any(isinstance(f, _Finder) for f in sys.meta_path):
        sys.meta_path.insert(0, _Finder())
    for name in _WATCHED:
        if name in sys.modules:
            _on_import(name)
