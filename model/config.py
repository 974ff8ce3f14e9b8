"""The model configuration: one dataclass, one source of truth, serialized as JSON.

``golden/`` and ``hw/`` read the same JSON (``ModelConfig.to_dict``) that training writes next
to every checkpoint, so no dimension or bit width is typed twice.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

from .fixedpoint import FixedPointConfig

__all__ = ["ModelConfig", "BACKBONES", "SCALE_GRANULARITIES"]

#: ``w1a1``: BiBERT (binary weights, binary activations, Bi-Attention).
#: ``w1a4``: BinaryBERT (binary weights, 4-bit activations); with ``tws=True`` every binary
#: layer holds two binary weight matrices (the model after ternary weight splitting).
#: ``w2a4``: the half-width ternary (TWN) model BinaryBERT trains before splitting.
BACKBONES = ("w1a1", "w1a4", "w2a4")

#: Word-embedding scale granularity: one scale per vocabulary row, or one for the table.
SCALE_GRANULARITIES = ("row", "tensor")


@dataclass
class ModelConfig:
    """Architecture and arithmetic of a binary BERT student (and of each ensemble member).

    Attributes
    ----------
    vocab_size, hidden_size, num_layers, num_heads, ffn_size : int
        BERT dimensions (``ffn_size`` is the intermediate width).
    max_len : int
        Number of position embeddings (the longest sequence the model accepts).
    type_vocab_size : int
        Number of token types (segments).
    num_labels : int
        Classifier outputs.
    backbone : str
        One of :data:`BACKBONES`.
    tws : bool
        ``w1a4`` only: linear layers and the word embedding hold two binary weights
        (ternary weight splitting). Equivalent to a binary layer of twice the input width
        fed ``[x; x]``.
    center_weights : bool
        Subtract each weight row's mean before taking its sign (BiBERT). Used by ``w1a1``
        only; BinaryBERT's BWN does not center (and TWS needs uncentered weights).
    embedding_scale : str
        ``"row"`` (one scale per vocabulary row, as BiBERT and BinaryBERT) or ``"tensor"``.
    act_bits : int
        Activation bits of ``w1a4`` / ``w2a4``.
    layer_norm_eps : float
        LayerNorm epsilon.
    hidden_dropout : float
        Dropout on dense outputs and the pooler output during training.
    pad_token_id : int
        Token id of ``[PAD]``.
    members : int
        Ensemble size (informational here; the ensemble holds the members).
    fixed_point : FixedPointConfig
        Formats of the non-binary values.
    """

    vocab_size: int = 30522
    hidden_size: int = 384
    num_layers: int = 6
    num_heads: int = 12
    ffn_size: int = 1536
    max_len: int = 512
    type_vocab_size: int = 2
    num_labels: int = 2
    backbone: str = "w1a1"
    tws: bool = False
    center_weights: bool = True
    embedding_scale: str = "row"
    act_bits: int = 4
    layer_norm_eps: float = 1e-12
    hidden_dropout: float = 0.1
    pad_token_id: int = 0
    members: int = 1
    fixed_point: FixedPointConfig = field(default_factory=FixedPointConfig)

    def __post_init__(self) -> None:
        if isinstance(self.fixed_point, dict):
            self.fixed_point = FixedPointConfig.from_dict(self.fixed_point)
        for name in ("vocab_size", "hidden_size", "num_layers", "num_heads", "ffn_size", "max_len",
                     "type_vocab_size", "num_labels", "members", "act_bits"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"ModelConfig.{name} must be a positive integer, not {v!r}")
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not a multiple of num_heads {self.num_heads}")
        if self.backbone not in BACKBONES:
            raise ValueError(f"backbone must be one of {BACKBONES}, not {self.backbone!r}")
        if self.tws and self.backbone != "w1a4":
            raise ValueError("tws=True is only meaningful for the w1a4 backbone")
        if self.embedding_scale not in SCALE_GRANULARITIES:
            raise ValueError(f"embedding_scale must be one of {SCALE_GRANULARITIES}, not {self.embedding_scale!r}")
        if not 0.0 <= self.hidden_dropout < 1.0:
            raise ValueError(f"hidden_dropout must be in [0, 1), not {self.hidden_dropout!r}")

    @property
    def head_size(self) -> int:
        """Per-head width ``d = hidden_size / num_heads``."""
        return self.hidden_size // self.num_heads

    def to_dict(self) -> dict[str, Any]:
        """Plain-dict form (JSON-serializable)."""
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        d["fixed_point"] = self.fixed_point.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ModelConfig":
        """Inverse of :meth:`to_dict`; unknown keys raise ``ValueError``."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"Unknown model config keys: {sorted(unknown)}")
        d = dict(d)
        if "fixed_point" in d and isinstance(d["fixed_point"], dict):
            d["fixed_point"] = FixedPointConfig.from_dict(d["fixed_point"])
        return cls(**d)

    def to_json(self) -> str:
        """JSON text of :meth:`to_dict` (sorted keys, indented)."""
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "ModelConfig":
        """Inverse of :meth:`to_json`."""
        return cls.from_dict(json.loads(text))

    def replace(self, **changes: Any) -> "ModelConfig":
        """A copy with some fields changed (validated)."""
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_hf_config(cls, hf_config: Any, **overrides: Any) -> "ModelConfig":
        """Dimensions from a Hugging Face BERT config (``transformers.BertConfig``).

        Parameters
        ----------
        hf_config : transformers.PretrainedConfig
            A BERT-family config.
        **overrides
            Fields to set (``backbone``, ``num_labels``, ...).
        """
        d: dict[str, Any] = dict(
            vocab_size=hf_config.vocab_size,
            hidden_size=hf_config.hidden_size,
            num_layers=hf_config.num_hidden_layers,
            num_heads=hf_config.num_attention_heads,
            ffn_size=hf_config.intermediate_size,
            max_len=hf_config.max_position_embeddings,
            type_vocab_size=hf_config.type_vocab_size,
            num_labels=getattr(hf_config, "num_labels", 2),
            layer_norm_eps=hf_config.layer_norm_eps,
            pad_token_id=getattr(hf_config, "pad_token_id", 0) or 0,
        )
        d.update(overrides)
        return cls(**d)
