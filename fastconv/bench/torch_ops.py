"""The PyTorch contender of each kind of workload, on the same arrays as fastconv's.

Each builder takes (torch, spec, data, pass_) with ``data`` from
``common`` (conv_data, pool_data, step_data) and returns the timed
callable: "fwd" returns the forward output, "fwdbwd" returns (out, *gradients)
in the order fastconv returns them. This module imports neither torch nor
fastconv.fast itself, so that the torch peer process (``peer``) can
load torch first, in a clean environment.
"""

import numpy as np


def torch_conv(torch, spec, data, pass_):
    """torch.nn.functional.conv2d; fwdbwd returns (out, dx, dw, db)."""
    F = torch.nn.functional
    xt, wt, bt, dt = (torch.from_numpy(data[k]) for k in ("x", "w", "b", "dout"))
    if pass_ == "fwd":

        def fn():
            with torch.no_grad():
                return F.conv2d(xt, wt, bt, stride=spec.stride, padding=spec.pad)

        return fn
    leaves = [t.detach().requires_grad_() for t in (xt, wt, bt)]

    def fn():
        out = F.conv2d(*leaves, stride=spec.stride, padding=spec.pad)
        return (out, *torch.autograd.grad(out, leaves, dt))

    return fn


def torch_pool(torch, spec, data, pass_):
    """max_pool2d / avg_pool2d; fwdbwd returns (out, dx)."""
    F = torch.nn.functional
    pool = F.max_pool2d if spec.mode == "max" else F.avg_pool2d
    xt, dt = torch.from_numpy(data["x"]), torch.from_numpy(data["dout"])
    if pass_ == "fwd":

        def fn():
            with torch.no_grad():
                return pool(xt, spec.k, spec.stride)

        return fn
    leaf = xt.detach().requires_grad_()

    def fn():
        out = pool(leaf, spec.k, spec.stride)
        return (out, *torch.autograd.grad(out, (leaf,), dt))

    return fn


STEP_PARAMS = ("W1", "b1", "W2", "b2", "W3", "b3")  # fastconv.models.ConvNet1's names


def torch_step(torch, spec, data, pass_):
    """The ConvNet1 step in torch.nn.functional; fwd returns the loss, fwdbwd
    (loss, *parameter gradients). Like a PyTorch training step, it does not ask
    for the gradient of the input images (nor does fastconv's step: need_dx=False)."""
    F = torch.nn.functional
    c = spec.conv
    xt = torch.from_numpy(data["x"])
    yt = torch.from_numpy(data["y"].astype(np.int64))
    backward = pass_ == "fwdbwd"
    params = [torch.from_numpy(data[k]).detach().requires_grad_(backward) for k in STEP_PARAMS]

    def loss_of(W1, b1, W2, b2, W3, b3):
        h = F.relu(F.conv2d(xt, W1, b1, stride=c.stride, padding=c.pad))
        h = F.max_pool2d(h, 2, 2)
        h = F.relu(torch.addmm(b2, h.reshape(h.shape[0], -1), W2))
        return F.cross_entropy(torch.addmm(b3, h, W3), yt)

    if not backward:

        def fn():
            with torch.no_grad():
                return loss_of(*params)

        return fn

    def fn():
        loss = loss_of(*params)
        return (loss, *torch.autograd.grad(loss, params))

    return fn


BUILDERS = {"conv": torch_conv, "pool": torch_pool, "step": torch_step}


def as_numpy(result):
    """The timed callable's result as a tuple of numpy arrays (a 0-d array for a loss)."""
    items = result if isinstance(result, tuple) else (result,)
    return tuple(t.detach().numpy() for t in items)
