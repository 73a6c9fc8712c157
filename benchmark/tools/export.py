"""Write a trained seqbench encoder in other tools' layouts.

    python -m benchmark.tools.export --run results/runs/seqjepa/3diebench/L3/seed0-1a2b3c4d --format torchvision

* ``torchvision``: ``resnet18().state_dict()`` without ``fc.*``; load it with
  ``torchvision.models.resnet18().load_state_dict(torch.load(FILE), strict=False)`` (the only missing
  keys are ``fc.weight`` and ``fc.bias``).
* ``solo-learn``: a Lightning-style checkpoint whose ``state_dict`` holds the encoder under ``backbone.``;
  pass it as ``pretrained_feature_extractor`` to solo-learn's ``main_linear.py``.

The encoder is the online one (``Method.encoder_module()``), as the probes read it. A model trained with
the small-image stem (3x3/1 conv1, no max-pool) is exported as is; the command says how to build the
matching network, since neither tool's default ResNet-18 has that stem (solo-learn's CIFAR stem pads by 2).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from benchmark.infra.errors import SeqbenchError, user_message
from benchmark.infra.fileio import atomic_torch_save
from benchmark.tools.checkpoint_formats import CHECKPOINT_FILE, load, solo_learn_export, torchvision_export

DEFAULT_FILE = {"torchvision": "encoder_torchvision.pth", "solo-learn": "encoder_solo-learn.ckpt"}
# model.backbone -> the torchvision architecture both formats load it into (solo-learn's backbones are
# torchvision's); the narrow CPU ResNet-18s (methods/components.py) have no counterpart in either tool.
EXPORTABLE = {"resnet18": "resnet18", "resnet50": "resnet50"}


def export(run: Path, fmt: str, out: Path | None = None, trust: bool = False) -> tuple[Path, str]:
    """Write the encoder of the seqbench run (directory or checkpoint file) ``run`` in layout ``fmt``.

    Returns (file written, the encoder's stem).
    """
    path, stem, _ = export_encoder(run, fmt, out, trust)
    return path, stem


def export_encoder(run: Path, fmt: str, out: Path | None = None, trust: bool = False) -> tuple[Path, str, str]:
    """:func:`export`, also returning the encoder's backbone (``model.backbone``)."""
    if fmt not in DEFAULT_FILE:
        raise SeqbenchError(f"unknown export format {fmt!r}; valid: {', '.join(DEFAULT_FILE)}")
    ck = load(run, "seqbench", trust)
    if ck.backbone not in EXPORTABLE:
        raise SeqbenchError(f"{ck.path} was trained with model.backbone={ck.backbone}, which neither torchvision nor "
                            f"solo-learn can build (exportable backbones: {', '.join(EXPORTABLE)}); evaluate it "
                            f"in seqbench instead: python -m benchmark.evaluate --checkpoint {ck.path.parent}")
    out = out or ck.path.parent / DEFAULT_FILE[fmt]
    if out.exists() and out.is_dir():
        raise SeqbenchError(f"--out {out} is a directory; give a file name such as {out / DEFAULT_FILE[fmt]}")
    source = {"run": str(ck.path.parent.resolve()), "checkpoint_sha256": ck.sha256, "step": ck.step,
              "method": (ck.run_config or {}).get("method"), "stem": ck.stem, "backbone": ck.backbone}
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_torch_save(torchvision_export(ck) if fmt == "torchvision" else solo_learn_export(ck, source), out,
                      "exported encoder")
    return out, ck.stem, ck.backbone


def stem_note(stem: str, fmt: str, backbone: str = "resnet18") -> str:
    if stem == "imagenet":
        return ""
    build = (f"net = torchvision.models.{EXPORTABLE.get(backbone, backbone)}(); "
             "net.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False); net.maxpool = nn.Identity()")
    if fmt == "solo-learn":
        return (f"note: this encoder uses seqbench's small-image stem (3x3/1 conv1, padding 1, no max-pool); "
                f"solo-learn builds its CIFAR stem with padding 2, so set its backbone.conv1 padding to 1 to "
                f"reproduce our features ({build})")
    return f"note: this encoder uses the small-image stem; load it into: {build}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmark.tools.export", description=__doc__.split("\n")[0])
    p.add_argument("--run", required=True, help=f"seqbench run directory (or its {CHECKPOINT_FILE})")
    p.add_argument("--format", required=True, choices=sorted(DEFAULT_FILE), help="layout to write")
    p.add_argument("--out", help=f"output file (default: <run dir>/{' or '.join(DEFAULT_FILE.values())})")
    p.add_argument("--trust-checkpoint", action="store_true", help="torch.load(weights_only=False)")
    args = p.parse_args(argv)
    try:
        path, stem, backbone = export_encoder(Path(args.run), args.format, Path(args.out) if args.out else None,
                                      args.trust_checkpoint)
    except SeqbenchError as e:
        print(f"error: {user_message(e)}", file=sys.stderr)
        return 2
    if note := stem_note(stem, args.format, backbone):
        print(note)
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
