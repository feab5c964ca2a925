"""Parameter checks shared by the schedulers: one clear ValueError per bad value."""

import math
from numbers import Integral, Real


def check_int(owner, name, value, minimum):
    """``value`` as an int ``>= minimum`` (bools are not integers here)."""
    if isinstance(value, bool) or not isinstance(value, Integral) or value < minimum:
        raise ValueError(f"{owner}: {name} must be an integer >= {minimum}, got {value!r}.")
    return int(value)


def check_real(owner, name, value, low=-math.inf, high=math.inf, low_open=False, high_open=False):
    """``value`` as a finite float in the interval given by ``low``/``high`` (open ends as flagged)."""
    ok = isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(value)
    if ok:
        ok = (value > low if low_open else value >= low) and (value < high if high_open else value <= high)
    if not ok:
        left = "(" if low_open else "["
        right = ")" if high_open else "]"
        raise ValueError(
            f"{owner}: {name} must be a finite number in {left}{low}, {high}{right}, got {value!r}."
        )
    return float(value)


def check_bool(owner, name, value):
    """``value`` when it is True or False (no truthy stand-ins: 1, "yes", None)."""
    if not isinstance(value, bool):
        raise ValueError(f"{owner}: {name} must be True or False, got {value!r}.")
    return value


def check_increasing_ints(owner, name, values, minimum):
    """``values`` as a tuple of strictly increasing ints ``>= minimum``.

    A tuple of plain ints is returned as it is (the same object), so that a constructor
    that stores the result keeps what it was given, as ``sklearn.base.clone`` requires.
    """
    try:
        checked = tuple(check_int(owner, f"each of {name}", v, minimum) for v in values)
    except TypeError:
        raise ValueError(f"{owner}: {name} must be a sequence of integers, got {values!r}.") from None
    if list(checked) != sorted(set(checked)):
        raise ValueError(f"{owner}: {name} must be strictly increasing, got {values!r}.")
    if isinstance(values, tuple) and all(type(v) is int for v in values):
        return values
    return checked


def check_max_lr(owner, max_lr):
    """``max_lr`` as "bound" or a positive float."""
    if max_lr == "bound":
        return max_lr
    return check_real(owner, "max_lr (a number or 'bound')", max_lr, 0, low_open=True)


def upper_lr(max_lr, obs):
    """The rate's upper clamp: the stability bound reported for the next epoch (no clamp
    while none is reported), and a number ``max_lr`` below it. Nothing above the bound can
    be applied, so a proposal that drifted there would only slow the response to a worse
    loss."""
    bound = obs.lr_bound if math.isfinite(obs.lr_bound) and obs.lr_bound > 0 else math.inf
    return bound if max_lr == "bound" else min(max_lr, bound)


def check_choice(owner, name, value, choices):
    if value not in choices:
        raise ValueError(f"{owner}: {name} must be one of {', '.join(map(repr, choices))}, got {value!r}.")
    return value


def is_better(value, best, threshold, threshold_mode):
    """Whether ``value`` improves on ``best`` by more than the threshold (torch's "min" mode)."""
    if threshold_mode == "rel":
        return value < best * (1.0 - threshold) if best > 0 else value < best - abs(best) * threshold
    return value < best - threshold


def is_worse(value, best, threshold, threshold_mode):
    """Whether ``value`` is above ``best`` by more than the threshold."""
    if threshold_mode == "rel":
        return value > best + abs(best) * threshold
    return value > best + threshold
