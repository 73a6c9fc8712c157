"""Read ResNet-18 encoders from other tools' checkpoints, and write ours in their layouts.

Layouts (``--format``; ``auto`` tells them apart by their keys):

* ``solo-learn``: a PyTorch Lightning checkpoint, ``{"epoch", "global_step", "pytorch-lightning_version",
  "state_dict", "optimizer_states", "lr_schedulers", ...}``. ``state_dict`` holds the whole method; the
  encoder is the attribute ``backbone`` (``vturrisi/solo-learn:solo/methods/base.py``, ``BaseMethod``), so
  its keys are ``backbone.conv1.weight`` ...; ``momentum_backbone.*``, ``projector.*``, ``classifier.*``
  are ignored, as ``main_linear.py`` does. Pre-1.0 solo-learn called it ``encoder.``; accepted too.
  CIFAR runs swap in a 3x3/1 conv1 with padding 2 and no max-pool (recognised by conv1's shape).
* ``torchvision``: a plain ResNet-18 state dict, ``torch.save(resnet18().state_dict())``, with or without
  ``fc.*`` (dropped), optionally under ``"model"``/``"state_dict"`` (torchvision's reference training
  scripts save ``{"model": ..., "optimizer": ..., "args": ...}``) and/or a DataParallel ``module.`` prefix.
* ``seqbench``: a run directory of ``python -m benchmark.run`` or its ``checkpoint.pt``
  (``{"model": method.state_dict(), "optimizer", "step", "rng_cpu", "config"}``); the encoder is the
  method's ``encoder_module()`` (``encoder.*``). When the method is registered, the whole method is
  rebuilt from the run's config so that its sequence representations (seq-JEPA's aggregate) are probed.

Files are read with ``torch.load(weights_only=True)``, so a foreign file cannot run code; files holding
other Python objects need ``trust=True``. Every problem is a :class:`DataError` with one paragraph that
says what was expected and what was found.
"""

from __future__ import annotations

import hashlib
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import Tensor

from benchmark.config import RunConfig, from_dict
from benchmark.core.registry import build_method
from benchmark.core.rundir import CHECKPOINT_FILE, CONFIG_FILE
from benchmark.infra import yamlio
from benchmark.infra.errors import DataError, SeqbenchError
from methods.contract import Method
from methods.external import Stem, resnet18_encoder

FORMATS = ("auto", "solo-learn", "torchvision", "seqbench")
LAYOUTS = {
    "solo-learn": "a Lightning checkpoint whose 'state_dict' holds the encoder under 'backbone.' "
                  "(e.g. 'backbone.conv1.weight')",
    "torchvision": "a ResNet-18 state dict ('conv1.weight', 'bn1.weight', ..., 'layer4.1.bn2.bias', optional "
                   "'fc.*'), possibly under 'model' or 'state_dict'",
    "seqbench": "a seqbench run directory or its checkpoint.pt ({'model': {'encoder.conv1.weight': ...}, "
                "'config': ...})",
}
# conv1 kernel -> stem, per layout: solo-learn's CIFAR conv1 pads by 2, ours (and our exports) by 1.
STEMS: dict[str, dict[int, Stem]] = {
    "solo-learn": {7: "imagenet", 3: "solo-cifar"},
    "torchvision": {7: "imagenet", 3: "cifar"},
    "seqbench": {7: "imagenet", 3: "cifar"},
}


@dataclass
class LoadedCheckpoint:
    """An encoder read from ``path`` (for a run directory: its checkpoint.pt)."""

    path: Path
    format: str  # solo-learn | torchvision | seqbench
    sha256: str
    stem: Stem
    encoder_state: dict[str, Tensor]  # torchvision ResNet-18 key names, no fc.*
    default_name: str  # result name when --name is not given
    run_config: dict | None = None  # seqbench: the training run's resolved config
    method: Method | None = None  # seqbench: the whole method, rebuilt and loaded (None: encoder only)
    step: int | None = None  # seqbench: optimiser steps the checkpoint was saved at
    note: str = ""  # why a seqbench method could not be rebuilt, if it could not
    backbone: str = "resnet18"  # seqbench: the run's model.backbone (methods/components.py BACKBONE_DIMS)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _brief(keys: Any, n: int = 6) -> str:
    keys = list(keys)
    return ", ".join(map(str, keys[:n])) + (f" (+{len(keys) - n} more)" if len(keys) > n else "") or "none"


def read_file(path: Path, trust: bool = False) -> Any:
    """torch.load with one-paragraph errors for missing, empty, text, truncated and foreign files."""
    if not path.is_file():
        raise DataError(f"checkpoint {path} does not exist")
    with path.open("rb") as f:
        head = f.read(64)
    if not head:
        raise DataError(f"checkpoint {path} is an empty file (an interrupted copy?); re-download or "
                        f"re-save it")
    # torch.save writes a zip archive (PyTorch >= 1.6) or, legacy, a pickle starting with its protocol byte.
    if not (head.startswith(b"PK\x03\x04") or head[0] == 0x80):
        try:
            text = head.decode("utf-8")
            kind = f"a text file (it starts with {text.splitlines()[0][:40]!r})"
        except UnicodeDecodeError:
            kind = "neither a zip archive (torch.save) nor a pickle"
        raise DataError(f"{path} is not a PyTorch checkpoint: it is {kind}. Pass the .pt/.pth/.ckpt file "
                        f"written by torch.save or Lightning's Trainer.save_checkpoint.")
    try:
        return torch.load(path, map_location="cpu", weights_only=not trust)
    except pickle.UnpicklingError as e:
        if not trust and "weights only" in str(e).lower():
            lines = [ln.strip() for ln in str(e).splitlines() if "Unsupported global" in ln]
            reason = lines[0].split(" was not ")[0] if lines else "see torch.load's message"
            raise DataError(f"{path} holds Python objects besides tensors and plain containers ({reason}); "
                            f"seqbench reads checkpoints with torch.load(weights_only=True) so that a file "
                            f"cannot run code. If you trust its source, re-run with --trust-checkpoint.") from None
        raise DataError(f"{path} cannot be unpickled ({e}); it is corrupt or not a PyTorch "
                        f"checkpoint") from None
    except ModuleNotFoundError as e:
        raise DataError(f"{path} needs the Python module {e.name!r} to be unpickled; install it, or re-save "
                        f"only the model's state_dict with torch.save") from None
    except Exception as e:  # zip reader / storage errors: torch raises RuntimeError with a long text
        text = str(e).strip()
        first = text.splitlines()[0].split(". ")[0] if text else type(e).__name__
        raise DataError(f"{path} cannot be read ({type(e).__name__}: {first}); the file is probably "
                        f"truncated (an interrupted download or copy) or corrupt; re-download or re-save "
                        f"it") from None


def _is_state(obj: Any) -> bool:
    return isinstance(obj, dict) and bool(obj) and all(isinstance(v, Tensor) for v in obj.values())


def _strip(state: dict, prefix: str) -> dict[str, Tensor]:
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def _looks_resnet(state: dict) -> bool:
    return any(k.removeprefix("module.").split(".")[0] in ("conv1", "layer1") for k in state)


def detect_format(obj: Any, path: Path) -> str:
    """Which layout ``obj`` (a loaded file; for a directory, the path decides) is in."""
    if path.is_dir():
        return "seqbench"
    if isinstance(obj, dict):
        sd, model = obj.get("state_dict"), obj.get("model")
        if isinstance(sd, dict) and any(k.startswith(("backbone.", "encoder.")) for k in sd):
            return "solo-learn"
        if isinstance(model, dict) and any(k.startswith("encoder.") for k in model):
            return "seqbench"
        if _is_state(obj) or any(isinstance(x, dict) and _looks_resnet(x) for x in (sd, model)):
            return "torchvision"
    found = f"top-level keys {_brief(obj)}" if isinstance(obj, dict) else f"a {type(obj).__name__}"
    layouts = "; ".join(f"{k}: {v}" for k, v in LAYOUTS.items())
    raise DataError(f"cannot tell the layout of {path}: it holds {found}. Supported layouts: {layouts}. "
                    f"Pass --format if it is one of them.")


def _layout_error(path: Path, fmt: str, obj: Any) -> DataError:
    found = f"top-level keys {_brief(obj)}" if isinstance(obj, dict) else f"a {type(obj).__name__}"
    return DataError(f"{path} is not in the {fmt} layout ({LAYOUTS[fmt]}); it holds {found}.")


def _solo_state(obj: Any, path: Path) -> dict[str, Tensor]:
    sd = obj.get("state_dict") if isinstance(obj, dict) else None
    if not isinstance(sd, dict):
        raise _layout_error(path, "solo-learn", obj)
    state = _strip(sd, "backbone.") or _strip(sd, "encoder.")  # "encoder.": solo-learn < 1.0
    if not state:
        raise DataError(f"{path}: the Lightning state_dict has no 'backbone.*' entries (solo-learn keeps the "
                        f"encoder there); it holds {_brief(sd)}")
    return state


def _torchvision_state(obj: Any, path: Path) -> dict[str, Tensor]:
    state = obj
    if isinstance(obj, dict) and not _is_state(obj):
        state = next((obj[k] for k in ("model", "state_dict") if isinstance(obj.get(k), dict)), None)
    if not _is_state(state):
        raise _layout_error(path, "torchvision", obj)
    if all(k.startswith("module.") for k in state):  # saved from nn.DataParallel / DDP
        state = _strip(state, "module.")
    return {k: v for k, v in state.items() if not k.startswith("fc.")}


def check_resnet18(state: dict[str, Tensor], stem: Stem, where: str) -> None:
    """Compare every key and shape with a ResNet-18 (fc removed); DataError listing the differences."""
    with torch.device("meta"):
        want = {k: tuple(v.shape) for k, v in resnet18_encoder(stem).state_dict().items()}
    missing = [k for k in want if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in want]
    wrong = [f"{k} expected {want[k]} found {tuple(state[k].shape)}" for k in want
             if k in state and tuple(state[k].shape) != want[k]]
    if not (missing or unexpected or wrong):
        return
    hint = ""
    if any(".conv3." in k for k in state):
        hint = " Its blocks have a conv3 (bottleneck blocks): it looks like a ResNet-50/101/152."
    elif any(k.startswith("layer1.2.") for k in state):
        hint = " Its layer1 has a third block: it looks like a ResNet-34."
    raise DataError(f"{where} does not hold a ResNet-18 encoder (seqbench evaluates torchvision ResNet-18s). "
                    f"Expected {len(want)} tensors from conv1.weight {want['conv1.weight']} to "
                    f"layer4.1.bn2.num_batches_tracked, found {len(state)}. Missing {len(missing)}: "
                    f"{_brief(missing)}. Unexpected {len(unexpected)}: {_brief(unexpected)}. Wrong shape "
                    f"{len(wrong)}: {_brief(wrong, 3)}.{hint}")


def _stem(state: dict[str, Tensor], fmt: str) -> Stem:
    w = state.get("conv1.weight")
    kernel = int(w.shape[-1]) if isinstance(w, Tensor) and w.ndim == 4 else 7
    return STEMS[fmt].get(kernel, "imagenet")  # any other kernel fails check_resnet18 with both shapes


def _run_config(obj: dict, file: Path) -> dict | None:
    if isinstance(obj.get("config"), dict):
        return obj["config"]
    cfg_file = file.parent / CONFIG_FILE
    try:
        data = yamlio.load(cfg_file.read_text()) if cfg_file.is_file() else None
    except yaml.YAMLError:  # no usable config: the encoder alone is still evaluated
        return None
    return data if isinstance(data, dict) else None


def _rebuild(run_config: dict | None, model: dict, where: str) -> tuple[Method | None, str]:
    """Rebuild the trained method from its config and load every weight; (None, why) if not possible."""
    if run_config is None:
        return None, "no training config in the checkpoint or beside it: evaluating the encoder only"
    try:
        method, _ = build_method(from_dict(RunConfig, run_config, source=f"the run config of {where}"))
    except SeqbenchError as e:  # e.g. a method no longer registered: its encoder is still usable
        return None, f"cannot rebuild {run_config.get('method')!r} ({e}): evaluating the encoder only"
    want = method.state_dict()
    missing = [k for k in want if k not in model]
    unexpected = [k for k in model if k not in want]
    wrong = [f"{k} expected {tuple(want[k].shape)} found {tuple(model[k].shape)}" for k in want
             if k in model and tuple(model[k].shape) != tuple(want[k].shape)]
    if missing or unexpected or wrong:
        raise DataError(f"{where} does not match the {run_config.get('method')} model its config describes "
                        f"(model: {run_config.get('model')}): missing {len(missing)}: {_brief(missing)}; "
                        f"unexpected {len(unexpected)}: {_brief(unexpected)}; wrong shape {len(wrong)}: "
                        f"{_brief(wrong, 3)}. Was it written by another version of seqbench?")
    method.load_state_dict(model)
    return method.eval(), ""


def _seqbench(obj: Any, file: Path) -> tuple[dict[str, Tensor], dict | None, Method | None, str]:
    model = obj.get("model") if isinstance(obj, dict) else None
    if not isinstance(model, dict) or not _is_state(model):
        raise _layout_error(file, "seqbench", obj)
    run_config = _run_config(obj, file)
    method, note = _rebuild(run_config, model, str(file))
    if method is not None:
        state = {k: v.detach().clone() for k, v in method.encoder_module().state_dict().items()}
    else:
        state = _strip(model, "encoder.")
        if not state:
            raise DataError(f"{file}: the model has no 'encoder.*' entries; it holds {_brief(model)}")
    return state, run_config, method, note


def _safe_name(text: str) -> str:
    name = "".join(c if c.isalnum() or c in "._+-" else "-" for c in text).strip("-.")
    return name or "checkpoint"


def load(path: str | Path, fmt: str = "auto", trust: bool = False) -> LoadedCheckpoint:
    """Read the encoder (and, for seqbench, the whole method) from ``path`` in layout ``fmt``."""
    if fmt not in FORMATS:
        raise DataError(f"unknown checkpoint format {fmt!r}; valid: {', '.join(FORMATS)}")
    path = Path(path)
    file = path / CHECKPOINT_FILE if path.is_dir() else path
    if path.is_dir() and not file.is_file():
        raise DataError(f"{path} is a directory without {CHECKPOINT_FILE}: pass a seqbench run directory "
                        f"that trained (runs with --epochs 0 save no checkpoint) or the checkpoint file")
    obj = read_file(file, trust)
    try:
        found = detect_format(obj, path)
    except DataError:
        if fmt == "auto":
            raise
        found = None  # the requested layout's own checks say what is wrong
    fmt = found if fmt == "auto" else fmt
    hint = (f" It looks like a {found} checkpoint (python -m benchmark.evaluate reads it with --format {found} or "
            f"auto)."
            if found not in (None, fmt) else "")
    run_config, method, note, step, backbone = None, None, "", None, "resnet18"
    try:
        if fmt == "solo-learn":
            state = _solo_state(obj, file)
            name = _safe_name(file.stem)
        elif fmt == "torchvision":
            state = _torchvision_state(obj, file)
            name = _safe_name(file.stem)
        else:
            state, run_config, method, note = _seqbench(obj, file)
            step = obj.get("step")
            run = file.parent.name if file.name == CHECKPOINT_FILE else file.stem
            name = _safe_name(f"{run_config['method']}-{run}" if run_config else run)
            backbone = str(((run_config or {}).get("model") or {}).get("backbone", "resnet18"))
        stem = _stem(state, fmt)
        if backbone == "resnet18":
            check_resnet18(state, stem, f"{file} ({fmt} layout)")
        elif method is None:  # only the rebuilt method knows the shapes of another backbone
            raise DataError(f"{file}: its {backbone} encoder can only be read by rebuilding the method it was "
                            f"trained as, which failed ({note})")
    except DataError as e:
        raise DataError(f"{e}{hint}") from None
    return LoadedCheckpoint(file, fmt, sha256_file(file), stem, state, name, run_config, method, step, note,
                            backbone)


def torchvision_export(ck: LoadedCheckpoint) -> dict[str, Tensor]:
    """The encoder as torchvision's ``resnet18().state_dict()`` minus ``fc.*``."""
    return {k: v.detach().clone().contiguous() for k, v in ck.encoder_state.items()}


def solo_learn_export(ck: LoadedCheckpoint, source: dict) -> dict:
    """The encoder as a solo-learn checkpoint: Lightning's top-level keys, ``backbone.*`` in state_dict.

    Only what solo-learn's ``main_linear.py`` reads (``state_dict``'s ``backbone.*``) is meaningful; there is
    no projector or optimiser state, so it is a feature extractor, not a run to resume.
    """
    try:
        import pytorch_lightning
        version = pytorch_lightning.__version__
    except ImportError:  # optional: only recorded, never read by solo-learn
        version = None
    # No "epoch", optimiser or scheduler entries: there is no Lightning run to resume, and a made-up
    # value would be worse than none.
    out = {"global_step": ck.step or 0,
           "state_dict": {f"backbone.{k}": v for k, v in torchvision_export(ck).items()}, "seqbench": source}
    if version:
        out["pytorch-lightning_version"] = version
    return out
