"""A progress bar over a fit's epochs (tqdm), for ``progress_bar=True``."""

import math


class EpochProgress:
    """A tqdm bar of ``total`` epochs on stderr, shown from epoch ``initial`` on.

    Each epoch moves it by one and shows the relative error, the applied learning rate and
    the batch size; a run that stops before ``total`` (by ``tol``, ``max_time`` or an exact
    fit) ends the bar where it stopped, with the reason. Disabled (``show`` False), it costs
    nothing and prints nothing.
    """

    def __init__(self, show, total, initial=0, desc="fit"):
        self._bar = None
        if show:
            from tqdm import tqdm

            self._bar = tqdm(total=total, initial=initial, desc=desc, unit="epoch", dynamic_ncols=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def epoch_done(self, record, reason=None):
        """Advance by one epoch (an :class:`~nmfsched.epochs.EpochRecord`); ``reason`` the stop
        reason when the run stops there."""
        if self._bar is None:
            return
        self._bar.set_postfix_str(_postfix(record, reason), refresh=False)
        self._bar.update(1)

    def close(self):
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def _postfix(record, reason):
    error = record.rel_error
    text = f"rel_error={error:.4g}" if math.isfinite(error) else f"rel_error={error}"
    text += f", lr={record.lr:.3g}, batch={record.batch_size}"
    return text if reason is None else f"{text}, stopped: {reason}"
