"""The CRNN models (`paper` and `tiny`), their CTC loss and CTC decoding.

A CRNN reads a staff image left to right: convolution blocks turn the image into a sequence of
feature columns, bidirectional LSTMs read that sequence, and a dense layer scores every vocabulary
token plus the CTC blank (index `vocabulary_size`) for each column.
"""
from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from .presets import PRESETS, ModelPreset  # noqa: F401  (the presets need no TensorFlow)


def gpu_present() -> bool:
    """Whether TensorFlow will place work on a GPU (devices hidden from it do not count)."""
    return bool(tf.config.list_logical_devices("GPU"))


@keras.saving.register_keras_serializable(package="supersmm")
class ProjectedLSTM(keras.layers.LSTM):
    """`keras.layers.LSTM` that multiplies the whole sequence by the input kernel in one matmul, then loops.

    Without cuDNN, Keras runs `LSTMCell` once per frame, input kernel included, so the backward pass adds
    up that kernel's gradient frame by frame: memory-bound, and much of a CPU training step. Same weights
    and the same math (gates i, f, c, o); with a GPU present it is Keras' own loop, which can use cuDNN.
    """

    def inner_loop(self, sequences, initial_state, mask, training=False):
        cell = self.cell
        if gpu_present() or cell.dropout or cell.recurrent_dropout:
            return super().inner_loop(sequences, initial_state, mask, training=training)

        inputs = keras.ops.matmul(sequences, cell.kernel)
        if cell.use_bias:
            inputs = inputs + cell.bias

        def step(z, states):
            h, c = states
            z_i, z_f, z_c, z_o = keras.ops.split(z + keras.ops.matmul(h, cell.recurrent_kernel), 4, axis=-1)
            c = cell.recurrent_activation(z_f) * c + cell.recurrent_activation(z_i) * cell.activation(z_c)
            h = cell.recurrent_activation(z_o) * cell.activation(c)
            return h, [h, c]

        return keras.src.backend.rnn(
            step,
            inputs,
            list(initial_state),
            go_backwards=self.go_backwards,
            mask=mask[0] if isinstance(mask, (list, tuple)) else mask,
            unroll=self.unroll,
            input_length=sequences.shape[1],
            zero_output_for_mask=self.zero_output_for_mask,
            return_all_outputs=self.return_sequences,
        )


@keras.saving.register_keras_serializable(package="supersmm")
class FusedBatchNormalization(keras.layers.BatchNormalization):
    """`keras.layers.BatchNormalization` of image features [B, H, W, C] by TensorFlow's fused kernel.

    Keras normalises with a chain of element-wise ops, each a pass over the largest activations of the
    network (and as many again backwards); the fused kernel makes one pass each way. Same weights, the
    same moving statistics (Keras keeps the batch's own variance, the kernel returns the unbiased one).
    """

    def call(self, inputs, training=None, mask=None):
        if mask is not None or self.renorm or not (self.scale and self.center) or len(inputs.shape) != 4 \
                or self.axis not in (3, -1, [3], [-1]):
            return super().call(inputs, training=training, mask=mask)
        images = tf.cast(inputs, tf.float32)  # as Keras does: float16 would overflow
        if training and self.trainable:
            outputs, mean, unbiased_variance = tf.compat.v1.nn.fused_batch_norm(
                images, self.gamma, self.beta, epsilon=self.epsilon, is_training=True)
            count = tf.cast(tf.size(images) // tf.shape(images)[-1], tf.float32)
            variance = unbiased_variance * (count - 1.0) / count
            self.moving_mean.assign(self.moving_mean * self.momentum + mean * (1.0 - self.momentum))
            self.moving_variance.assign(self.moving_variance * self.momentum + variance * (1.0 - self.momentum))
        else:
            outputs, _, _ = tf.compat.v1.nn.fused_batch_norm(
                images, self.gamma, self.beta, mean=self.moving_mean, variance=self.moving_variance,
                epsilon=self.epsilon, is_training=False)
        return tf.cast(outputs, self.compute_dtype)


def build_model(preset: ModelPreset, vocabulary_size: int, seed: int, batch_norm=FusedBatchNormalization,
                lstm=ProjectedLSTM) -> keras.Model:
    """Images [B, height, W, 1] -> logits [B, W // width_reduction, vocabulary_size + 1] (batches are padded to a
    multiple of WIDTH_MULTIPLE columns, so each image's last, partial frame is there: see ModelPreset.frames).

    Every layer is named, so variable paths are the same in every process. The LSTMs keep Keras'
    defaults, which makes them eligible for cuDNN on a GPU; dropout sits between them as its own layer.
    `batch_norm` and `lstm` may be Keras' stock layers instead: the same model, slower on a CPU.
    """
    images = keras.Input(shape=(preset.height, None, 1), name="image")
    x = images
    for block, (filters, pool) in enumerate(zip(preset.conv_filters, preset.pool_sizes), start=1):
        x = keras.layers.Conv2D(filters, 3, padding="same", name=f"conv{block}")(x)
        x = batch_norm(momentum=preset.batch_norm_momentum, name=f"batch_norm{block}")(x)
        x = keras.layers.LeakyReLU(negative_slope=0.2, name=f"leaky_relu{block}")(x)
        x = keras.layers.MaxPooling2D(pool_size=pool, strides=pool, name=f"max_pool{block}")(x)

    # [B, H', W', C] -> [B, W', H' * C]: one feature vector per frame.
    x = keras.layers.Permute((2, 1, 3), name="columns_first")(x)
    x = keras.layers.Reshape((-1, preset.feature_height * preset.conv_filters[-1]), name="frames")(x)

    for layer in range(1, preset.lstm_layers + 1):
        read = keras.layers.Bidirectional(
            lstm(preset.lstm_units, return_sequences=True, name="lstm"), name=f"bilstm{layer}"
        )(x)
        read = keras.layers.Dropout(preset.dropout, seed=seed + layer, name=f"dropout{layer}")(read)
        x = keras.layers.Add(name=f"residual{layer}")([x, read]) if preset.residual_lstm and layer > 1 else read

    logits = keras.layers.Dense(vocabulary_size + 1, name="token_logits")(x)
    return keras.Model(images, logits, name="crnn")


def logit_lengths(image_width: tf.Tensor, preset: ModelPreset) -> tf.Tensor:
    """Each sample's own number of output frames (padding columns are not read)."""
    return preset.frames(tf.cast(image_width, tf.int32))


def ctc_loss(logits, labels, label_length, logit_length, blank: int) -> tf.Tensor:
    """Per-sample CTC loss [B]; labels are padded with -1 beyond each sample's label_length.

    The labels go in as a SparseTensor: that selects TensorFlow's native CTC kernel, many times
    faster on a CPU than the pure-TensorFlow path it takes for dense labels.
    """
    labels = tf.cast(labels, tf.int32)
    present = tf.where(tf.sequence_mask(label_length, tf.shape(labels)[1]))
    sparse_labels = tf.SparseTensor(present, tf.gather_nd(labels, present), tf.shape(labels, out_type=tf.int64))
    return tf.nn.ctc_loss(
        labels=sparse_labels,
        logits=tf.cast(logits, tf.float32),
        label_length=None,
        logit_length=tf.cast(logit_length, tf.int32),
        logits_time_major=False,
        blank_index=blank,
    )


def greedy_decode(logits: np.ndarray, logit_length: np.ndarray, blank: int) -> list[list[int]]:
    """Best path: the most likely token per frame, repeats collapsed, blanks removed."""
    sequences = []
    for frames, length in zip(np.argmax(logits, axis=-1), logit_length):
        path = frames[:length]
        keep = np.ones(len(path), dtype=bool)
        keep[1:] = path[1:] != path[:-1]
        sequences.append([int(t) for t in path[keep] if t != blank])
    return sequences


def beam_decode(logits: np.ndarray, logit_length: np.ndarray, beam_width: int) -> list[list[int]]:
    """CTC beam search; TensorFlow's decoder takes the last class (our blank) as the blank."""
    decoded, _ = tf.nn.ctc_beam_search_decoder(
        inputs=tf.transpose(tf.convert_to_tensor(logits, tf.float32), [1, 0, 2]),
        sequence_length=tf.convert_to_tensor(logit_length, tf.int32),
        beam_width=beam_width,
        top_paths=1,
    )
    dense = tf.sparse.to_dense(decoded[0], default_value=-1).numpy()
    return [[int(t) for t in row if t >= 0] for row in dense]
