"""The fast layers: im2col + BLAS GEMM (or Winograd) convolution and single-pass pooling.

Same functions, signatures and return values as ``fastconv.naive``: change one import and
the same code runs tens to thousands of times faster. This module is the public face of
the engine (``fastconv/engine/``: how each layer runs, its threads and workspaces, the
rule of ``algorithm="auto"``) and of the layers without loops that both paths share
(``fastconv.layers``).
"""

from __future__ import annotations

import sys
import types

from .engine import workspaces as _workspaces
from .engine.activations import relu_backward, relu_forward
from .engine.algorithms import conv_algorithm
from .engine.batchnorm import spatial_batchnorm_backward, spatial_batchnorm_forward
from .engine.conv import conv_backward, conv_forward, conv_relu_pool_backward, conv_relu_pool_forward
from .engine.pooling import avg_pool_backward, avg_pool_forward, max_pool_backward, max_pool_forward
from .kernels import picker as _picker
from .layers import (
    affine_backward,
    affine_forward,
    batchnorm_backward,
    batchnorm_forward,
    dropout_backward,
    dropout_forward,
    groupnorm_backward,
    groupnorm_forward,
    layernorm_backward,
    layernorm_forward,
    sigmoid_backward,
    sigmoid_forward,
    softmax_loss,
    svm_loss,
)

__all__ = [
    "conv_forward",
    "conv_backward",
    "conv_algorithm",
    "conv_relu_pool_forward",
    "conv_relu_pool_backward",
    "max_pool_forward",
    "max_pool_backward",
    "avg_pool_forward",
    "avg_pool_backward",
    "spatial_batchnorm_forward",
    "spatial_batchnorm_backward",
    "affine_forward",
    "affine_backward",
    "relu_forward",
    "relu_backward",
    "sigmoid_forward",
    "sigmoid_backward",
    "dropout_forward",
    "dropout_backward",
    "batchnorm_forward",
    "batchnorm_backward",
    "layernorm_forward",
    "layernorm_backward",
    "groupnorm_forward",
    "groupnorm_backward",
    "softmax_loss",
    "svm_loss",
]


# The kernel build is chosen when fastconv.fast is imported, as documented: a bad
# FASTCONV_KERNELS, or a build whose compiler had no OpenMP, says so here, once.
_picker.load()


class _FastModule(types.ModuleType):
    """``fastconv.fast.WORKSPACE_BYTES`` reads and sets the engine's workspace bound
    (``fastconv.engine.workspaces.WORKSPACE_BYTES``), as it did before the engine moved."""

    @property
    def WORKSPACE_BYTES(self) -> int:
        return _workspaces.WORKSPACE_BYTES

    @WORKSPACE_BYTES.setter
    def WORKSPACE_BYTES(self, value: int) -> None:
        _workspaces.WORKSPACE_BYTES = value


sys.modules[__name__].__class__ = _FastModule
