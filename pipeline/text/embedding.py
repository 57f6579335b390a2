"""A ticket's meaning as a vector: the static embedding model committed in ``pipeline/text/model``.

The model is all-MiniLM-L6-v2 distilled into one vector per subword token (model2vec; how
it was made and how to make it again: ``pipeline/text/model/PROVENANCE.md``). Encoding a
text is: tokenize (the teacher's WordPiece tokenizer, in Rust), take the mean of the
tokens' rows, normalise to unit length. No PyTorch and no network: numpy, tokenizers and
safetensors read it (and scipy). A batch is encoded in one pass: the texts' token counts
as one sparse matrix, times the token vectors.

The vectors feed the grouper (:mod:`pipeline.patterns.semantic`) and the tagger
(:mod:`pipeline.tagging.linear`); state learned on them names the model it was learned
with (:attr:`TicketEncoder.model_id`), and state from another model is refused.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, cast

import numpy as np
import scipy.sparse as sp
from safetensors.numpy import load_file
from tokenizers import Tokenizer, normalizers

from pipeline.text.cleaning import reading_text

__all__ = ["MODEL_DIR", "PACKED_TOKEN", "TicketEncoder", "check_model_id", "shared_encoder"]

#: the committed model (``deploy/build-embedding-model.sh`` writes it)
MODEL_DIR = Path(__file__).resolve().parent / "model"

#: The dtype token ids travel in between stages (:meth:`TicketEncoder.pack_tokens`): two
#: bytes an id, for a vocabulary of at most 65,536 tokens (the committed model has 30,522).
PACKED_TOKEN = np.dtype("<u2")


class TicketEncoder:
    """Encodes texts into unit vectors with the committed static embedding model.

    Parameters
    ----------
    model_dir
        A folder with ``model.safetensors``, ``tokenizer.json`` and ``config.json``.

    Examples
    --------
    >>> enc = TicketEncoder()
    >>> v = enc.encode(["Firefox won't load any page", "no website opens since this morning", "refund my card"])
    >>> v.shape[0], v.dtype, bool(np.allclose(np.linalg.norm(v, axis=1), 1, atol=1e-5))
    (3, dtype('float32'), True)
    >>> bool(v[0] @ v[1] > v[0] @ v[2])
    True
    """

    def __init__(self, model_dir: Path | str = MODEL_DIR) -> None:
        model_dir = Path(model_dir)
        missing = [n for n in ("model.safetensors", "tokenizer.json", "config.json") if not (model_dir / n).exists()]
        if missing:
            raise FileNotFoundError(
                f"{model_dir} lacks {', '.join(missing)}: the embedding model is committed in pipeline/text/model "
                "(deploy/build-embedding-model.sh makes it again)"
            )
        self.config: dict[str, Any] = json.loads((model_dir / "config.json").read_text())
        weights = model_dir / "model.safetensors"
        tensors = load_file(str(weights))
        vectors = tensors["embeddings"].astype(np.float32)
        if "scales" in tensors:  # int8 rows, each with its scale
            vectors *= tensors["scales"].astype(np.float32)[:, None]
        self.dims = int(vectors.shape[1])
        self.tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        self.tokenizer.no_truncation()  # the text is cut by characters first (reading_text)
        self.tokenizer.no_padding()
        normalizer = self.config.get("normalizer")
        self.lowercase = False
        if normalizer is None and type(self.tokenizer.normalizer).__name__ == "BertNormalizer":
            # BERT's normaliser (lowercase, strip accents, clean control characters, space
            # CJK characters) took 40 % of tokenizing: the texts are lowercased in Python
            # instead and the rest is NFD + strip accents. Same token ids for 4,094 of 4,096
            # SUMO readings; 155 -> 79 us a 300-character reading (docs/benchmarks.md)
            self.tokenizer.normalizer = normalizers.Sequence([normalizers.NFD(), normalizers.StripAccents()])
            self.lowercase = True
        unk = self.tokenizer.token_to_id("[UNK]")
        if unk is not None:
            vectors[unk] = 0.0  # an unknown token says nothing (model2vec drops it)
        self.vectors = vectors
        digest = hashlib.sha256(weights.read_bytes()).hexdigest()[:12]
        #: names the model in every piece of state learned on its vectors
        self.model_id = f"{self.config['name']}@{self.config['version']}#{digest}"

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Unit vectors (float32, one row per text); an empty text (or one of unknown tokens only) is all zeros."""
        return self.encode_with_tokens(texts)[0]

    def encode_with_tokens(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """:meth:`encode`, and the token ids it read: all texts' ids one after the other, and how many each has.

        The tagger hashes these tokens and their pairs into its word features
        (:func:`pipeline.tagging.linear.token_features`): one tokenization for both.
        """
        if not texts:
            return np.zeros((0, self.dims), dtype=np.float32), np.zeros(0, np.int32), np.zeros(0, np.int64)
        batch = [t.lower() for t in texts] if self.lowercase else list(texts)
        ids_of = [e.ids for e in self.tokenizer.encode_batch_fast(batch, add_special_tokens=False)]
        lengths = np.fromiter(map(len, ids_of), dtype=np.int64, count=len(ids_of))
        ids = np.fromiter(itertools.chain.from_iterable(ids_of), dtype=np.int32, count=int(lengths.sum()))
        return self.embed_tokens(ids, lengths), ids, lengths

    def embed_tokens(self, ids: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        """The unit vectors of texts already tokenized (``ids`` one text after the other, ``lengths`` each).

        :meth:`encode_with_tokens` without the tokenizer, which is most of its cost: the
        same rows, bit for bit, for a text's ids carried from where it was tokenized.
        """
        if not len(lengths):
            return np.zeros((0, self.dims), dtype=np.float32)
        # a sparse matrix of token counts times the vectors: sums the rows in C without
        # gathering a (tokens x dims) copy (117 against 159 us a 300-character text with
        # gather and np.add.reduceat; tokenizing alone 94: docs/benchmarks.md)
        indptr = np.concatenate(([0], np.cumsum(lengths)))
        counts = sp.csr_matrix(
            (np.ones(ids.size, dtype=np.float32), ids, indptr), shape=(len(lengths), len(self.vectors))
        )
        out = np.asarray(counts @ self.vectors, dtype=np.float32)
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        np.divide(out, norms, out=out, where=norms > 0)
        return out

    def encode_tickets(
        self, tickets: Sequence[Mapping[str, Any]], tokens: Sequence[bytes | None] | None = None
    ) -> np.ndarray:
        """:meth:`encode` of each ticket's reading (the tagger's: :func:`pipeline.text.cleaning.reading_text`).

        ``tokens``: per ticket, the token ids of its reading packed where it was tagged
        (:meth:`pack_tokens`), or ``None``: those are embedded (:meth:`embed_tokens`), not
        tokenized again, and give the rows encoding the reading would. One representation
        a ticket: the tagger's and the grouper's vectors are the same.
        """
        rows = np.zeros((len(tickets), self.dims), dtype=np.float32)
        carried = [self.unpack_tokens(t) for t in tokens] if tokens is not None else [None] * len(tickets)
        fresh = [i for i, ids in enumerate(carried) if ids is None]
        if fresh:
            rows[fresh] = self.encode(
                [reading_text(str(tickets[i].get("subject", "")), str(tickets[i].get("body", ""))) for i in fresh]
            )
        given = [i for i, ids in enumerate(carried) if ids is not None]
        if given:
            ids_of = [cast(np.ndarray, carried[i]) for i in given]
            lengths = np.fromiter(map(len, ids_of), dtype=np.int64, count=len(ids_of))
            rows[given] = self.embed_tokens(np.concatenate(ids_of), lengths)
        return rows

    def pack_tokens(self, ids: np.ndarray | None) -> bytes | None:
        """A reading's token ids as bytes, to travel between stages (``None`` if there are none to send)."""
        if ids is None or len(self.vectors) > np.iinfo(PACKED_TOKEN).max + 1:
            return None
        return np.asarray(ids).astype(PACKED_TOKEN).tobytes()

    def unpack_tokens(self, raw: bytes | None) -> np.ndarray | None:
        """:meth:`pack_tokens` undone; ``None`` for none or for bytes that cannot be this model's ids."""
        if raw is None or len(raw) % PACKED_TOKEN.itemsize:
            return None
        ids = np.frombuffer(raw, dtype=PACKED_TOKEN).astype(np.int32)
        if ids.size and int(ids.max()) >= len(self.vectors):
            return None
        return ids


def check_model_id(expected: str, found: str | None, what: str) -> None:
    """Refuse state learned on another embedding model's vectors, naming both models.

    >>> check_model_id("m@1", "m@1", "a checkpoint")
    >>> check_model_id("m@2", "m@1", "the checkpoint x.pkl")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: the checkpoint x.pkl was learned on the vectors of embedding model m@1, but this worker ...
    """
    if found != expected:
        raise ValueError(
            f"{what} was learned on the vectors of embedding model {found}, but this worker encodes with "
            f"{expected}: its patterns and weights mean nothing with these vectors; remove it to learn anew, "
            "or run the version that wrote it"
        )


_SHARED: dict[str, TicketEncoder] = {}


def shared_encoder() -> TicketEncoder:
    """The process's one encoder of the committed model (loaded on first use, ~15 MB, then shared).

    Every :class:`pipeline.patterns.watch.PatternWatch` of a worker encodes with it: one
    copy of the vectors in memory however many partitions and areas there are.
    """
    if "default" not in _SHARED:
        _SHARED["default"] = TicketEncoder()
    return _SHARED["default"]
