"""BatchNorm with its training-mode gradient written out (``model.batchnorm='fused'``).

The same function, parameters and statistics as flax's ``nn.BatchNorm`` (``scale``, ``bias``;
``batch_stats`` ``mean`` and biased ``var``, updated as ``momentum * running + (1 - momentum) *
batch``; statistics in float32 as E[x^2] - E[x]^2, clipped at 0; the output in ``dtype``), so a
checkpoint of either reads in the other. What differs is the backward pass of a training step.
With y = x_hat * scale + bias, x_hat = (x - mean) * rstd, rstd = 1 / sqrt(var + eps), over the
N values of a channel (Ioffe & Szegedy 2015, section 3; the form cuDNN's backward computes):

    dbias  = sum(g)                       dscale = sum(g * x_hat)
    dx     = scale * rstd * (g - (dbias + x_hat * dscale) / N)

two reductions over one read of (g, x), then one elementwise pass, with x_hat recomputed from x
(nothing but x, mean and rstd is kept from the forward pass). Differentiating flax's forward
arithmetic instead leaves XLA three reductions per layer (through the mean, the variance and the
scale; counted in XLA:CPU's optimised module of one layer with a ReLU after it), each a pass over
the layer's activations, the step's largest tensors.

Only a training step's statistics over the whole batch take this path; running averages
(inference) and a presence ``mask`` (``model.missing_inputs``) compute as flax does,
differentiated by JAX. Statistics are float32 (flax's ``force_float32_reductions=True``).

``running_var='unbiased'`` (``model.bn_running_var``): the running variance is updated with the
batch's unbiased variance, x N/(N-1) for the N values of a channel (the rows a ``mask`` keeps),
as PyTorch's ``BatchNorm2d`` and Ioffe & Szegedy's Algorithm 2 do; normalisation still uses the
biased one, as both do. :func:`batch_norm` picks the module for a setting.
"""

from __future__ import annotations

from functools import partial

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from lnm_jax.names import RUNNING_VARS

_F32 = jnp.float32


def batch_statistics(x: jax.Array, mask: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
    """(mean, biased variance) of x [..., C] over every axis but the last, in float32, as flax
    computes them (``use_fast_variance``: E[x^2] - E[x]^2, clipped at 0); ``mask``
    (broadcastable to x, bool) keeps only those values."""
    axes = tuple(range(x.ndim - 1))
    xf = x.astype(_F32)
    mean = xf.mean(axes, where=mask)
    mean2 = jnp.square(xf).mean(axes, where=mask)
    return mean, jnp.maximum(0.0, mean2 - jnp.square(mean))


def _affine(x, mean, var, scale, bias, epsilon):
    """flax's ``_normalize`` arithmetic, in its order: (x - mean) * (rsqrt(var + eps) * scale) + bias."""
    y = x - mean
    mul = lax.rsqrt(var + epsilon) * scale
    return y * mul + bias


@partial(jax.custom_vjp, nondiff_argnums=(3,))
def normalize_batch(x: jax.Array, scale: jax.Array, bias: jax.Array, epsilon: float) -> jax.Array:
    """x [..., C] (any float dtype) normalised by its own statistics over every axis but the last,
    then ``* scale + bias`` (float32 [C]): float32 [..., C], as flax's training-mode BatchNorm
    before its cast to ``dtype``. The gradient is the module docstring's."""
    mean, var = batch_statistics(x)
    return _affine(x, mean, var, scale, bias, epsilon)


def _normalize_fwd(x, scale, bias, epsilon):
    mean, var = batch_statistics(x)
    return _affine(x, mean, var, scale, bias, epsilon), (x, mean, lax.rsqrt(var + epsilon), scale)


def _normalize_bwd(epsilon, residuals, g):
    x, mean, rstd, scale = residuals
    axes = tuple(range(x.ndim - 1))
    n = x.size // x.shape[-1]
    g = g.astype(_F32)
    x_hat = (x - mean) * rstd
    dbias = jnp.sum(g, axes)
    dscale = jnp.sum(g * x_hat, axes)
    dx = (scale * rstd) * (g - (dbias + x_hat * dscale) / n)
    return dx.astype(x.dtype), dscale.astype(scale.dtype), dbias.astype(scale.dtype)


normalize_batch.defvjp(_normalize_fwd, _normalize_bwd)


class FusedBatchNorm(nn.Module):
    """``nn.BatchNorm`` over the last axis with float32 statistics (the fields ResNets set:
    ``use_running_average``, ``momentum``, ``epsilon``, ``dtype``), with the training-mode
    gradient of the module docstring. ``__call__(x, use_running_average=None, *, mask=None)``:
    x [..., C] -> [..., C] in ``dtype`` (float32 where None and x is float32)."""

    use_running_average: bool | None = None
    momentum: float = 0.99
    epsilon: float = 1e-5
    dtype: jnp.dtype | None = None
    param_dtype: jnp.dtype = _F32
    written_gradient: bool = True  # False: differentiated by JAX throughout, as flax's
    running_var: str = "biased"  # names.RUNNING_VARS

    @nn.compact
    def __call__(self, x, use_running_average: bool | None = None, *, mask=None):
        use_running_average = nn.merge_param("use_running_average", self.use_running_average, use_running_average)
        x = jnp.asarray(x)  # as nn.BatchNorm takes a NumPy array (NumPy's mean(where=None) failed on one)
        features = (x.shape[-1],)
        ra_mean = self.variable("batch_stats", "mean", lambda s: jnp.zeros(s, _F32), features)
        ra_var = self.variable("batch_stats", "var", lambda s: jnp.ones(s, _F32), features)
        scale = self.param("scale", nn.initializers.ones, features, self.param_dtype)
        bias = self.param("bias", nn.initializers.zeros, features, self.param_dtype)
        dtype = self.dtype or jnp.result_type(x, scale, bias)
        if use_running_average:
            return _affine(x, ra_mean.value, ra_var.value, scale, bias, self.epsilon).astype(dtype)
        mean, var = batch_statistics(x, mask)
        if not self.is_initializing():
            # no gradient flows into running averages (the same reductions: XLA computes them once)
            running = var * _bessel(x, mask) if self.running_var == "unbiased" else var
            ra_mean.value = self.momentum * ra_mean.value + (1 - self.momentum) * lax.stop_gradient(mean)
            ra_var.value = self.momentum * ra_var.value + (1 - self.momentum) * lax.stop_gradient(running)
        if mask is None and self.written_gradient:
            return normalize_batch(x, scale, bias, self.epsilon).astype(dtype)
        return _affine(x, mean, var, scale, bias, self.epsilon).astype(dtype)  # differentiated by JAX, as flax's


def _bessel(x: jax.Array, mask: jax.Array | None) -> jax.Array | float:
    """N / (N - 1) for the N values of each channel of x [..., C] that ``mask`` keeps (1 where
    N <= 1, where no unbiased variance exists)."""
    if mask is None:
        n = x.size // x.shape[-1]
        return n / (n - 1) if n > 1 else 1.0
    n = jnp.sum(jnp.broadcast_to(mask, x.shape[:-1] + (1,)), dtype=_F32)
    return jnp.where(n > 1, n / jnp.maximum(n - 1, 1), 1.0)


def batch_norm(running_var: str = "biased", written_gradient: bool = False, **kwargs):
    """The BatchNorm module class (a ``functools.partial`` of it with ``kwargs``: flax's
    ``nn.BatchNorm`` fields) for ``running_var`` (:data:`lnm_jax.names.RUNNING_VARS`) and
    ``written_gradient`` (``model.batchnorm='fused'``): flax's ``nn.BatchNorm`` for 'biased'
    without the written gradient (the default: every result of this project), else
    :class:`FusedBatchNorm`. ValueError for an unknown setting, or 'unbiased' with
    ``force_float32_reductions=False`` (its statistics are float32)."""
    if running_var not in RUNNING_VARS:
        raise ValueError(f"model.bn_running_var must be one of {RUNNING_VARS}, got {running_var!r}")
    if running_var == "biased" and not written_gradient:
        return partial(nn.BatchNorm, **kwargs)
    if not kwargs.pop("force_float32_reductions", True):
        raise ValueError(
            "model.bn_running_var='unbiased' and model.batchnorm='fused' compute float32 statistics: keep "
            "model.bn_float32_reductions"
        )
    return partial(FusedBatchNorm, written_gradient=written_gradient, running_var=running_var, **kwargs)
