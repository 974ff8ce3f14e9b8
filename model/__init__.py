"""BEBERT model: GLUE data, the full-precision teacher, binary students (BiBERT W1A1,
BinaryBERT W1A4 with ternary weight splitting) and boosted / bagged ensembles.

Submodules
----------
binarize
    The binarization contract (sign, bits, Bi-Attention) shared with golden/ and hw/.
fixedpoint
    Fixed-point formats and fake quantization of the non-binary values.
config
    :class:`ModelConfig`, the one source of truth for dimensions and arithmetic.
student, quant, tws
    The student network, multi-bit quantizers, ternary weight splitting.
data, metrics
    GLUE readers, tokenization, metrics.
ensemble, distill, train, checkpoint, cli
    Boosting/bagging, distillation, the training loop, checkpoints, the CLI.
"""

from .binarize import attention_bits, attention_context, from_bits, sign, to_bits
from .config import ModelConfig
from .fixedpoint import FixedPointConfig, FixedPointFormat

__all__ = [
    "ModelConfig",
    "FixedPointConfig",
    "FixedPointFormat",
    "sign",
    "to_bits",
    "from_bits",
    "attention_bits",
    "attention_context",
]
