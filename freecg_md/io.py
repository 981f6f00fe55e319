"""Model files: a versioned, code-free format read with ``torch.load(weights_only=True)``.

A file is a dict of plain data: the format name and version, the model config and the
metadata as JSON strings, the state dict (tensors only), and the versions of the packages
that wrote it. Loading never unpickles arbitrary objects, so a file cannot run code.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
from pathlib import Path
from typing import Any

import torch

from .nn import FreeCG, FreeCGConfig
from .nn.model import LEGACY_CHOICES, TRAINING_ONLY

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "ModelFileError",
    "file_sha256",
    "model_fingerprint",
    "shipped_model",
    "load_model",
    "write_text_atomic",
    "read_model_file",
    "save_model",
]

FORMAT_NAME = "freecg-md-model"
FORMAT_VERSION = 1


class ModelFileError(ValueError):
    """A model file is missing, damaged, foreign or of an unsupported format version."""


def _versions() -> dict[str, str]:
    import e3nn

    from . import __version__

    return {"freecg_md": __version__, "torch": torch.__version__, "e3nn": e3nn.__version__}


def write_text_atomic(path: str | os.PathLike, text: str, newline: str | None = None) -> None:
    """Write ``text`` to ``path`` through a temporary file beside it and a rename, so that a
    run killed mid-write leaves the old file or the new one, never half of one. ``newline``
    as for :func:`open` (``""`` writes line endings as they are in ``text``)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with tmp.open("w", newline=newline) as handle:
            handle.write(text)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def file_sha256(path: str | os.PathLike) -> str:
    """The SHA-256 of a file's bytes, as hex: ties a result to the model file that made it."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


SHIPPED_MODELS = {
    "chignolin": "FreeCG for CLN025 chignolin in GFN2-xTB/ALPB(water), fine-tuned on two rounds "
                 "of its own MD (active learning); the default (models/README.md)",
    "chignolin_m1": "its committee partner: the same data and training, another seed",
    "chignolin_v1": "the model before active learning (classical conformations only)",
    "chignolin_visnet": "the ablation without the group-CG branch, trained as chignolin "
                        "(the same data, active learning included)",
    "chignolin_visnet_v1": "the ablation trained as chignolin_v1",
}


def shipped_model(name: str = "chignolin") -> Path:
    """The path of a model file shipped inside the package (works from an installed
    package, not only from the repository).

    Raises
    ------
    ValueError
        No shipped model of that name; the message lists them.
    """
    from importlib import resources

    if name not in SHIPPED_MODELS:
        names = ", ".join(f"{k!r} ({v})" for k, v in SHIPPED_MODELS.items())
        raise ValueError(f"no shipped model {name!r}; the package ships {names}")
    return Path(str(resources.files("freecg_md").joinpath("models", f"{name}.pt")))


def model_fingerprint(path: str | os.PathLike) -> str:
    """SHA-256 of a model file's config and weights only (not its metadata): the same for
    two files that compute the same function, whatever else they record."""
    content = read_model_file(path)
    # Files written before an option existed computed what the option's value in
    # LEGACY_CHOICES computes; leaving those out keeps their fingerprints, and a re-saved
    # copy's, unchanged. How the weights were initialised does not change the function.
    config = {key: value for key, value in content["config"].items()
              if key not in TRAINING_ONLY
              and (key not in LEGACY_CHOICES or value != LEGACY_CHOICES[key])}
    digest = hashlib.sha256(json.dumps(config, sort_keys=True).encode())
    for name in sorted(content["state_dict"]):
        tensor = content["state_dict"][name].detach().cpu().contiguous()
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def save_model(
    model: FreeCG, path: str | os.PathLike, metadata: dict[str, Any] | None = None
) -> Path:
    """Write ``model`` to ``path`` atomically (a crash never leaves half a file).

    Parameters
    ----------
    model:
        The model; its parameters are saved in their current dtype.
    path:
        Destination, conventionally ``*.pt``.
    metadata:
        JSON-serialisable facts to keep with the model (training data, metrics, units...).
        None keeps the model's own ``metadata`` (what :func:`load_model` attached, such as
        its training domain, so that a loaded model saved again keeps its checks); ``{}``
        writes none.

    Returns
    -------
    The path written.
    """
    if not isinstance(model, FreeCG):
        raise TypeError(f"model is a {type(model).__name__}; expected a freecg_md.FreeCG")
    try:
        if metadata is None:
            metadata = getattr(model, "metadata", None) or {}
        metadata_json = json.dumps(metadata, sort_keys=True)
    except TypeError as error:
        raise TypeError(f"metadata must be JSON-serialisable: {error}") from None
    payload = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "config": model.config.to_json(),
        "metadata": metadata_json,
        "versions": json.dumps(_versions()),
        "units": json.dumps({"energy": "eV", "length": "Angstrom", "forces": "eV/Angstrom"}),
        "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
    }
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        torch.save(payload, tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def read_model_file(path: str | os.PathLike) -> dict[str, Any]:
    """Read and check a model file without building the model.

    Returns a dict with ``format_version``, ``config`` (dict), ``metadata`` (dict),
    ``versions`` (dict), ``units`` (dict) and ``state_dict``.

    Raises
    ------
    FileNotFoundError
        No file at ``path``.
    ModelFileError
        The file is truncated or not a torch file, holds code or objects rather than plain
        data, is not a FreeCG-MD model, or has a newer format version than this package.
    """
    path = Path(path)
    if path.is_dir():
        raise ModelFileError(f"model file {str(path)!r} is a directory; expected a file "
                             "written by freecg_md.save_model (a training run's model.pt, "
                             "or an exported file)")
    if not path.is_file():
        raise FileNotFoundError(f"model file {str(path)!r} does not exist")
    with open(path, "rb") as handle:
        head = handle.read(4)
    # torch.save writes a zip archive; anything else (JSON, text, a legacy pickle) is not
    # a model file, and torch's own error would suggest an unsafe load.
    if head != b"PK\x03\x04":
        raise ModelFileError(f"model file {str(path)!r} is not a torch file (it does not "
                             "start as a zip archive does); expected a file written by "
                             "freecg_md.save_model")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        # torch's message advises weights_only=False, which would run the file's code.
        raise ModelFileError(
            f"model file {str(path)!r} holds Python objects that a safe load refuses "
            f"(a pickled model or a foreign file?); expected a file written by "
            f"freecg_md.save_model. It is not loaded: unpickling objects can run code."
        ) from None
    except Exception as error:  # torch raises many types for damaged or foreign bytes
        detail = str(error).splitlines()[0] if str(error) else "no detail"
        raise ModelFileError(
            f"model file {str(path)!r} is truncated or not a torch file "
            f"({type(error).__name__}: {detail})"
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT_NAME:
        raise ModelFileError(
            f"model file {str(path)!r} is not a FreeCG-MD model (no format tag "
            f"{FORMAT_NAME!r}); expected a file written by freecg_md.save_model"
        )
    version = payload.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION or version < 1:
        raise ModelFileError(
            f"model file {str(path)!r} has format version {version!r}; this freecg_md reads "
            f"versions 1 to {FORMAT_VERSION}. Upgrade freecg_md to read it."
        )
    try:
        result = {
            key: json.loads(payload[key]) for key in ("config", "metadata", "versions", "units")
        }
        result["state_dict"] = payload["state_dict"]
    except (KeyError, TypeError, json.JSONDecodeError) as error:
        raise ModelFileError(f"model file {str(path)!r} is damaged: {error!r}") from None
    result["format_version"] = version
    return result


def load_model(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> FreeCG:
    """Build a :class:`FreeCG` from a file written by :func:`save_model`, in eval mode.

    The parameters keep the dtype they were saved in; move the model with ``.to()``.
    See :func:`read_model_file` for the errors raised.
    """
    content = read_model_file(path)
    try:
        model = FreeCG(FreeCGConfig.from_saved(content["config"]))
    except (TypeError, ValueError) as error:
        raise ModelFileError(f"model file {str(path)!r} has an invalid config: {error}") from None
    state = content["state_dict"]
    dtypes = {t.dtype for t in state.values() if t.is_floating_point() and t.dim() > 1}
    if len(dtypes) == 1:
        model = model.to(dtypes.pop())
    try:
        model.load_state_dict(state)
    except RuntimeError as error:
        raise ModelFileError(
            f"model file {str(path)!r} does not match its config: {str(error).splitlines()[0]}"
        ) from None
    model.metadata = content["metadata"]
    return model.to(map_location).eval()
