"""The model presets (`paper` and `tiny`): their geometry and training defaults.

Plain Python, so that creating or queueing a run (`supersmm enqueue`) never imports TensorFlow.
"""
from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class ModelPreset:
    height: int                       # images are scaled to this height, width keeps the aspect ratio
    conv_filters: tuple[int, ...]     # one 3x3 conv + batch norm + LeakyReLU + max-pool block each
    pool_sizes: tuple[tuple[int, int], ...]  # (height, width) pooling of each block
    lstm_units: int                   # per direction
    lstm_layers: int
    dropout: float
    learning_rate: float
    batch_size: int
    batch_norm_momentum: float = 0.99  # Keras' default
    # Every recurrent layer after the first adds its input to what it reads (a residual connection), so a deeper
    # stack starts out as shallow as one layer.
    residual_lstm: bool = False
    # Online augmentation of training images (augment.py) unless the run says otherwise; always the default on a
    # camera dataset (its photos are what augmentation prepares a model for; see `tiny`).
    augment: bool = True
    # Semantic runs train on agnostic labels and turn what they read into semantic tokens (agnostic_to_semantic):
    # the default where the model and its data are small (see the preset).
    semantic_via_agnostic: bool = False

    @property
    def width_reduction(self) -> int:
        """How many image columns make one output frame."""
        return math.prod(width for _, width in self.pool_sizes)

    def frames(self, width):
        """Output frames the model reads from an image `width` columns wide (an int or an int tensor), its last,
        partial frame included: a staff's closing barline lies in its last few columns."""
        return (width + self.width_reduction - 1) // self.width_reduction

    @property
    def feature_height(self) -> int:
        return self.height // math.prod(height for height, _ in self.pool_sizes)


PRESETS = {
    # Calvo-Zaragoza & Rizo 2018, "End-to-end neural optical music recognition of monophonic scores".
    "paper": ModelPreset(
        height=128, conv_filters=(32, 64, 128, 256), pool_sizes=((2, 2),) * 4,
        lstm_units=512, lstm_layers=2, dropout=0.5, learning_rate=1e-3, batch_size=16,
    ),
    # Small enough to learn a few hundred synthetic incipits on two CPU cores in minutes: the paper's
    # geometry at half the height (one frame per 8 columns, as the paper's 16 at height 128). Batches of 4
    # give it the hundreds of steps CTC needs to leave its all-blank plateau within a few epochs, and a
    # faster batch norm momentum lets the inference statistics catch up within those few steps. Two recurrent
    # layers, the second residual: on 2,000 clean incipits, 22 epochs, it reads 2.92% val SER against 3.32% for two
    # plain layers and 3.23% for one (at epoch 22 of 27), and it leaves CTC's all-blank plateau sooner than either
    # (8.0% after 4 epochs, against 10.4% for one layer and 14.1% for two plain ones, which made short runs such
    # as the demo read worse).
    "tiny": ModelPreset(
        height=64, conv_filters=(16, 32, 48, 64), pool_sizes=((2, 2), (2, 2), (2, 2), (2, 1)),
        lstm_units=96, lstm_layers=2, residual_lstm=True, dropout=0.1, learning_rate=3e-3, batch_size=4,
        batch_norm_momentum=0.9,
        # A semantic token joins a pitch (which depends on a clef and key far to its left) with a duration: over a
        # thousand classes, each seen a few times in a small corpus. Agnostic symbols are a few hundred shapes
        # and places, shared by all of them, which a small model learns from little data.
        semantic_via_agnostic=True,
        # Measured on two cores (2,000 clean synthetic incipits, 8 minutes each): without augmentation `tiny` reads
        # its validation staves at 2.8% SER and the 129 real PrIMuS staves at 8.6%; with it, at 6.0% and 13.0%.
        # Real PrIMuS staves are clean engravings: at this model's size and time, varied images cost more than
        # they teach. Real photos are another matter: trained on a `--camera` corpus without augmentation, it read
        # the 30 real Camera-PrIMuS photos at 52.5% SER (2,000 incipits, 16 epochs), with it at 23.9% (the same
        # incipits and epochs). So runs on a camera dataset augment by default (run_config.py).
        augment=False,
    ),
}
