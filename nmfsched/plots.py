"""Figures of a fit for the command line (matplotlib, imported only when asked for)."""

import numpy as np


def pyplot():
    """matplotlib.pyplot on the file-only Agg backend; ImportError says how to install it."""
    try:
        import matplotlib

        matplotlib.use("Agg")  # files only; never needs a display
        import matplotlib.pyplot as plt
    except ImportError:
        raise ImportError("plots need matplotlib: pip install 'nmfsched[notebooks]'") from None
    return plt


def plot_history(history, path, title=""):
    """Loss and learning rate (with the bound in force) per epoch, saved as a PNG."""
    plt = pyplot()
    fig, (ax_loss, ax_lr) = plt.subplots(1, 2, figsize=(9, 3.2))
    ax_loss.semilogy(history["epoch"], history["loss"])
    ax_loss.set(xlabel="epoch", ylabel="loss 1/2 ||X - WH||^2", title=title)
    ax_lr.plot(history["epoch"], history["lr"], label="applied")
    ax_lr.plot(history["epoch"], history["lr_bound"], "k:", label="bound")
    ax_lr.set(xlabel="epoch", ylabel="learning rate")
    ax_lr.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_components(H, image_shape, path, title=""):
    """Each row of ``H`` as an image of ``image_shape`` (rows, columns), in a grid."""
    plt = pyplot()
    k = H.shape[0]
    cols = int(np.ceil(np.sqrt(k)))
    rows = int(np.ceil(k / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(1.4 * cols, 1.4 * rows + 0.3), squeeze=False)
    for i, ax in enumerate(axes.ravel()):
        ax.axis("off")
        if i < k:
            ax.imshow(H[i].reshape(image_shape), cmap="gray_r")
    fig.suptitle(title, fontsize=9)
    fig.savefig(path, dpi=100)
    plt.close(fig)
